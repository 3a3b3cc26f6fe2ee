"""The RDDN table on the synthetic fabric benchmark (projects/RDDN/README.md): what ``tools/rddn_table.py``
runs, on :mod:`defect_det.utils.table_runner`.

Every row trains one config of ``configs/RDDN/synthetic/`` (all on the CPU recipe of
``configs/synthetic/faster_rcnn_R18_FPN_cpu.yaml``) for the same schedule, one intra-op thread per row, and
is scored on the validation split; TR-Post rows train nothing (they evaluate the baseline's weights with
templates). ``--final`` evaluates chosen rows once on the seen-texture test split and the unseen textures.
One JSON record per row and seed in ``projects/RDDN/results/`` (``final/``); :func:`render` writes the
tables — mean and standard deviation over seeds, the bootstrap interval of a single seed, the difference
to the baseline and whether it counts — to ``projects/RDDN/results/rddn_table.md`` and into the README
between ``<!-- rddn_table:begin -->`` and ``<!-- rddn_table:end -->``.

A row **beats** the baseline only when the difference of the means exceeds both rows' standard deviations
over seeds (at least 2 seeds each); with one seed the cell says "1 seed".
"""
import os
import statistics
from typing import Dict, List, Optional, Sequence

from ..utils import table_runner
from ..utils.table_runner import fmt_ap, load_records

__all__ = ["EVAL_ONLY", "ROWS", "SPEC", "TEST", "VAL", "main", "render", "summarize"]

CFG = "configs/RDDN/synthetic/faster_rcnn_R18_FPN_{}.yaml"
ALIGN = ["INPUT.TEMPLATE.ALIGN", "True"]

# key -> (label, config, overrides): the paper's Tables III-VII on the synthetic benchmark, in table order
ROWS: Dict[str, table_runner.Row] = {
    "baseline": ("baseline (Faster R-CNN R18-FPN, no reference)", CFG.format("baseline"), []),
    "pre": ("TR-Pre", CFG.format("pre"), []),
    "pre_align": ("TR-Pre + alignment (beyond the paper)", CFG.format("pre_align"), []),
    "inter": ("TR-Inter", CFG.format("inter"), []),
    "post": ("TR-Post (baseline weights)", CFG.format("post"), []),
    "ptg": ("PTG (TR-Inter on pseudo templates)", CFG.format("ptg"), []),
    "cr1.3": ("CR k=1.3", CFG.format("cr1.3"), []),
    "cr1.5": ("CR k=1.5", CFG.format("cr1.5"), []),
    "cr1.7": ("CR k=1.7", CFG.format("cr1.7"), []),
    "cr_only": ("CR* k=1.5 (context features only)", CFG.format("cr_only"), []),
    "pre_cr": ("TR-Pre + CR k=1.5", CFG.format("pre_cr"), []),
    "full": ("full: TR-Pre + alignment + CR k=1.5", CFG.format("pre_cr"), ALIGN),
    "pre_shifted": ("TR-Pre*, templates shifted 5-10 px", CFG.format("pre_shifted"), []),
    "pre_shifted_align": ("TR-Pre* + alignment", CFG.format("pre_shifted_align"), []),
    "inter_shifted": ("TR-Inter*, templates shifted 5-10 px", CFG.format("inter_shifted"), []),
    "inter_shifted_align": ("TR-Inter* + alignment", CFG.format("inter_shifted_align"), []),
    "post_shifted": ("TR-Post*, templates shifted 5-10 px", CFG.format("post_shifted"), []),
    "post_shifted_align": ("TR-Post* + alignment", CFG.format("post_shifted_align"), []),
}
EVAL_ONLY = {"post": "baseline", "post_shifted": "baseline", "post_shifted_align": "baseline"}
VAL = "synthetic_fabric_val"
TEST = ("synthetic_fabric_test", "synthetic_fabric_unseen")
README = os.path.join("projects", "RDDN", "README.md")
MARK = "rddn_table"


