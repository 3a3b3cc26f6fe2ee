"""The command line of backbone pre-training: what ``tools/pretrain_backbone.py`` runs.

:func:`get_parser` (model and input, data, optimisation, augmentation and run options, trailing
``KEY VALUE`` config overrides), :func:`settings_from_args` (the :class:`~.PretrainSettings` of the
parsed options), :func:`default_data_root` (where a generated pre-training set goes) and :func:`main`
(generate or check the data, then :func:`~.run_pretraining`; returns the exit code).
"""
import argparse
import hashlib
import os
import shlex
import sys
from typing import Optional, Sequence

import torch
from detectron2.utils.logger import setup_logger

from ...config import load_defect_cfg
from ...data.synthetic.fabric import TEXTURE_FAMILIES
from .data import benchmark_dataset_info, check_families, prepare_pretrain_data
from .loop import run_pretraining
from .objectives import OBJECTIVES
from .settings import HELD_OUT_FAMILIES, INPUT_MODES, OBJECTIVE_NAMES, PretrainSettings

__all__ = ["DEFAULT_CONFIG", "default_data_root", "get_parser", "main", "settings_from_args"]

DEFAULT_CONFIG = "configs/synthetic/faster_rcnn_R18_FPN_cpu.yaml"


def _names(values):
    """``["a,b", "c"]`` -> ``("a", "b", "c")``: names given space- or comma-separated."""
    out = []
    for v in values:
        out += [x for x in v.split(",") if x]
    return tuple(out)


