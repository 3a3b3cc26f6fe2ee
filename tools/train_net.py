#!/usr/bin/env python
"""
Train / evaluate a defect_det model with Detectron2's DefaultTrainer and launch.

    python tools/train_net.py --config-file configs/synthetic/faster_rcnn_R18_FPN_cpu.yaml
    python tools/train_net.py --config-file CFG --eval-only MODEL.WEIGHTS output/.../model_final.pth
    python tools/train_net.py --config-file CFG --resume            # continue from last_checkpoint
    python tools/train_net.py --config-file CFG --num-gpus 8        # DDP; on a CPU-only machine
                                                                    # N gloo processes
    # multi-machine: --num-machines M --machine-rank R --dist-url tcp://HOST:PORT on every machine

Trailing ``KEY VALUE`` pairs override the config. ``TEST.AUG.ENABLED True`` (SegDecNet) also
evaluates with test-time augmentation, reported as ``<dataset>_TTA``. ``--vis`` writes prediction panels for a few
images of every test dataset to OUTPUT_DIR/vis/<dataset>/.
"""
import gc
import json
import logging
import os
import sys

from tabulate import tabulate

try:
    import defect_det  # noqa: F401
except ImportError:  # running from a source checkout without `pip install -e .`
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    import defect_det  # noqa: F401

import detectron2.utils.comm as comm
import torch.distributed as dist
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import default_argument_parser, default_setup, launch

from defect_det.config import load_defect_cfg
from defect_det.data import check_datasets
from defect_det.engine import DefectTrainer
from defect_det.evaluation import format_summary_table, normalize_test_results
from defect_det.utils.visualize import visualize_dataset_predictions

logger = logging.getLogger("defect_det")


def check_tta(cfg):
    """Fail before training when TEST.AUG.ENABLED asks for what we cannot do."""
    if not cfg.TEST.AUG.ENABLED:
        return
    if cfg.MODEL.META_ARCHITECTURE != "SegDecNet":
        raise ValueError(f"TEST.AUG.ENABLED: test-time augmentation is implemented for "
                         f"MODEL.META_ARCHITECTURE 'SegDecNet', not {cfg.MODEL.META_ARCHITECTURE!r}")
    from defect_det.segdec.tta import flip_transforms

    flip_transforms(cfg.MODEL.SEGDEC.TEST_AUG_FLIP or cfg.MODEL.SEGDEC.FLIP)  # raises on a bad kind
    if cfg.MODEL.SEGDEC.TEST_AUG_REDUCE not in ("logit", "prob"):
        raise ValueError(f"MODEL.SEGDEC.TEST_AUG_REDUCE must be 'logit' or 'prob', "
                         f"got {cfg.MODEL.SEGDEC.TEST_AUG_REDUCE!r}")


def check_data(cfg, eval_only=False):
    """Before the first iteration: every DATASETS.TRAIN (when training) and DATASETS.TEST name is
    registered, loads, and names only files that exist (errors name the dataset, the count and the
    first missing file). A bad test set found after training would lose the run's evaluation."""
    keys = (("DATASETS.TEST", cfg.DATASETS.TEST),) if eval_only else \
        (("DATASETS.TRAIN", cfg.DATASETS.TRAIN), ("DATASETS.TEST", cfg.DATASETS.TEST))
    for key, names in keys:
        checked = check_datasets(names, key)
        if checked:
            logger.info(f"{key}: " + ", ".join(f"{n} ({k} files present)" for n, k in checked.items()))


def shutdown_distributed():
    """
    End a multi-process run cleanly: wait for every process, then destroy the process groups.
    Detectron2's ``launch`` leaves this to the caller; without it the gloo groups (and their
    connections to processes that have already exited) are torn down during interpreter exit,
    which can abort a process (``terminate called without an active exception``, SIGABRT) after
    all work is done.
    """
    if dist.is_available() and dist.is_initialized():
        gc.collect()  # the DDP model and data-loader workers of the finished trainer go first
        comm.synchronize()
        dist.destroy_process_group()  # the default group and the local one created by launch


def setup(args):
    cfg = load_defect_cfg(args.config_file, args.opts)
    check_tta(cfg)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def report(cfg, results, save_path=None):
    if not comm.is_main_process() or not results:
        return
    results = normalize_test_results(results, list(cfg.DATASETS.TEST))
    if any("bbox" in r for r in results.values()):
        table, title = format_summary_table(results), "bbox, %"
    else:  # image-/pixel-level evaluators (SegDecNet): every scalar metric, one row per dataset/task
        rows = [[name, task, ", ".join(f"{k} {v:.4g}" for k, v in sorted(m.items()) if isinstance(v, (int, float)))]
                for name, r in results.items() for task, m in r.items() if isinstance(m, dict)]
        table, title = tabulate(rows, headers=["dataset", "task", "metrics"], tablefmt="pipe"), "metrics"
    logger.info(f"Summary ({title}):\n" + table)
    print(f"\n== defect_det results ({title}) ==\n" + table, flush=True)
    if save_path:
        os.makedirs(os.path.dirname(os.path.abspath(save_path)), exist_ok=True)
        with open(save_path, "w") as f:
            json.dump(results, f, indent=1, sort_keys=True, default=float)
        print(f"[train_net] wrote {save_path}", flush=True)


def visualize(cfg, model):
    if not comm.is_main_process():
        return
    if not hasattr(model, "roi_heads"):
        print(f"[train_net] --vis draws detector boxes; {type(model).__name__} has none: skipped", flush=True)
        return
    for name in cfg.DATASETS.TEST:
        out = os.path.join(cfg.OUTPUT_DIR, "vis", name)
        paths = visualize_dataset_predictions(cfg, model, name, out)
        print(f"[train_net] wrote {len(paths)} prediction panels to {out}", flush=True)


def with_tta(cfg, model, results):
    """``results`` plus, with TEST.AUG.ENABLED, the test-time-augmented ones (``<dataset>_TTA``)."""
    if not cfg.TEST.AUG.ENABLED:
        return results
    results = normalize_test_results(results, list(cfg.DATASETS.TEST)) if results else {}
    results.update(DefectTrainer.test_with_TTA(cfg, getattr(model, "module", model)))
    return results


def main(args):
    cfg = setup(args)
    check_data(cfg, eval_only=args.eval_only)
    results = evaluate_only(cfg, args) if args.eval_only else train(cfg, args)
    shutdown_distributed()
    return results


def evaluate_only(cfg, args):
    model = DefectTrainer.build_model(cfg)
    DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
        cfg.MODEL.WEIGHTS, resume=args.resume
    )
    results = DefectTrainer.test(cfg, model)
    results = with_tta(cfg, model, results)
    report(cfg, results, args.save_results)
    if args.vis:
        visualize(cfg, model)
    return results


def train(cfg, args):
    trainer = DefectTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    results = trainer.train()
    results = with_tta(cfg, trainer.model, results)
    report(cfg, results, args.save_results)
    if args.vis:
        model = trainer.model.module if hasattr(trainer.model, "module") else trainer.model
        visualize(cfg, model)
    return results


def get_parser():
    parser = default_argument_parser(epilog=__doc__)
    parser.add_argument("--vis", action="store_true", help="write prediction panels after evaluation")
    parser.add_argument("--save-results", metavar="FILE", default=None,
                        help="also write the final evaluation results ({dataset: {task: metrics}}) as JSON")
    return parser


if __name__ == "__main__":
    args = get_parser().parse_args()
    print("Command Line Args:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
