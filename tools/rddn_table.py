#!/usr/bin/env python
"""
The RDDN reproduction table on the synthetic fabric benchmark (projects/RDDN/README.md).

Every row trains (or, for TR-Post, only evaluates the baseline's weights with templates) one
config of ``configs/RDDN/synthetic/`` with the SAME schedule and seed, through
``tools/train_net.py``, and evaluates AP50 on the seen-texture test split and the unseen-texture
split. Rows already done (their ``results.json`` exists) are reused unless ``--force``.

    python tools/rddn_table.py                       # all rows, default schedule
    python tools/rddn_table.py --iters 3000 --seeds 0 1 2
    python tools/rddn_table.py --rows baseline pre post   # a subset (post needs baseline)
    python tools/rddn_table.py --list

Prints a markdown table (mean over seeds; with several seeds also the min-max spread) and writes it
to ``<out>/table.md``: AP50 over the 15 classes (the paper's metric) and class-agnostic AP50 (every
class merged: was the defect found at all?). Needs the synthetic data (``make data``).
"""
import argparse
import json
import os
import subprocess
import sys
import time

from defect_det.utils.tables import schedule_opts

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG_DIR = os.path.join("configs", "RDDN", "synthetic")

# (key, label, config stem, weights of which row to evaluate instead of training)
ROWS = [
    ("baseline", "baseline (Faster R-CNN R18-FPN)", "baseline", None),
    ("pre", "TR-Pre", "pre", None),
    ("inter", "TR-Inter", "inter", None),
    ("post", "TR-Post (baseline weights)", "post", "baseline"),
    ("ptg", "PTG (TR-Inter on pseudo templates)", "ptg", None),
    ("cr1.3", "CR k=1.3", "cr1.3", None),
    ("cr1.5", "CR k=1.5", "cr1.5", None),
    ("cr1.7", "CR k=1.7", "cr1.7", None),
    ("cr_only", "CR* k=1.5 (context features only)", "cr_only", None),
    ("pre_cr", "TR-Pre + CR k=1.5", "pre_cr", None),
    ("pre_align", "TR-Pre + alignment (beyond the paper)", "pre_align", None),
    ("pre_shifted", "TR-Pre*, templates shifted 5-10 px", "pre_shifted", None),
    ("pre_shifted_align", "TR-Pre* + alignment", "pre_shifted_align", None),
    ("inter_shifted", "TR-Inter*, templates shifted 5-10 px", "inter_shifted", None),
    ("inter_shifted_align", "TR-Inter* + alignment", "inter_shifted_align", None),
    ("post_shifted", "TR-Post*, templates shifted 5-10 px", "post_shifted", "baseline"),
    ("post_shifted_align", "TR-Post* + alignment", "post_shifted_align", "baseline"),
]
DATASETS = ("synthetic_fabric_test", "synthetic_fabric_unseen")


def config_path(stem):
    return os.path.join(CFG_DIR, f"faster_rcnn_R18_FPN_{stem}.yaml")