def get_parser(description: Optional[str] = None) -> argparse.ArgumentParser:
    """The command line of ``tools/pretrain_backbone.py`` (``description``: its ``--help`` text);
    defaults from :class:`~.PretrainSettings`."""
    d = PretrainSettings()
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("model and input")
    g.add_argument("--config-file", default=DEFAULT_CONFIG,
                   help="detector config whose bottom-up backbone, PIXEL_MEAN/STD, INPUT.FORMAT and "
                        "MODEL.DEVICE are used (default: %(default)s)")
    g.add_argument("--input", choices=INPUT_MODES, default=d.input_mode,
                   help="image: (I - PIXEL_MEAN) / PIXEL_STD (baseline); difference: (I - T) / (2 * PIXEL_STD) "
                        "as TemplateRCNN TR-Pre (default: %(default)s)")
    g.add_argument("--objective", choices=OBJECTIVE_NAMES, default=d.objective,
                   help="labels: texture family + defect presence (image-level labels); anomaly: self-supervised "
                        "segmentation of irregularities pasted into defect-free images, no label read "
                        "(--input image only) (default: %(default)s)")
    g.add_argument("--no-align", action="store_true",
                   help="difference input: do not register the template by phase correlation first "
                        "(matches TR-Pre without INPUT.TEMPLATE.ALIGN)")
    g.add_argument("--pool", choices=("avg", "max", "avgmax"), default=d.pool,
                   help="global pooling of the last stage before the linear heads (default: %(default)s)")

    g = p.add_argument_group("data (image-level labels only)")
    g.add_argument("--data", default=None,
                   help="an existing generator output (folder with meta.json) instead of generating one")
    g.add_argument("--data-seed", type=int, default=1,
                   help="generator seed of the pre-training set; must differ from the benchmark's "
                        "(0, `make data`) (default: %(default)s)")
    g.add_argument("--pieces", type=int, default=800,
                   help="defect pieces (texture instances, 1-3 images each) to generate (default: %(default)s)")
    g.add_argument("--normal-pieces", type=int, default=200,
                   help="defect-free pieces to generate (default: %(default)s)")
    g.add_argument("--width", type=int, default=320, help="generated image width (default: %(default)s)")
    g.add_argument("--height", type=int, default=256, help="generated image height (default: %(default)s)")
    g.add_argument("--families", nargs="+", default=None,
                   help="texture families to generate (default: all but the held-out "
                        f"{', '.join(HELD_OUT_FAMILIES)}; those are refused)")
    g.add_argument("--val-fraction", type=float, default=d.val_fraction,
                   help="fraction of pieces held out for validation metrics (default: %(default)s)")

    g = p.add_argument_group("optimisation")
    g.add_argument("--iters", type=int, default=d.iters, help="iterations (default: %(default)s)")
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="images per iteration (default: %(default)s)")
    g.add_argument("--lr", type=float, default=d.lr, help="AdamW peak learning rate (default: %(default)s)")
    g.add_argument("--weight-decay", type=float, default=d.weight_decay,
                   help="AdamW weight decay, not on norm parameters / biases (default: %(default)s)")
    g.add_argument("--schedule", choices=("cosine", "step"), default=d.schedule,
                   help="learning-rate schedule after warm-up (default: %(default)s)")
    g.add_argument("--steps", type=float, nargs="+", default=list(d.steps),
                   help="step schedule: fractions of --iters where the rate drops x0.1 (default: %(default)s)")
    g.add_argument("--warmup-iters", type=int, default=d.warmup_iters, help="linear warm-up (default: %(default)s)")
    g.add_argument("--clip-grad", type=float, default=d.clip_grad,
                   help="gradient norm clipping, <= 0 off (default: %(default)s)")
    g.add_argument("--defect-weight", type=float, default=d.defect_weight,
                   help="weight of the defect-presence BCE against the family CE (default: %(default)s)")
    g.add_argument("--seed", type=int, default=d.seed,
                   help="initialisation, data order, augmentation and validation split (default: %(default)s)")

    g = p.add_argument_group("augmentation")
    g.add_argument("--crop", type=int, nargs=2, metavar=("H", "W"), default=list(d.crop),
                   help="random crop after rescaling (default: %(default)s)")
    g.add_argument("--no-crop", action="store_true", help="no crop (whole rescaled images)")
    g.add_argument("--scale", type=float, nargs=2, metavar=("MIN", "MAX"), default=list(d.scale),
                   help="random rescale factor range (default: %(default)s)")
    g.add_argument("--no-hflip", action="store_true", help="no random horizontal flip")
    g.add_argument("--no-vflip", action="store_true", help="no random vertical flip")
    g.add_argument("--photometric", type=float, default=d.photometric,
                   help="brightness/contrast jitter strength, 0 off (default: %(default)s)")

    g = p.add_argument_group("run")
    g.add_argument("--output-dir", default=None,
                   help="default: output/pretrain/<config name>_<input>_s<seed>")
    g.add_argument("--resume", action="store_true", help="continue from <output-dir>/checkpoint.pth")
    g.add_argument("--stop-at", type=int, default=None,
                   help="stop after this iteration (checkpoint written); continue later with --resume")
    g.add_argument("--checkpoint-period", type=int, default=500, help="(default: %(default)s)")
    g.add_argument("--eval-period", type=int, default=None,
                   help="validation every N iterations, 0 only at the end (default: --checkpoint-period)")
    g.add_argument("--log-period", type=int, default=20, help="(default: %(default)s)")
    g.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: PyTorch's, i.e. OMP_NUM_THREADS if set)")
    g.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (default: %(default)s)")
    g.add_argument("--save-dtype", choices=("float32", "float16"), default="float32",
                   help="dtype of the exported weights (float16 halves the file) (default: %(default)s)")
    p.add_argument("opts", nargs=argparse.REMAINDER, default=[],
                   help="config overrides: KEY VALUE pairs")
    return p


def settings_from_args(args) -> PretrainSettings:
    """The validated :class:`~.PretrainSettings` of parsed options (raises ``ValueError``)."""
    return PretrainSettings(
        input_mode=args.input, objective=args.objective, align=not args.no_align, iters=args.iters, batch_size=args.batch_size,
        lr=args.lr, weight_decay=args.weight_decay, schedule=args.schedule, steps=tuple(args.steps),
        warmup_iters=args.warmup_iters, clip_grad=args.clip_grad, defect_weight=args.defect_weight,
        pool=args.pool, crop=None if args.no_crop else tuple(args.crop), scale=tuple(args.scale),
        hflip=not args.no_hflip, vflip=not args.no_vflip, photometric=args.photometric,
        val_fraction=args.val_fraction, seed=args.seed,
    ).validate()


