"""Training-step throughput of defect_det configs, broken down by phase (``tools/benchmark_train.py``).

One *variant* is a config (file plus ``KEY VALUE`` overrides) plus the number of torch intra-op
threads. :func:`time_training_variants` builds, for every variant, the model, optimizer and training
data loader exactly as :class:`~defect_det.engine.DefectTrainer` does, runs ``warmup`` untimed steps
of each, then ``iters`` ROUNDS in which every variant runs one full training step (data wait,
forward, backward, optimizer step) in turn. Interleaving the variants step by step makes a slow
period of a shared machine hit every variant alike, so ratios stay meaningful where absolute
numbers drift. Each phase is timed with a wall clock; a variant's images/s = its images in the timed
steps / the sum of its timed step times. With ``profile_iters`` every variant then also runs that many
steps under ``torch.profiler`` and its top operators by self CPU time are returned.

Results are plain dicts (JSON-able) so that a tool can write them next to the README table it renders.

The command line (``tools/benchmark_train.py``, its ``--help`` describes the variants): :data:`VARIANTS`
(name -> (config file, overrides, threads)), :func:`get_parser` and :func:`main`, which times the
chosen variants, prints the tables and writes the JSON record.
"""
import argparse
import json
import os
import sys
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from detectron2.utils.logger import setup_logger

from ..config import get_defect_cfg
from .benchmark import cpu_model, torch_threads
from .tables import git_commit

__all__ = [
    "DEFAULT_VARIANTS",
    "VARIANTS",
    "format_profile",
    "format_train_table",
    "get_parser",
    "main",
    "time_training_steps",
    "time_training_variants",
]

PHASES = ("data", "forward", "backward", "optimizer")

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
    # the demo model (TR-Pre + align from our pre-trained backbone), and the same with the stem and res2 frozen
    # (Detectron2's default FREEZE_AT for pre-trained weights): no backward through the two highest-resolution stages
    "pre_pt": (RDDN.format("pre_align_pt"), [], 2),
    "pre_pt_freeze2": (RDDN.format("pre_align_pt"), ["MODEL.BACKBONE.FREEZE_AT", "2"], 2),
}
DEFAULT_VARIANTS = ["before", "after", "pre"]


class _Runner:
    """One variant's model, optimizer and data iterator, and the timings of its steps."""

    def __init__(self, cfg, threads: int):
        from ..engine import DefectTrainer

        self.cfg, self.threads = cfg, threads
        with torch_threads(threads):
            self.model = DefectTrainer.build_model(cfg)
            self.model.train()
            self.optimizer = DefectTrainer.build_optimizer(cfg, self.model)
            self.data_iter = iter(DefectTrainer.build_train_loader(cfg))
        self.phases = {k: [] for k in PHASES}
        self.losses, self.n_images = [], 0

    def step(self, record: bool):
        with torch_threads(self.threads):
            t0 = time.perf_counter()
            batch = next(self.data_iter)
            t1 = time.perf_counter()
            loss_dict = self.model(batch)
            loss = sum(loss_dict.values())
            t2 = time.perf_counter()
            self.optimizer.zero_grad()
            loss.backward()
            t3 = time.perf_counter()
            self.optimizer.step()
            t4 = time.perf_counter()
        if record:
            for k, a, b in zip(PHASES, (t0, t1, t2, t3), (t1, t2, t3, t4)):
                self.phases[k].append(b - a)
            self.losses.append(float(loss))
            self.n_images += len(batch)

    def profile(self, steps: int, top_ops: int) -> List[Dict]:
        from torch.profiler import ProfilerActivity, profile as torch_profile

        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                self.step(False)
        rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:top_ops]
        return [{"name": e.key, "self_cpu_ms": e.self_cpu_time_total / 1000.0 / steps,
                 "calls": e.count / steps} for e in rows]

    def result(self) -> Dict:
        step_s = np.sum([self.phases[k] for k in PHASES], axis=0)  # (iters,)
        return {
            "images_per_s": self.n_images / float(step_s.sum()),
            "s_per_iter": float(step_s.mean()),
            "s_per_iter_median": float(np.median(step_s)),
            "ims_per_batch": self.cfg.SOLVER.IMS_PER_BATCH,
            "threads": self.threads or torch.get_num_threads(),
            "workers": self.cfg.DATALOADER.NUM_WORKERS,
            "phases_ms": {k: 1000.0 * float(np.mean(v)) for k, v in self.phases.items()},
            "loss_first": self.losses[0],
            "loss_last": self.losses[-1],
        }


