"""The NMS comparison of issue 14 on the synthetic fabric benchmark (projects/SinkhornNMS/README.md): what
``tools/sinkhorn_nms_table.py`` runs, on :mod:`defect_det.utils.table_runner`.

One detector — the demo model (``configs/RDDN/synthetic/faster_rcnn_R18_FPN_pre_align_pt.yaml``, the CPU
recipe) — is trained with hard NMS (``hard``); every other post-processing is evaluated on *its* weights
(evaluation-only rows): Sinkhorn NMS at inference at several temperatures, Soft-NMS (Gaussian at several
widths, linear), weighted box fusion (two IoU thresholds). End-to-end training through Sinkhorn NMS is a fine-tuning of those weights with the loss
weight ramped in (``e2e``), against the same extra training without it (``hard_ft``), and evaluated with
either post-processor. Choices (temperature, width) are made on validation; ``--final`` evaluates the
chosen rows once on the test splits. Columns: AP50 and AP75 (what better-placed boxes change) and the
duplicates NMS leaves (``dets_per_gt``, ``dup_share`` at score >= 0.5; :class:`~defect_det.evaluation.DefectCOCOEvaluator`).
Records in ``projects/SinkhornNMS/results/``; the table in ``projects/SinkhornNMS/nms_table.md`` and the README section.
"""
import os
from typing import Dict, Optional, Sequence

from ..utils import table_runner
from ..utils.table_runner import load_records, seed_table
from ..utils.tables import schedule_opts

__all__ = ["EVAL_ONLY", "INIT_FROM", "ROWS", "SPEC", "main", "render"]

DEMO = "configs/RDDN/synthetic/faster_rcnn_R18_FPN_pre_align_pt.yaml"
SINKHORN = ["MODEL.ROI_HEADS.NMS_TYPE", "sinkhorn"]
SOFT = ["MODEL.ROI_HEADS.NMS_TYPE", "soft"]
# fine-tuning: 300 iterations at a tenth of the recipe's learning rate, the end-to-end loss ramped in over 100
FINETUNE = schedule_opts(300) + ["SOLVER.BASE_LR", "0.0001", "SOLVER.CHECKPOINT_PERIOD", "100"]
E2E = ["MODEL.SINKHORN_NMS.E2E_LOSS_WEIGHT", "1.0", "MODEL.SINKHORN_NMS.E2E_WARMUP_ITERS", "100"]

ROWS: Dict[str, table_runner.Row] = {
    "hard": ("hard NMS (Detectron2's), the trained detector", DEMO, []),
    "sinkhorn": ("Sinkhorn NMS at inference, tau 0.1 (default)", DEMO, SINKHORN),
    "sinkhorn_t005": ("Sinkhorn NMS at inference, tau 0.05", DEMO, SINKHORN + ["MODEL.SINKHORN_NMS.TAU", "0.05"]),
    "sinkhorn_t02": ("Sinkhorn NMS at inference, tau 0.2", DEMO, SINKHORN + ["MODEL.SINKHORN_NMS.TAU", "0.2"]),
    "soft": ("Soft-NMS, Gaussian sigma 0.5", DEMO, SOFT),
    "soft_s03": ("Soft-NMS, Gaussian sigma 0.3", DEMO, SOFT + ["MODEL.ROI_HEADS.SOFT_NMS.SIGMA", "0.3"]),
    "soft_s1": ("Soft-NMS, Gaussian sigma 1.0", DEMO, SOFT + ["MODEL.ROI_HEADS.SOFT_NMS.SIGMA", "1.0"]),
    "soft_linear": ("Soft-NMS, linear (N_t = NMS_THRESH_TEST)", DEMO, SOFT + ["MODEL.ROI_HEADS.SOFT_NMS.METHOD", "linear"]),
    "wbf": ("weighted box fusion, IoU 0.55", DEMO, ["MODEL.ROI_HEADS.NMS_TYPE", "wbf"]),
    "wbf_07": ("weighted box fusion, IoU 0.7", DEMO, ["MODEL.ROI_HEADS.NMS_TYPE", "wbf", "MODEL.ROI_HEADS.WBF.IOU_THRESH", "0.7"]),
    "hard_ft": ("hard NMS, + 300 it. fine-tuning (control for e2e)", DEMO, FINETUNE),
    "e2e": ("Sinkhorn NMS, + 300 it. fine-tuning through it (loss weight 1, ramped)", DEMO, FINETUNE + SINKHORN + E2E),
    "e2e_hard": ("e2e's weights evaluated with hard NMS", DEMO, FINETUNE),
}
EVAL_ONLY = {k: "hard" for k in ("sinkhorn", "sinkhorn_t005", "sinkhorn_t02", "soft", "soft_s03", "soft_s1",
                                 "soft_linear", "wbf", "wbf_07")}
EVAL_ONLY["e2e_hard"] = "e2e"
INIT_FROM = {"hard_ft": "hard", "e2e": "hard"}
VAL = "synthetic_fabric_val"
TEST = ("synthetic_fabric_test", "synthetic_fabric_unseen")
README = os.path.join("projects", "SinkhornNMS", "README.md")
METRICS = (("AP50", "AP50", 1), ("AP75", "AP75", 1), ("dets_per_gt", "dets/GT", 3), ("dup_share", "dup share", 3))


def render(args) -> str:
    """Validation and test tables from the JSON records (rows against ``hard``); written to
    ``<results>/../nms_table.md`` and into the README section ``nms_table`` for the default results."""
    val = load_records(SPEC, args.results)
    final = load_records(SPEC, os.path.join(args.results, "final"))
    lines = seed_table(SPEC, val, [VAL], "hard", "Validation (`synthetic_fabric_val`; every choice is made on "
                       "this table). AP in %; one seed: value [95% bootstrap interval]; several: mean ± std.",
                       METRICS)
    if final:
        lines += [""] + seed_table(SPEC, final, list(TEST), "hard",
                                   "Test (each row evaluated once, after the choice on validation):", METRICS)
    return table_runner.publish_table(SPEC, args, "\n".join(lines), "nms_table.md", README, "nms_table")


SPEC = table_runner.TableSpec(
    name="sinkhorn_nms_table", rows=ROWS, eval_only=EVAL_ONLY, init_from=INIT_FROM, val=VAL, test=TEST,
    results=os.path.join("projects", "SinkhornNMS", "results"), out=os.path.join("output", "sinkhorn_nms_table"),
    render=lambda spec, args: render(args), iters=1000,
)


def main(argv: Optional[Sequence[str]] = None, description: Optional[str] = None):
    """The command line of ``tools/sinkhorn_nms_table.py`` (:func:`defect_det.utils.table_runner.main`)."""
    return table_runner.main(SPEC, argv, description)
