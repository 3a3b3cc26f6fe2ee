"""What ``tools/train_net.py`` runs: train / evaluate a defect_det model with :class:`DefectTrainer`.

:func:`get_parser` (the command line), :func:`setup` (config), :func:`main` (checks every dataset before
the first iteration, trains or evaluates, reports, optionally writes prediction panels, shuts the
process groups down). ``TEST.AUG.ENABLED True`` (SegDecNet) also evaluates with test-time
augmentation, reported as ``<dataset>_TTA``.
"""
import gc
import json
import logging
import os

from tabulate import tabulate

import detectron2.utils.comm as comm
import torch.distributed as dist
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import default_argument_parser, default_setup

from ..config import load_defect_cfg
from ..data import check_datasets
from ..evaluation import format_summary_table, normalize_test_results
from ..utils.visualize import visualize_dataset_predictions
from .trainer import DefectTrainer

__all__ = ["check_data", "check_tta", "get_parser", "main", "setup", "shutdown_distributed"]

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
    """The frozen config of ``args`` (file + overrides, TEST.AUG checked), after ``default_setup``."""
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


def visualize(cfg, model, args):
    if not comm.is_main_process():
        return
    if not hasattr(model, "roi_heads"):
        print(f"[train_net] --vis draws detector boxes; {type(model).__name__} has none: skipped", flush=True)
        return
    for name in cfg.DATASETS.TEST:
        out = os.path.join(cfg.OUTPUT_DIR, "vis", name)
        paths = visualize_dataset_predictions(cfg, model, name, out, args.vis_images, args.vis_score_thresh)
        print(f"[train_net] wrote {len(paths)} prediction panels to {out}", flush=True)


def with_tta(cfg, model, results):
    """``results`` plus, with TEST.AUG.ENABLED, the test-time-augmented ones (``<dataset>_TTA``)."""
    if not cfg.TEST.AUG.ENABLED:
        return results
    results = normalize_test_results(results, list(cfg.DATASETS.TEST)) if results else {}
    results.update(DefectTrainer.test_with_TTA(cfg, getattr(model, "module", model)))
    return results


def main(args):
    """Train (or ``--eval-only`` evaluate) as ``args`` say, in this process; returns the test results
    ``{dataset: {task: metrics}}`` (plus ``<dataset>_TTA`` with TEST.AUG.ENABLED). Run it through
    Detectron2's ``launch`` for several processes."""
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
        visualize(cfg, model, args)
    return results


def train(cfg, args):
    trainer = DefectTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    results = trainer.train()
    results = with_tta(cfg, trainer.model, results)
    report(cfg, results, args.save_results)
    if args.vis:
        model = trainer.model.module if hasattr(trainer.model, "module") else trainer.model
        visualize(cfg, model, args)
    return results


def get_parser(epilog=None):
    """Detectron2's ``default_argument_parser`` (``--config-file``, ``--eval-only``, ``--resume``,
    ``--num-gpus``, ..., trailing ``KEY VALUE`` overrides) plus ``--vis`` and ``--save-results``."""
    parser = default_argument_parser(epilog=epilog)
    parser.add_argument("--vis", action="store_true", help="write prediction panels after evaluation")
    parser.add_argument("--vis-images", type=int, default=4, metavar="N",
                        help="--vis: images with ground truth drawn per test dataset, plus one defect-free "
                             "image (default: %(default)s)")
    parser.add_argument("--vis-score-thresh", type=float, default=0.3, metavar="S",
                        help="--vis: draw predictions scored above this (default: %(default)s)")
    parser.add_argument("--save-results", metavar="FILE", default=None,
                        help="also write the final evaluation results ({dataset: {task: metrics}}) as JSON")
    return parser