def time_training_variants(variants: Sequence, iters: int = 20, warmup: int = 3,
                           profile_iters: int = 0, top_ops: int = 12) -> List[Dict]:
    """
    Args:
        variants: ``(cfg, threads)`` pairs; ``cfg`` a defect_det config whose ``MODEL.DEVICE`` is
            available, ``threads`` the torch intra-op threads of its steps (0: the process setting).
        iters: timed rounds (>= 1); each variant runs one step per round.
        warmup: untimed steps of each variant first (allocator, data loader workers, BN statistics).
        profile_iters: extra steps of each variant under ``torch.profiler`` (0: no profile).
        top_ops: operators kept per profile.
    Returns:
        list[dict], one per variant, in order: ``images_per_s``, ``s_per_iter`` (mean),
        ``s_per_iter_median``, ``ims_per_batch``, ``threads``, ``workers``, ``phases_ms`` (mean ms per
        step of ``data``, ``forward``, ``backward``, ``optimizer``), ``loss_first`` / ``loss_last``
        (total loss of the first and last timed step), ``profile`` (list of ``{name, self_cpu_ms,
        calls}`` per step, or None).
    """
    if iters < 1 or warmup < 0 or profile_iters < 0:
        raise ValueError(f"iters must be >= 1 and warmup, profile_iters >= 0; got {iters}, {warmup}, {profile_iters}")
    if not variants:
        raise ValueError("no variants to time")
    from detectron2.utils.events import EventStorage

    with EventStorage(0):
        runners = [_Runner(cfg, threads) for cfg, threads in variants]
        for r in runners:
            for _ in range(warmup):
                r.step(False)
        for _ in range(iters):
            for r in runners:
                r.step(True)
        results = []
        for r in runners:
            res = r.result()
            res["profile"] = r.profile(profile_iters, top_ops) if profile_iters else None
            results.append(res)
        del runners
    return results


def time_training_steps(cfg, iters: int = 20, warmup: int = 3, threads: int = 0,
                        profile_iters: int = 0, top_ops: int = 12) -> Dict:
    """:func:`time_training_variants` of one config (same arguments and result keys)."""
    return time_training_variants([(cfg, threads)], iters, warmup, profile_iters, top_ops)[0]


def format_train_table(rows: Sequence[Dict], reference: Optional[str] = None) -> str:
    """Markdown table of :func:`time_training_variants` results (each with a ``name``), with the ratio
    of images/s to the row named ``reference`` (default: the first)."""
    if not rows:
        return ""
    ref = next((r for r in rows if r["name"] == reference), rows[0])
    lines = ["| variant | threads | workers | images/s | s/iter (mean / median) | ratio | data ms | forward ms "
             "| backward ms | optimizer ms |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p = r["phases_ms"]
        lines.append(
            f"| {r['name']} | {r['threads']} | {r['workers']} | {r['images_per_s']:.2f} | "
            f"{r['s_per_iter']:.3f} / {r.get('s_per_iter_median', r['s_per_iter']):.3f} | "
            f"{r['images_per_s'] / ref['images_per_s']:.2f}x | {p['data']:.0f} | {p['forward']:.0f} | "
            f"{p['backward']:.0f} | {p['optimizer']:.0f} |")
    return "\n".join(lines)


def format_profile(rows: List[Dict]) -> str:
    """Markdown table of a profile (a result's ``"profile"``)."""
    lines = ["| operator | self CPU ms / step | calls / step |", "|---|---|---|"]
    for r in rows or []:
        lines.append(f"| `{r['name']}` | {r['self_cpu_ms']:.1f} | {r['calls']:.0f} |")
    return "\n".join(lines)


def get_parser(description: Optional[str] = None) -> argparse.ArgumentParser:
    """The command line of ``tools/benchmark_train.py`` (``description``: its ``--help`` text)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    """The frozen CPU config of ``config_file`` + ``opts``."""
    cfg = get_defect_cfg()
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    return cfg


def main(argv: Optional[Sequence[str]] = None, description: Optional[str] = None) -> List[Dict]:
    """Parse ``argv`` (default ``sys.argv[1:]``), time the chosen variants (plus ``--config-file`` as
    row ``custom``) with :func:`time_training_variants`, print the throughput table and the profiles,
    write the JSON record (``--json``); returns the rows. A missing config file or odd ``--opts``
    raise ``SystemExit``."""
    args = get_parser(description).parse_args(argv)
    if len(args.opts) % 2:
        raise SystemExit(f"error: --opts needs KEY VALUE pairs, got {args.opts}")
    names = args.variants if args.variants is not None else (DEFAULT_VARIANTS if not args.config_file else [])
    runs = [(n, *VARIANTS[n]) for n in names]
    if args.config_file:
        runs.append(("custom", args.config_file, args.opts, 2))
    for _, cfg_file, _, _ in runs:
        if not os.path.isfile(cfg_file):
            raise SystemExit(f"error: {cfg_file}: config file not found (run from the repository root)")

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
