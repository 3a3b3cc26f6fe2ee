#!/usr/bin/env python
"""Training throughput of the CPU configs: images per second of a FULL training step (data wait,
forward, backward, optimizer), broken down by phase, with ``torch.profiler``'s top operators, for
several variants side by side in ONE run (issue 11, item 1).

    python tools/benchmark_train.py                      # the default variants below, 2 threads
    python tools/benchmark_train.py --variants before after --iters 20 --profile 3
    python tools/benchmark_train.py --variants after pre inter ptg --json out.json
    python tools/benchmark_train.py --config-file my.yaml --opts DATALOADER.NUM_WORKERS 1  # one custom row

Variants (``--variants``; each = a config file + overrides + intra-op threads):

- ``before``: the demo model as it trained before issue 11 (``configs/synthetic/faster_rcnn_R18_FPN_
  cpu.yaml`` with the settings it had then restored by overrides: 2 DataLoader workers, 128 sampled
  ROIs per image, 2x2 ROIAlign samples per bin; 2 intra-op threads);
- ``no_workers``, ``one_worker``, ``roi64``: one change at a time (no DataLoader workers; one worker;
  64 ROIs per image with 2x2 samples, no workers);
- ``after``: the config as committed now (no workers, 64 ROIs per image, one ROIAlign sample per bin);
- ``pre``, ``inter``, ``ptg``: TemplateRCNN's template modes on the committed RDDN synthetic configs
  (``configs/RDDN/synthetic/faster_rcnn_R18_FPN_{pre_align,inter,ptg}.yaml``).

The ratio column is images/s relative to the first variant. Every variant trains from the same
seed on the same data (``DATASETS.TRAIN`` of its config: run ``make data`` first). Measure on an
idle machine (nothing else running): the numbers are wall-clock. The JSON (``--json``, default
``projects/Benchmark/results/train_throughput.json``) has the machine, command, commit and every
row; README tables are pasted from the printed markdown.
"""
import argparse
import json
import os
import sys
import time

CPU_CFG = "configs/synthetic/faster_rcnn_R18_FPN_cpu.yaml"
RDDN = "configs/RDDN/synthetic/faster_rcnn_R18_FPN_{}.yaml"

# the CPU config's settings before issue 11, restored by overrides
SLOW_ROI = ["MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "128", "MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO", "2"]
# name -> (config file, overrides, threads)
VARIANTS = {
    "before": (CPU_CFG, ["DATALOADER.NUM_WORKERS", "2"] + SLOW_ROI, 2),
    "no_workers": (CPU_CFG, SLOW_ROI, 2),
    "one_worker": (CPU_CFG, ["DATALOADER.NUM_WORKERS", "1"] + SLOW_ROI, 2),
    "roi64": (CPU_CFG, ["MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO", "2"], 2),
    "after": (CPU_CFG, [], 2),
    "pre": (RDDN.format("pre_align"), [], 2),
    "inter": (RDDN.format("inter"), [], 2),
    "ptg": (RDDN.format("ptg"), [], 2),
}
DEFAULT_VARIANTS = ["before", "after", "pre"]




def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="+", default=None, choices=sorted(VARIANTS),
                   help=f"named variants, in table order (default: {' '.join(DEFAULT_VARIANTS)})")
    p.add_argument("--config-file", default=None, help="also time this config (row 'custom')")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[],
                   help="KEY VALUE overrides for --config-file (and only for it)")
    p.add_argument("--threads", type=int, default=None,
                   help="intra-op threads for every variant (default: each variant's own, 2)")
    p.add_argument("--iters", type=int, default=15, help="timed steps per variant (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (default: %(default)s)")
    p.add_argument("--profile", type=int, default=2, metavar="K",
                   help="extra steps under torch.profiler per variant, 0 = none (default: %(default)s)")
    p.add_argument("--top-ops", type=int, default=10, help="operators per profile (default: %(default)s)")
    p.add_argument("--json", default="projects/Benchmark/results/train_throughput.json",
                   help="where the rows are written ('' = nowhere; default: %(default)s)")
    return p


def _cfg(config_file, opts):
    from defect_det.config import get_defect_cfg

    cfg = get_defect_cfg()
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    return cfg


def main(argv=None):
    args = build_parser().parse_args(argv)
    if len(args.opts) % 2:
        raise SystemExit(f"error: --opts needs KEY VALUE pairs, got {args.opts}")
    names = args.variants if args.variants is not None else (DEFAULT_VARIANTS if not args.config_file else [])
    runs = [(n, *VARIANTS[n]) for n in names]
    if args.config_file:
        runs.append(("custom", args.config_file, args.opts, 2))
    for _, cfg_file, _, _ in runs:
        if not os.path.isfile(cfg_file):
            raise SystemExit(f"error: {cfg_file}: config file not found (run from the repository root)")

    import torch
    from detectron2.utils.logger import setup_logger

    import defect_det  # noqa: F401  (registers datasets and modules)
    from defect_det.utils.benchmark import cpu_model
    from defect_det.utils.tables import git_commit
    from defect_det.utils.train_benchmark import format_profile, format_train_table, time_training_variants

    setup_logger(name="defect_det", abbrev_name="dd")
    variants = []
    for name, cfg_file, opts, threads in runs:
        cfg = _cfg(cfg_file, opts)
        threads = args.threads or threads
        print(f"[benchmark_train] {name}: {cfg_file} {' '.join(opts)} threads={threads} "
              f"workers={cfg.DATALOADER.NUM_WORKERS}", flush=True)
        variants.append((cfg, threads))
    torch.manual_seed(0)
    t0 = time.time()
    rows = time_training_variants(variants, iters=args.iters, warmup=args.warmup,
                                  profile_iters=args.profile, top_ops=args.top_ops)
    for row, (name, cfg_file, opts, _) in zip(rows, runs):
        row.update(name=name, config=cfg_file, opts=list(opts))
    wall = time.time() - t0

    print(f"\nCPU: {cpu_model()}, {os.cpu_count()} cores; torch {torch.__version__}; {args.iters} rounds "
          f"(one step of every variant in turn) after {args.warmup} warm-up steps per variant; {wall:.0f} s\n")
    print(format_train_table(rows))
    for r in rows:
        if r.get("profile"):
            print(f"\nTop operators, {r['name']} (self CPU time per step):\n")
            print(format_profile(r["profile"]))
    if args.json:
        os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
        out = {
            "command": "python tools/benchmark_train.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "commit": git_commit(),
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "iters": args.iters,
            "warmup": args.warmup,
            "wall_s": wall,
            "rows": rows,
        }
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(out, f, indent=1)
        os.replace(tmp, args.json)
        print(f"\nwrote {args.json}")
    return rows


if __name__ == "__main__":
    main()
