"""The box-supervised mask table on the synthetic fabric benchmark (projects/WeakMask/README.md): what
``tools/weak_mask_table.py`` runs (its ``--help`` describes the rows and the command line).

:data:`ROWS` (key, label, config stem of :data:`CFG`, row whose weights it evaluates instead of
training) and :data:`ORDER` (training rows first); :func:`run_row` trains or evaluates one row through
``tools/train_net.py`` and scores its masks on the ground-truth boxes through
``tools/eval_masks_gt_boxes.py`` (both subprocesses, from :data:`REPO`; finished outputs are reused);
:func:`gap_recovered` is the share of the lower-to-upper-bound gap a row closes; :func:`get_parser` /
:func:`main` are the command line, which writes ``<out>/table.md``.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from typing import Optional, Sequence

from ..utils.tables import schedule_opts

__all__ = ["CFG", "DATASETS", "ORDER", "REPO", "ROWS", "gap_recovered", "get_parser", "main", "run_row"]

# the repository root of a source checkout: the rows' subprocesses run there
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CFG = os.path.join("configs", "WeakMask", "synthetic", "mask_rcnn_R18_FPN_{}.yaml")
DATASETS = ("synthetic_fabric_test", "synthetic_fabric_unseen")

# (key, label, config stem, weights of which row to evaluate instead of training)
ROWS = [
    ("filled_box", "lower bound: mask = filled box", "filled_box", "box"),
    ("box_no_template", "ours without the template-difference loss", "box_supervised_no_template", None),
    ("box", "ours: box labels only", "box_supervised", None),
    ("box_refine", "ours: box labels only + refinement", "box_supervised_refine", "box"),
    ("mask", "upper bound: exact masks", "mask_supervised", None),
]
# training rows first, so that evaluation rows find their weights
ORDER = ["box", "box_no_template", "mask", "filled_box", "box_refine"]


def _run(cmd, log_path, what):
    """Run ``cmd`` from :data:`REPO`, output to ``log_path``; a failure raises ``SystemExit`` naming ``what``."""
    with open(log_path, "w") as log:
        r = subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        raise SystemExit(f"{what} failed (exit {r.returncode}); see {log_path}")


def _has_masks(results_path):
    """True when train_net's results file has the ``segm`` task for every table dataset."""
    if not os.path.isfile(results_path):
        return False
    with open(results_path) as f:
        res = json.load(f)
    return all("segm" in res.get(ds, {}) for ds in DATASETS)


def run_row(key, stem, weights_from, args):
    """Train (or evaluate the weights of row ``weights_from``), then score the masks on the GT boxes.
    Returns the paths of ``results.json`` (train_net's COCO results) and ``masks_gt_boxes.json``;
    either is reused when it exists (unless ``--force``); a trained row whose ``model_final.pth``
    exists but whose results lack mask AP is evaluated again, not retrained."""
    out = os.path.join(args.out, f"seed{args.seed}", key)
    results = os.path.join(out, "results.json")
    on_gt = os.path.join(out, "masks_gt_boxes.json")
    weights = os.path.join(args.out, f"seed{args.seed}", weights_from or key, "model_final.pth")
    os.makedirs(out, exist_ok=True)
    t0 = time.time()
    if args.force or not _has_masks(results):
        cmd = [sys.executable, os.path.join("tools", "train_net.py"), "--config-file", CFG.format(stem),
               "--save-results", results]
        opts = ["OUTPUT_DIR", out, "SEED", str(args.seed), "DATASETS.TEST", str(DATASETS).replace(" ", ""),
                "DATALOADER.NUM_WORKERS", str(args.workers)]
        log = "stdout.log"
        if weights_from or (os.path.isfile(weights) and not args.force):
            # an evaluation row, or a trained row whose results lack mask AP: evaluate its weights
            if not os.path.isfile(weights):
                raise SystemExit(f"row {key!r} evaluates the weights of row {weights_from!r}: {weights} is missing")
            cmd.append("--eval-only")
            opts += ["MODEL.WEIGHTS", weights]
            log = "stdout.log" if weights_from else "stdout_eval.log"  # keep the training log
        else:
            opts += schedule_opts(args.iters)
        opts += args.opts
        print(f"[weak_mask_table] {key}: {' '.join(cmd + opts)}", flush=True)
        _run(cmd + opts, os.path.join(out, log), f"row {key!r}")
        if not _has_masks(results):
            raise SystemExit(f"row {key!r}: {results} has no mask AP ('segm') for every dataset")
    if args.force or not os.path.isfile(on_gt):
        cmd = [sys.executable, os.path.join("tools", "eval_masks_gt_boxes.py"), "--config-file", CFG.format(stem),
               "--out", on_gt, "MODEL.WEIGHTS", weights, "DATASETS.TEST", str(DATASETS).replace(" ", "")] + args.opts
        print(f"[weak_mask_table] {key}: {' '.join(cmd)}", flush=True)
        _run(cmd, os.path.join(out, "stdout_gt_boxes.log"), f"row {key!r}: masks on the GT boxes")
    print(f"[weak_mask_table] {key}: {time.time() - t0:.0f} s", flush=True)
    return results, on_gt


