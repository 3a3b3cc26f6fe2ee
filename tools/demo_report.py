#!/usr/bin/env python
"""
The end of ``make demo``: box AP50 with its 95% bootstrap interval on the seen-texture test split and
the unseen-texture split for the model just trained, next to rows of the benchmark table
(``projects/Benchmark/results/final/<row>_s<seed>.json``, written by ``tools/recipe_search.py
--final``) for comparison.

    python tools/demo_report.py --results output/demo/results.json --compare base pre_pt

Rows whose result file is missing are listed as "not measured yet" (nothing is made up).
"""
import argparse
import json
import os
import sys

DATASETS = (("synthetic_fabric_test", "seen textures (test)"), ("synthetic_fabric_unseen", "unseen textures"))
FINAL = os.path.join("projects", "Benchmark", "results", "recipe", "final")


def _ap(m, key):
    v = m.get(key)
    if v is None or v != v:
        return "-"
    lo, hi = m.get(f"{key}_ci_low"), m.get(f"{key}_ci_high")
    return f"{v:.1f}" + (f" [{lo:.1f}, {hi:.1f}]" if lo is not None and hi is not None else "")


def rows_for(name, results):
    """Table lines of one model: ``results`` = ``{dataset: {"bbox": metrics}}``."""
    cells = []
    for ds, _ in DATASETS:
        m = results.get(ds, {}).get("bbox", {})
        cells += [_ap(m, "AP50"), _ap(m, "AP50_agnostic")]
    return f"| {name} | " + " | ".join(cells) + " |"


def report(results_file, compare, seed=0, final_dir=FINAL):
    if not os.path.isfile(results_file):
        raise SystemExit(f"error: {results_file}: no results (did training and evaluation finish?)")
    with open(results_file) as f:
        results = json.load(f)
    head = ["| model | " + " | ".join(f"AP50 {label} | any class, {label}" for _, label in DATASETS) + " |",
            "|---" * (1 + 2 * len(DATASETS)) + "|", rows_for("**this demo run**", results)]
    missing = []
    for row in compare:
        path = os.path.join(final_dir, f"{row}_s{seed}.json")
        if not os.path.isfile(path):
            missing.append(row)
            continue
        with open(path) as f:
            rec = json.load(f)
        head.append(rows_for(f"benchmark `{row}`: {rec['label']} ({rec['iters']} it.)", rec["metrics"]))
    text = "\n".join(head)
    if missing:
        text += "\n\nnot measured yet (no " + ", ".join(f"{final_dir}/{r}_s{seed}.json" for r in missing) + ")"
    return text


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", required=True, help="the demo's --save-results JSON")
    p.add_argument("--compare", nargs="*", default=["base"], help="benchmark rows to show (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    print("\nBox AP50 in %, [95% bootstrap interval over test images]; 'any class' = class-agnostic AP50.\n")
    print(report(args.results, args.compare, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
