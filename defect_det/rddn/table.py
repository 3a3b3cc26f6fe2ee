"""The RDDN table on the synthetic fabric benchmark (projects/RDDN/README.md): what ``tools/rddn_table.py``
runs, on :mod:`defect_det.utils.table_runner`.

Every row trains one config of ``configs/RDDN/synthetic/`` (all on the CPU recipe of
``configs/synthetic/faster_rcnn_R18_FPN_cpu.yaml``) for the same schedule, one intra-op thread per row, and
is scored on the validation split; TR-Post rows train nothing (they evaluate the baseline's weights with
templates). ``--final`` evaluates chosen rows once on the seen-texture test split and the unseen textures.
One JSON record per row and seed in ``projects/RDDN/results/`` (``final/``); :func:`render` writes the
tables — mean and standard deviation over seeds, the bootstrap interval of a single seed, the difference
to the baseline and whether it counts — to ``projects/RDDN/rddn_table.md`` and into the README
between ``<!-- rddn_table:begin -->`` and ``<!-- rddn_table:end -->``.

A row **beats** the baseline only when the difference of the means exceeds both rows' standard deviations
over seeds (at least 2 seeds each); with one seed the cell says "1 seed".
"""
import os
from typing import Dict, Optional, Sequence

from ..utils import table_runner
from ..utils.table_runner import load_records, seed_table

__all__ = ["EVAL_ONLY", "ROWS", "SPEC", "TEST", "VAL", "main", "render"]

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


def render(args) -> str:
    """The validation and test tables from the JSON records (module doc); written to
    ``<results>/../rddn_table.md`` and into the README section when ``args.results`` is the default."""
    val = load_records(SPEC, args.results)
    final = load_records(SPEC, os.path.join(args.results, "final"))
    lines = seed_table(SPEC, val, [VAL], "baseline",
                       "Validation (`synthetic_fabric_val`; every choice is made on this table). AP50 in %: one "
                       "seed: value [95% bootstrap interval over images]; several: mean ± std over seeds.")
    if final:
        lines += [""] + seed_table(SPEC, final, list(TEST), "baseline",
                                   "Test (each row evaluated once, after the choice on validation):")
    return table_runner.publish_table(SPEC, args, "\n".join(lines), "rddn_table.md", README, MARK)


SPEC = table_runner.TableSpec(
    name="rddn_table", rows=ROWS, eval_only=EVAL_ONLY, val=VAL, test=TEST,
    results=os.path.join("projects", "RDDN", "results"), out=os.path.join("output", "rddn_table"),
    render=lambda spec, args: render(args), iters=1000,
)


def main(argv: Optional[Sequence[str]] = None, description: Optional[str] = None):
    """The command line of ``tools/rddn_table.py`` (:func:`defect_det.utils.table_runner.main` on :data:`SPEC`)."""
    return table_runner.main(SPEC, argv, description)