def gap_recovered(value, lower, upper):
    """Share of the lower-to-upper gap that ``value`` closes; None when there is no gap."""
    if upper is None or lower is None or upper - lower <= 1e-9:
        return None
    return (value - lower) / (upper - lower)


def get_parser(description: Optional[str] = None) -> argparse.ArgumentParser:
    """The command line of ``tools/weak_mask_table.py`` (``description``: its ``--help`` text)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", nargs="*", default=None, help="row keys (default: all)")
    p.add_argument("--iters", type=int, default=600, help="training iterations of both trained rows")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="DATALOADER.NUM_WORKERS")
    p.add_argument("--out", default=os.path.join("output", "weak_mask_table"))
    p.add_argument("--force", action="store_true", help="rerun rows whose results exist")
    p.add_argument("--list", action="store_true", help="list the rows and their configs, then exit")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="extra KEY VALUE overrides for every row")
    return p


def main(argv: Optional[Sequence[str]] = None, description: Optional[str] = None):
    """Parse ``argv`` (default ``sys.argv[1:]``); list the rows (``--list``, returns None) or run the
    wanted rows (and the rows whose weights they evaluate) in :data:`ORDER`, print the table and write
    it to ``<out>/table.md``; returns ``{row: train_net results}``. Unknown rows raise ``SystemExit``."""
    args = get_parser(description).parse_args(argv)
    rows = {k: (label, stem, w) for k, label, stem, w in ROWS}
    if args.list:
        for k, label, stem, w in ROWS:
            print(f"{k:11s} {label:38s} {CFG.format(stem)}" + (f" (weights of row {w})" if w else ""))
        return None
    wanted = args.rows or [k for k, *_ in ROWS]
    unknown = [k for k in wanted if k not in rows]
    if unknown:
        raise SystemExit(f"unknown rows {unknown}; --list shows them")
    needed = set(wanted) | {rows[k][2] for k in wanted if rows[k][2]}
    results, on_gt = {}, {}
    for key in ORDER:
        if key in needed:
            res_path, gt_path = run_row(key, rows[key][1], rows[key][2], args)
            with open(res_path) as f:
                results[key] = json.load(f)
            with open(gt_path) as f:
                on_gt[key] = json.load(f)

    def ap(key, ds, task, metric="AP50"):
        return float(results[key][ds][task][metric]) if key in results else None

    def miou(key, ds):
        return 100 * float(on_gt[key][ds]["mIoU"]) if key in on_gt else None

    lines = [
        f"Synthetic fabric, {args.iters} iterations, seed {args.seed}, AP in % "
        f"(`python tools/weak_mask_table.py --iters {args.iters} --seed {args.seed}`)",
        "",
        "| row | mask AP50 seen | mask AP50 unseen | gap recovered seen | gap recovered unseen "
        "| mask AP seen | mask AP unseen | box AP50 seen | box AP50 unseen "
        "| mIoU on GT boxes seen | mIoU on GT boxes unseen | mIoU gap recovered seen | mIoU gap recovered unseen |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key in [k for k, *_ in ROWS if k in wanted]:
        cells = [f"{ap(key, ds, 'segm'):.1f}" for ds in DATASETS]
        for ds in DATASETS:
            g = gap_recovered(ap(key, ds, "segm"), ap("filled_box", ds, "segm"), ap("mask", ds, "segm"))
            cells.append("-" if g is None else f"{100 * g:.0f}%")
        cells += [f"{ap(key, ds, 'segm', 'AP'):.1f}" for ds in DATASETS]
        cells += [f"{ap(key, ds, 'bbox'):.1f}" for ds in DATASETS]
        cells += [f"{miou(key, ds):.1f}" for ds in DATASETS]
        for ds in DATASETS:
            g = gap_recovered(miou(key, ds), miou("filled_box", ds), miou("mask", ds))
            cells.append("-" if g is None else f"{100 * g:.0f}%")
        lines.append(f"| {rows[key][0]} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(table + "\n")
    print(table)
    return results