def default_data_root(datasets_root, args, families, default_families):
    """``<datasets_root>/synthetic_fabric_pretrain/seed<S>_p<P>_n<N>_<W>x<H>[_fam<hash>]``: the folder of
    a generated pre-training set (``_fam<hash>`` when ``families`` differ from ``default_families``)."""
    name = f"seed{args.data_seed}_p{args.pieces}_n{args.normal_pieces}_{args.width}x{args.height}"
    if families != default_families:
        name += "_fam" + hashlib.sha1(",".join(families).encode()).hexdigest()[:8]
    return os.path.join(datasets_root, "synthetic_fabric_pretrain", name)


def main(argv: Optional[Sequence[str]] = None, description: Optional[str] = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), prepare the data and pre-train (or report a finished
    run); returns the exit code: 0, or 2 after ``error: tools/pretrain_backbone.py: ...`` on stderr
    (bad options, held-out families, the benchmark's seed or data, ...)."""
    args = get_parser(description).parse_args(argv)
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        settings = settings_from_args(args)
        if len(args.opts) % 2:
            raise ValueError(f"config overrides must be KEY VALUE pairs, got {args.opts}")
        cfg = load_defect_cfg(args.config_file, args.opts)
        datasets_root = os.environ.get("DETECTRON2_DATASETS", "datasets")
        bench = benchmark_dataset_info(datasets_root)
        held_out = tuple(sorted(set(HELD_OUT_FAMILIES) | set(bench["unseen_families"])))
        if args.data is None:
            default_families = tuple(f for f in TEXTURE_FAMILIES if f not in held_out)
            families = check_families(_names(args.families) if args.families else default_families, held_out)
            data_root = default_data_root(datasets_root, args, families, default_families)
            prepare_pretrain_data(data_root, args.data_seed, args.pieces, args.normal_pieces, args.width,
                                  args.height, families, held_out, bench["seed"])
        else:
            if args.families:
                raise ValueError("--families selects what to generate; it cannot be combined with --data")
            data_root = args.data
            if os.path.realpath(data_root) == os.path.realpath(bench["root"]):
                raise ValueError(f"--data {data_root} is the benchmark set itself; generate a separate "
                                 "pre-training set (omit --data)")
        out = args.output_dir or os.path.join(
            "output", "pretrain",
            f"{os.path.splitext(os.path.basename(args.config_file))[0]}_{args.input}"
            + ("" if args.objective == "labels" else f"_{args.objective}") + f"_s{args.seed}")
        os.makedirs(out, exist_ok=True)
        setup_logger(output=os.path.join(out, "log.txt"), name="defect_det", abbrev_name="dd")
        if args.threads:
            torch.set_num_threads(args.threads)
        command = "python tools/pretrain_backbone.py " + shlex.join(argv)
        result = run_pretraining(
            cfg, settings, data_root, out, resume=args.resume, checkpoint_period=args.checkpoint_period,
            eval_period=args.eval_period, log_period=args.log_period, stop_at=args.stop_at,
            workers=args.workers, held_out=held_out, benchmark_seed=bench["seed"], command=command,
            save_dtype=args.save_dtype,
            extra_info={"config_file": args.config_file, "opts": list(args.opts)},
        )
    except (ValueError, FileExistsError, FileNotFoundError) as e:
        print(f"error: tools/pretrain_backbone.py: {e}", file=sys.stderr, flush=True)
        return 2
    if "stopped_at" in result:
        print(f"[pretrain_backbone] stopped at iteration {result['stopped_at']}: {result['checkpoint']} "
              "(continue with --resume)", flush=True)
        return 0
    v = result["val"]
    state = "already finished" if result.get("already_finished") else "done"
    print(f"[pretrain_backbone] {state}: {os.path.join(out, result['weights'])} "
          f"({result['size_bytes'] / 1e6:.1f} MB, sha256 {result['sha256']})", flush=True)
    if v.get("n"):
        keys = OBJECTIVES[settings.objective].summary_keys
        print(f"[pretrain_backbone] validation ({v['n']} images): "
              + ", ".join(f"{k} {v[k]:.3f}" for k in keys if k in v), flush=True)
    print(f"[pretrain_backbone] use it with: MODEL.WEIGHTS {os.path.join(out, result['weights'])}", flush=True)
    return 0
