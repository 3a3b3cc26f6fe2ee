"""The RDDN module-cost benchmark (the analogue of the RDDN paper's Table VIII): build every config in one
process, measure parameters, memory and time per module on the same random batch
(:mod:`defect_det.utils.module_cost`), and print / return tables with every number's ratio to the
first config. :func:`run_rddn_benchmark` is what ``tools/benchmark_rddn.py`` runs (its ``--help``
defines every number); :func:`short_names`, :func:`build_tables` and :func:`format_table` are the
table helpers.
"""
import json
import os
import statistics
import sys
from typing import Dict, List, Optional, Sequence

import torch

from .benchmark import cpu_model, torch_threads
from .module_cost import MODULES, ModuleTimer, count_params, infer_step, make_inputs, measure_memory, train_step

__all__ = [
    "DEFAULT_CONFIGS",
    "TABLES",
    "build_benchmark_model",
    "build_tables",
    "format_table",
    "ratio",
    "run_rddn_benchmark",
    "short_names",
]

# the repository root of a source checkout (the default configs are relative to it)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_CONFIGS = [
    os.path.join("configs", "RDDN", "synthetic", f"faster_rcnn_R18_FPN_{s}.yaml")
    for s in ("baseline", "pre", "inter", "post", "ptg", "cr1.5")
]

# table key -> (title, columns, number format)
TABLES = {
    "params_M": ("Parameters (M = 1e6)", MODULES + ("total",), "{:.3f}"),
    "params_MiB": ("Parameter memory (MiB)", MODULES + ("total",), "{:.2f}"),
    "feature_infer_MiB": ("Feature memory, inference forward: module output tensors (MiB)",
                          MODULES + ("total",), "{:.2f}"),
    "feature_train_MiB": ("Feature memory, training forward: module output tensors (MiB)",
                          MODULES + ("total",), "{:.2f}"),
    "activations_train_MiB": ("Activations, training forward: outputs of every submodule (MiB)",
                              MODULES + ("total",), "{:.2f}"),
    "train_memory_MiB": ("Training memory estimate (MiB): saved for backward + params + grads + optimizer",
                         ("saved", "params", "grads", "optimizer", "total"), "{:.2f}"),
    "time_ms": ("Time per image (ms, median)",
                ("train step", "inference", "bottom-up", "PTG/ref", "FPN", "RPN", "R-CNN"), "{:.1f}"),
}


def short_names(paths: List[str]) -> List[str]:
    """Config stems minus their common '_'-separated prefix (a stem equal to the prefix keeps it)."""
    stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    parts = [s.split("_") for s in stems]
    n = 0
    while all(len(p) > n for p in parts) and len({p[n] for p in parts}) == 1:
        n += 1
    names = ["_".join(p[n:]) or s for p, s in zip(parts, stems)] if len(stems) > 1 else stems
    seen = {}
    out = []
    for nm in names:
        seen[nm] = seen.get(nm, 0) + 1
        out.append(nm if seen[nm] == 1 else f"{nm}#{seen[nm]}")
    return out


def ratio(v, ref):
    """v / ref; None (printed "-") where ref is 0 (e.g. PTG of a model without generators)."""
    return None if ref == 0 else v / ref


def build_tables(rows: List[dict]) -> Dict[str, dict]:
    """rows: [{"name", "config", <table key>: {column: value}}] -> tables with ratios to rows[0]."""
    tables = {}
    for key, (title, columns, _) in TABLES.items():
        ref = rows[0][key]
        cols = list(columns) + (["cuda_peak"] if "cuda_peak" in ref else [])
        trows = []
        for r in rows:
            vals = {c: r[key][c] for c in cols}
            trows.append({"name": r["name"], "config": r["config"], "values": vals,
                          "ratios": {c: ratio(vals[c], ref[c]) for c in cols}})
        tables[key] = {"title": title, "columns": cols, "rows": trows}
    return tables


def format_table(key, table) -> str:
    from tabulate import tabulate

    fmt = TABLES[key][2]
    body = []
    for r in table["rows"]:
        cells = [r["name"]]
        for c in table["columns"]:
            q = r["ratios"][c]
            cells.append(f"{fmt.format(r['values'][c])} ({'-' if q is None else f'{q:.2f}x'})")
        body.append(cells)
    return tabulate(body, headers=["config"] + table["columns"], tablefmt="pipe", disable_numparse=True,
                    colalign=["left"] + ["right"] * len(table["columns"]))


def build_benchmark_model(path, opts=(), device="cpu", seed=0):
    """``(cfg, model)``: the defect_det config ``path`` (relative paths also against the repository root)
    with ``opts`` (KEY VALUE list) and ``MODEL.DEVICE`` = ``device``, frozen, and ``build_model(cfg)``
    with random weights seeded by ``seed``."""
    import defect_det  # noqa: F401  (registers the meta-architecture, heads and backbones)
    from defect_det.config import get_defect_cfg
    from detectron2.modeling import build_model

    cfg = get_defect_cfg()
    if not os.path.exists(path) and os.path.exists(os.path.join(REPO, path)):
        path = os.path.join(REPO, path)  # the default configs, from any working directory
    cfg.merge_from_file(path)
    cfg.merge_from_list(list(opts))
    cfg.MODEL.DEVICE = device
    cfg.freeze()
    torch.manual_seed(seed)
    return cfg, build_model(cfg)