def run_row(key, stem, weights_from, seed, args):
    out = os.path.join(args.out, f"seed{seed}", key)
    results = os.path.join(out, "results.json")
    own_weights = os.path.join(out, "model_final.pth")
    reeval = False
    if os.path.isfile(results) and not args.force:
        with open(results) as f:
            done = json.load(f)
        if all("AP50_agnostic" in done[ds]["bbox"] for ds in DATASETS):
            return results, 0.0
        # results of an older evaluator: evaluate the trained weights again (no retraining)
        reeval = weights_from is None and os.path.isfile(own_weights)
    cmd = [sys.executable, os.path.join("tools", "train_net.py"), "--config-file", config_path(stem),
           "--save-results", results]
    opts = ["OUTPUT_DIR", out, "SEED", str(seed), "DATASETS.TEST", str(DATASETS).replace(" ", "")]
    if reeval:
        weights_from = key
    if weights_from:
        src = os.path.join(args.out, f"seed{seed}", weights_from, "model_final.pth")
        if not os.path.isfile(src):
            raise SystemExit(f"row {key!r} evaluates the weights of row {weights_from!r}: {src} is missing "
                             f"(run that row first)")
        cmd.append("--eval-only")
        opts += ["MODEL.WEIGHTS", src]
    else:
        opts += schedule_opts(args.iters)
    opts += ["DATALOADER.NUM_WORKERS", str(args.workers)] + args.opts
    os.makedirs(out, exist_ok=True)
    t0 = time.time()
    with open(os.path.join(out, "stdout.log"), "w") as log:
        print(f"[rddn_table] {key} seed {seed}: {' '.join(cmd + opts)}", flush=True)
        r = subprocess.run(cmd + opts, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    if r.returncode != 0 or not os.path.isfile(results):
        raise SystemExit(f"row {key!r} failed (exit {r.returncode}); see {out}/stdout.log")
    return results, time.time() - t0


def fmt(values, spread):
    if not values:
        return "-"
    mean = sum(values) / len(values)
    if spread and len(values) > 1:
        return f"{mean:.1f} ({min(values):.1f}-{max(values):.1f})"
    return f"{mean:.1f}"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", nargs="*", default=None, help="row keys, run in this order (default: all)")
    p.add_argument("--iters", type=int, default=1500, help="training iterations of every trained row")
    p.add_argument("--seeds", type=int, nargs="*", default=[0])
    p.add_argument("--workers", type=int, default=2, help="DATALOADER.NUM_WORKERS")
    p.add_argument("--out", default=os.path.join("output", "rddn_table"))
    p.add_argument("--force", action="store_true", help="rerun rows whose results exist")
    p.add_argument("--list", action="store_true", help="list the rows and their configs, then exit")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="extra KEY VALUE overrides for every row")
    args = p.parse_args()
    os.chdir(REPO)
    by_key = {r[0]: r for r in ROWS}
    rows = ROWS if args.rows is None else [by_key[k] for k in args.rows if k in by_key]
    unknown = set(args.rows or []) - {r[0] for r in ROWS}
    if unknown:
        raise SystemExit(f"unknown rows {sorted(unknown)}; known: {[r[0] for r in ROWS]}")
    if args.list:
        for key, label, stem, src in ROWS:
            print(f"{key:22s} {config_path(stem):55s} {label}" + (f"  [eval of {src}]" if src else ""))
        return
    results = {}
    for seed in args.seeds:
        for key, _, stem, src in rows:
            path, secs = run_row(key, stem, src, seed, args)
            with open(path) as f:
                results.setdefault(key, []).append(json.load(f))
            if secs:
                print(f"[rddn_table] {key} seed {seed}: {secs:.0f} s", flush=True)

    def ap(key, ds, metric="AP50"):
        return [r[ds]["bbox"].get(metric, float("nan")) for r in results.get(key, [])]

    spread = len(args.seeds) > 1
    base = {ds: ap("baseline", ds) for ds in DATASETS}
    lines = [
        f"Synthetic fabric, {args.iters} iterations, seeds {args.seeds}, box AP in % "
        f"(`python tools/rddn_table.py --iters {args.iters} --seeds {' '.join(map(str, args.seeds))}`)",
        "",
        "| row | AP50 seen | AP50 unseen | Δ AP50 seen | Δ AP50 unseen | AP50 any class, seen | AP50 any class, unseen | config |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, label, stem, src in rows:
        cells = [fmt(ap(key, ds), spread) for ds in DATASETS]
        deltas = []
        for ds in DATASETS:
            if base[ds] and key != "baseline":
                mean = lambda v: sum(v) / len(v)  # noqa: E731
                deltas.append(f"{mean(ap(key, ds)) - mean(base[ds]):+.1f}")
            else:
                deltas.append("")
        aps = [fmt(ap(key, ds, "AP50_agnostic"), spread) for ds in DATASETS]
        cfg = f"`{os.path.basename(config_path(stem))}`" + (f" (weights of {src})" if src else "")
        lines.append(f"| {label} | {cells[0]} | {cells[1]} | {deltas[0]} | {deltas[1]} | {aps[0]} | {aps[1]} | {cfg} |")
    table = "\n".join(lines)
    print("\n" + table)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(table + "\n")


if __name__ == "__main__":
    main()