def summarize(records: List[dict], dataset: str, metric: str = "AP50") -> Dict[str, dict]:
    """Per row: ``{"values": [...] per seed, "mean", "std" (0 with one seed), "n", "record": the last}``
    of ``metric`` on ``dataset``."""
    out: Dict[str, dict] = {}
    for r in records:
        m = r["metrics"].get(dataset, {}).get("bbox", {})
        if metric not in m:
            continue
        row = out.setdefault(r["row"], {"values": [], "record": r})
        row["values"].append(float(m[metric]))
        row["record"] = r
    for row in out.values():
        v = row["values"]
        row.update(n=len(v), mean=statistics.fmean(v), std=statistics.stdev(v) if len(v) > 1 else 0.0)
    return out


def _cell(s: Optional[dict], dataset: str, metric: str) -> str:
    if s is None:
        return "-"
    if s["n"] == 1:  # one seed: its bootstrap interval over images
        return fmt_ap(s["record"]["metrics"][dataset]["bbox"], metric)
    return f"{s['mean']:.1f} ± {s['std']:.1f} (n={s['n']})"


def _versus(s: Optional[dict], base: Optional[dict]) -> str:
    if s is None or base is None or s is base:
        return ""
    diff = s["mean"] - base["mean"]
    if s["n"] < 2 or base["n"] < 2:
        return f"{diff:+.1f} (1 seed)"
    verdict = "beats" if diff > max(s["std"], base["std"]) else (
        "worse" if -diff > max(s["std"], base["std"]) else "within noise")
    return f"{diff:+.1f} ({verdict})"


def _table(records: List[dict], datasets: Sequence[str], title: str) -> List[str]:
    cols = []
    for ds in datasets:
        cols += [(ds, "AP50"), (ds, "AP50_agnostic")]
    stats = {c: summarize(records, *c) for c in cols}
    head = ["row", "iters"] + [f"{'AP50' if m == 'AP50' else 'any class'} {ds.replace('synthetic_fabric_', '')}"
                               for ds, m in cols] + [f"vs baseline ({ds.replace('synthetic_fabric_', '')})"
                                                      for ds in datasets]
    lines = [title, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, (label, _, _) in ROWS.items():
        row_stats = [stats[c].get(key) for c in cols]
        if not any(row_stats):
            continue
        iters = next(s["record"]["iters"] for s in row_stats if s)
        src = f" (weights of {EVAL_ONLY[key]})" if key in EVAL_ONLY else ""
        cells = [_cell(s, *c) for s, c in zip(row_stats, cols)]
        vs = [_versus(stats[(ds, "AP50")].get(key), stats[(ds, "AP50")].get("baseline")) for ds in datasets]
        lines.append(f"| `{key}`: {label}{src} | {iters} | " + " | ".join(cells + vs) + " |")
    return lines


def render(args) -> str:
    """The validation and test tables from the JSON records (module doc); written to
    ``<results>/../rddn_table.md`` and into the README section when ``args.results`` is the default."""
    val = load_records(SPEC, args.results)
    final = load_records(SPEC, os.path.join(args.results, "final"))
    lines = _table(val, [VAL], "Validation (`synthetic_fabric_val`; every choice is made on this table). "
                               "AP50 in %: one seed: value [95% bootstrap interval over images]; several: "
                               "mean ± std over seeds.")
    if final:
        lines += [""] + _table(final, list(TEST), "Test (each row evaluated once, after the choice on validation):")
    table = "\n".join(lines)
    folder = os.path.dirname(args.results.rstrip("/"))
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "rddn_table.md"), "w") as f:
        f.write(table + "\n")
    if os.path.abspath(args.results) == os.path.abspath(SPEC.results):
        table_runner.write_readme_section(README, MARK, table)
    print(table)
    return table


SPEC = table_runner.TableSpec(
    name="rddn_table", rows=ROWS, eval_only=EVAL_ONLY, val=VAL, test=TEST,
    results=os.path.join("projects", "RDDN", "results"), out=os.path.join("output", "rddn_table"),
    render=lambda spec, args: render(args), iters=1000,
)


def main(argv: Optional[Sequence[str]] = None, description: Optional[str] = None):
    """The command line of ``tools/rddn_table.py`` (:func:`defect_det.utils.table_runner.main` on :data:`SPEC`)."""
    return table_runner.main(SPEC, argv, description)
