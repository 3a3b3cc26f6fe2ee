"""The end of ``make demo``: what ``tools/demo_report.py`` runs.

Box AP50 with its 95% bootstrap interval on the seen-texture test split and the unseen-texture split
for the model just trained (train_net's ``--save-results`` JSON), next to rows of the benchmark table
(``projects/Benchmark/results/recipe/final/<row>_s<seed>.json``, written by ``tools/recipe_search.py
--final``) for comparison. :func:`report` renders the markdown table (rows whose result file is
missing are listed as "not measured yet"); :func:`get_parser` / :func:`main` are the command line.
"""
import argparse
import json
import os
from typing import Optional, Sequence

__all__ = ["DATASETS", "FINAL", "get_parser", "main", "report", "rows_for"]

# (registered dataset, column label) of the two test splits
DATASETS = (("synthetic_fabric_test", "seen textures (test)"), ("synthetic_fabric_unseen", "unseen textures"))
# the benchmark's final (test) records, relative to the working directory
FINAL = os.path.join("projects", "Benchmark", "results", "recipe", "final")


def _ap(m, key):
    """``AP [low, high]`` of metric ``key`` of ``m`` (``-`` when missing or NaN)."""
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
    """The markdown table: this run (``results_file``) and the benchmark rows ``compare`` (seed
    ``seed``, records in ``final_dir``); a missing ``results_file`` raises ``SystemExit``."""
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


def get_parser(description: Optional[str] = None) -> argparse.ArgumentParser:
    """The command line of ``tools/demo_report.py`` (``description``: its ``--help`` text)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", required=True, help="the demo's --save-results JSON")
    p.add_argument("--compare", nargs="*", default=["base"], help="benchmark rows to show (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: Optional[Sequence[str]] = None, description: Optional[str] = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``) and print the :func:`report`; returns 0."""
    args = get_parser(description).parse_args(argv)
    print("\nBox AP50 in %, [95% bootstrap interval over test images]; 'any class' = class-agnostic AP50.\n")
    print(report(args.results, args.compare, args.seed))
    return 0
