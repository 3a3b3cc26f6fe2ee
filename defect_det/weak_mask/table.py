"""The box-supervised mask table on the synthetic fabric benchmark (projects/WeakMask/README.md): what
``tools/weak_mask_table.py`` runs, on :mod:`defect_det.utils.table_runner` (issue 14).

Rows (:data:`ROWS`), all on the demo detector (TR-Pre + alignment from our pre-trained backbone,
``configs/WeakMask/synthetic/``) unless named ``ptg_*``:

- trained: ``box`` (ours, box labels only), ``box_no_template`` (ours without the template-difference loss),
  ``mask`` (upper bound: exact masks), ``ptg_box`` (ours where no template exists: PTG detector, colour
  affinities only);
- evaluation only (:data:`EVAL_ONLY`, the weights of a trained row): ``filled_box`` (lower bound: mask = box),
  ``box_refine*`` (ours + refinement at three confidence thresholds), ``ptg_filled_box``;
- computed, no network (:data:`COMPUTED`, :mod:`.difference_masks`): the thresholded image - template
  difference at three kappas (``diff_k*``), and the image against its own local median (``median_k*``: what
  thresholding gives without a template).

Every row is scored on the validation split (every choice: kappa, the refinement threshold) and, with
``--final``, once on the test splits: COCO mask AP (``segm``) and box AP of the detector, and the mask IoU on the
ground-truth boxes (:mod:`.evaluation`: the mask branch alone, given each defect's true box and class; the
spec's ``post`` hook, ``tools/eval_masks_gt_boxes.py``), with a bootstrap interval over instances. One JSON
record per row and seed in ``projects/WeakMask/results/`` (``final/``); :func:`render` writes
``projects/WeakMask/weak_mask_table.md`` and the README section ``weak_mask_table``: mean ± std over seeds (one
seed: the interval), the difference to the filled box, and the share of the lower-to-upper gap each row closes
(:func:`gap_recovered`).
"""
import json
import os
import subprocess
import sys
from functools import partial
from typing import Dict, Optional, Sequence

from ..utils import table_runner
from ..utils.table_runner import load_records, seed_table, summarize

__all__ = ["COMPUTED", "EVAL_ONLY", "ROWS", "SPEC", "TEST", "VAL", "gap_recovered", "main", "render"]

CFG = "configs/WeakMask/synthetic/mask_rcnn_R18_FPN_{}.yaml"
DIFF_TOOL = "tools/template_difference_masks.py"
VAL = "synthetic_fabric_val"
TEST = ("synthetic_fabric_test", "synthetic_fabric_unseen")
README = os.path.join("projects", "WeakMask", "README.md")
MARK = "weak_mask_table"


def _refine(c):
    return ["MODEL.ROI_MASK_HEAD.REFINE.CONF_THRESH", str(c)]


# the network-free rows: key -> (reference, kappa, blur); their table row shows the equivalent tool flags
DIFF_ROWS = {"diff_k0.3": ("template", 0.3, 1.5), "diff_k0.4": ("template", 0.4, 1.5),
             "diff_k0.5": ("template", 0.5, 1.5), "median_k0.2": ("median", 0.2, 1.5), "median_k0.3": ("median", 0.3, 1.5)}


def _diff(key):
    reference, kappa, blur = DIFF_ROWS[key]
    return ["--reference", reference, "--kappa", str(kappa), "--blur", str(blur)]


# key -> (label, config or tool, overrides or tool flags), in table order
ROWS: Dict[str, table_runner.Row] = {
    "filled_box": ("lower bound: mask = filled box", CFG.format("filled_box"), []),
    "box_no_template": ("ours without the template-difference loss", CFG.format("box_supervised_no_template"), []),
    "box": ("ours: box labels only (kappa 0.4)", CFG.format("box_supervised"), []),
    "box_refine": ("ours + refinement, confidence 0.9", CFG.format("box_supervised_refine"), []),
    "box_refine_c08": ("ours + refinement, confidence 0.8", CFG.format("box_supervised_refine"), _refine(0.8)),
    "box_refine_c095": ("ours + refinement, confidence 0.95", CFG.format("box_supervised_refine"), _refine(0.95)),
    "mask": ("upper bound: exact masks", CFG.format("mask_supervised"), []),
    "diff_k0.3": ("image - template > 0.3 x peak in the box", DIFF_TOOL, _diff("diff_k0.3")),
    "diff_k0.4": ("image - template > 0.4 x peak in the box", DIFF_TOOL, _diff("diff_k0.4")),
    "diff_k0.5": ("image - template > 0.5 x peak in the box", DIFF_TOOL, _diff("diff_k0.5")),
    "ptg_filled_box": ("no template: PTG detector, mask = filled box", CFG.format("ptg_filled_box"), []),
    "ptg_box": ("no template: ours on the PTG detector (colour affinities only)", CFG.format("ptg_box_supervised"), []),
    "median_k0.2": ("no template: image - local median (15 px) > 0.2 x peak", DIFF_TOOL, _diff("median_k0.2")),
    "median_k0.3": ("no template: image - local median (15 px) > 0.3 x peak", DIFF_TOOL, _diff("median_k0.3")),
}
EVAL_ONLY = {"filled_box": "box", "box_refine": "box", "box_refine_c08": "box", "box_refine_c095": "box",
             "ptg_filled_box": "ptg_box"}