def run_rddn_benchmark(configs: Sequence[str] = tuple(DEFAULT_CONFIGS), *, size=(256, 320), batch: int = 1,
                       iters: int = 10, warmup: int = 2, threads: Optional[int] = None, device: str = "cpu",
                       seed: int = 0, no_time: bool = False, opts: Sequence[str] = (),
                       json_file: Optional[str] = None, command: str = "", out=None) -> dict:
    """
    Measure every config of ``configs`` (the FIRST is the reference of every ratio) on one random
    batch of ``batch`` images of ``size`` = (H, W); print the run metadata and the tables to ``out``
    (default stdout), write them to ``json_file`` if given.

    Args:
        iters, warmup: timed / untimed repetitions (configs round-robin within each); ``no_time``:
            parameters and memory only.
        threads: ``torch.set_num_threads`` for the run (None: torch's).
        opts: KEY VALUE overrides applied to every config.
        command: the command line printed first (and stored in ``meta``).

    Returns:
        dict: ``{"meta": {command, versions, threads, cpu, load averages, ...}, "tables": {key:
        {"title", "columns", "rows": [{"name", "config", "values", "ratios"}]}}}``.
    """
    out = out or sys.stdout
    with torch_threads(threads):
        return _run(list(configs), tuple(size), batch, iters, warmup, device, seed, no_time, list(opts), json_file,
                    command, out)


def _run(configs, size, batch, iters, warmup, device_name, seed, no_time, opts, json_file, command, out) -> dict:
    device = torch.device(device_name)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    import detectron2

    h, w = size
    meta = {
        "command": command,
        "torch": torch.__version__,
        "detectron2": detectron2.__version__,
        "threads": torch.get_num_threads(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "size": [h, w],
        "batch": batch,
        "iters": iters,
        "warmup": warmup,
        "seed": seed,
        "load_avg_start": list(os.getloadavg()),
    }
    print(f"command: {command}", file=out)
    print(f"torch {meta['torch']}, detectron2 {meta['detectron2']}, {meta['threads']} threads, CPU: "
          f"{meta['cpu']} ({meta['cpu_count']} logical cores), device: {meta['device']}", file=out)
    print(f"input: batch {batch} x 3 x {h} x {w} (random uint8 images, templates, normal images; "
          f"3 random GT boxes per image), seed {seed}; time: median of {iters} after "
          f"{warmup} warm-up; load average at start: "
          + " ".join(f"{x:.2f}" for x in meta["load_avg_start"]), file=out)

    busy = meta["load_avg_start"][0] + meta["threads"] > (meta["cpu_count"] or 1) + 0.5
    if busy and meta["threads"] > 1 and device.type == "cpu" and not no_time:
        print(f"warning: load average {meta['load_avg_start'][0]:.1f} on {meta['cpu_count']} cores: with "
              f"{meta['threads']} threads per op, oversubscription can inflate CPU timings many-fold and "
              "distort ratios (seen: x30 with 2 threads beside a 2-core job); consider --threads 1", file=out)

    names = short_names(configs)
    models, rows = [], []
    for name, path in zip(names, configs):
        cfg, model = build_benchmark_model(path, opts, device_name, seed)
        inputs = make_inputs(batch, h, w, cfg.MODEL.ROI_HEADS.NUM_CLASSES, device, seed=seed)
        row = {"name": name, "config": path}
        row.update(count_params(model))
        row.update(measure_memory(model, cfg, inputs, seed, device))
        models.append((model, inputs))
        rows.append(row)

    if not no_time:
        timers = [ModuleTimer(m, device) for m, _ in models]
        samples = [{"train step": [], "inference": [], **{k: [] for k in TABLES["time_ms"][1][2:]}}
                   for _ in models]
        torch.manual_seed(seed)
        for it in range(warmup + iters):
            for (model, inputs), timer, s in zip(models, timers, samples):  # round-robin
                t_train = train_step(model, inputs, sync)
                timer.reset()
                timer.enabled = True
                t_inf = infer_step(model, inputs, sync)
                timer.enabled = False
                if it >= warmup:
                    s["train step"].append(t_train * 1e3 / batch)
                    s["inference"].append(t_inf * 1e3 / batch)
                    for k, v in timer.parts_ms(batch).items():
                        s[k].append(v)
        for t in timers:
            t.remove()
        for row, s in zip(rows, samples):
            row["time_ms"] = {k: statistics.median(v) for k, v in s.items()}
    else:
        for row in rows:
            row["time_ms"] = {k: 0.0 for k in TABLES["time_ms"][1]}

    meta["load_avg_end"] = list(os.getloadavg())
    tables = build_tables(rows)
    if no_time:
        del tables["time_ms"]
    print("ratios: value (value / value of the first row, " + names[0] + ")", file=out)
    for key, table in tables.items():
        print(f"\n{table['title']}\n", file=out)
        print(format_table(key, table), file=out)
    print("\nload average at end: " + " ".join(f"{x:.2f}" for x in meta["load_avg_end"]), file=out)
    result = {"meta": meta, "tables": tables}
    if json_file:
        with open(json_file, "w") as f:
            json.dump(result, f, indent=1)
    return result