def _compute_difference(reference, kappa, blur, args, key, seed, datasets):
    """A computed row (:data:`COMPUTED`): the thresholded difference on ``datasets`` (no seed dependence)."""
    from .difference_masks import difference_mask_metrics

    try:
        metrics = difference_mask_metrics(datasets, kappa, reference, blur)
    except ValueError as e:
        raise SystemExit(f"row {key!r}: {e}") from None
    cmd = (f"python {DIFF_TOOL} --datasets {' '.join(datasets)} --reference {reference} --kappa {kappa} "
           f"--blur {blur}")
    return metrics, cmd


COMPUTED = {key: partial(_compute_difference, *params) for key, params in DIFF_ROWS.items()}


def masks_on_gt_boxes_hook(spec, args, key, seed, out, weights, datasets) -> Dict[str, dict]:
    """The ``post`` hook: ``tools/eval_masks_gt_boxes.py`` on the row's config and weights, for ``datasets``;
    returns ``{dataset: {"gt_boxes": {mIoU, mIoU_ci_low, mIoU_ci_high, IoU>=0.5, IoU>=0.75 in %, instances}}}``."""
    from .difference_masks import percent

    _, cfg, opts = spec.rows[key]
    path = os.path.join(out, "masks_gt_boxes.json")
    cmd = [sys.executable, os.path.join("tools", "eval_masks_gt_boxes.py"), "--config-file", cfg, "--out", path]
    cmd += list(opts) + list(args.opts) + ["MODEL.WEIGHTS", weights, "DATASETS.TEST", str(tuple(datasets)).replace(" ", "")]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    print(f"[{spec.name}] {key} seed {seed}: masks on the GT boxes: {' '.join(cmd)}", flush=True)
    with open(os.path.join(out, "stdout_gt_boxes.log"), "w") as log:
        rc = subprocess.run(cmd, cwd=table_runner.REPO, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    if rc != 0 or not os.path.isfile(path):
        raise SystemExit(f"masks on the GT boxes failed (exit {rc}); see {out}/stdout_gt_boxes.log")
    with open(path) as f:
        res = json.load(f)
    return {ds: {"gt_boxes": percent(res[ds])} for ds in datasets}


def gap_recovered(value, lower, upper):
    """Share of the lower-to-upper gap that ``value`` closes; None when there is no gap."""
    if upper is None or lower is None or value is None or upper - lower <= 1e-9:
        return None
    return (value - lower) / (upper - lower)


def _gap_lines(records, datasets) -> list:
    """Markdown lines: per row and dataset, the share of the gap between its lower bound (``filled_box``;
    ``ptg_filled_box`` for ``ptg_*`` rows) and the exact-mask upper bound that the row's mean closes, on the
    mask IoU on the GT boxes and on mask AP50."""
    metrics = (("gt_boxes.mIoU", "mIoU on GT boxes"), ("segm.AP50", "mask AP50"))
    stats = {(ds, m): summarize(records, ds, m) for ds in datasets for m, _ in metrics}
    short = {ds: ds.replace("synthetic_fabric_", "") for ds in datasets}
    head = ["row"] + [f"{name} gap recovered ({short[ds]})" for ds in datasets for _, name in metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key in ROWS:
        lower_key = "ptg_filled_box" if key.startswith("ptg_") or key.startswith("median_") else "filled_box"
        cells, any_value = [], False
        for ds in datasets:
            for m, _ in metrics:
                s = stats[(ds, m)]
                mean = lambda k: s[k]["mean"] if k in s else None  # noqa: E731
                g = gap_recovered(mean(key), mean(lower_key), mean("mask"))
                any_value |= key in s
                cells.append("-" if g is None else f"{100 * g:.0f}%")
        if any_value:
            lines.append(f"| `{key}` | " + " | ".join(cells) + " |")
    return lines


METRICS = (("gt_boxes.mIoU", "mIoU on GT boxes", 1), ("segm.AP50", "mask AP50", 1), ("AP50", "box AP50", 1))


def render(args) -> str:
    """The validation and test tables from the JSON records (module doc); written to
    ``<results>/../weak_mask_table.md`` and into the README section when ``args.results`` is the default."""
    val = load_records(SPEC, args.results)
    final = load_records(SPEC, os.path.join(args.results, "final"))
    lines = seed_table(SPEC, val, [VAL], "filled_box",
                       "Validation (`synthetic_fabric_val`; kappa and the refinement threshold are chosen on this "
                       "table). In %; one seed: value [95% bootstrap interval]; several: mean ± std over seeds.",
                       METRICS, compare="gt_boxes.mIoU", compare_name="mIoU")
    lines += ["", "Share of the gap between the filled box and exact-mask supervision closed (validation, means):",
              ""] + _gap_lines(val, [VAL])
    if final:
        lines += [""] + seed_table(SPEC, final, list(TEST), "filled_box",
                                   "Test (each row evaluated once, after the choice on validation):",
                                   METRICS, compare="gt_boxes.mIoU", compare_name="mIoU")
        lines += ["", "Share of the gap closed (test, means):", ""] + _gap_lines(final, list(TEST))
    return table_runner.publish_table(SPEC, args, "\n".join(lines), "weak_mask_table.md", README, MARK)


SPEC = table_runner.TableSpec(
    name="weak_mask_table", rows=ROWS, eval_only=EVAL_ONLY, val=VAL, test=TEST,
    results=os.path.join("projects", "WeakMask", "results"), out=os.path.join("output", "weak_mask_table"),
    render=lambda spec, args: render(args), iters=1000, post=masks_on_gt_boxes_hook, computed=COMPUTED,
)


def main(argv: Optional[Sequence[str]] = None, description: Optional[str] = None):
    """The command line of ``tools/weak_mask_table.py`` (:func:`defect_det.utils.table_runner.main` on :data:`SPEC`)."""
    return table_runner.main(SPEC, argv, description)
