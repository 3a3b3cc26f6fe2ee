"""The recipe search of the CPU synthetic fabric benchmark (projects/Benchmark/README.md, issue 11):
what ``tools/recipe_search.py`` runs (its ``--help`` describes the command line).

:data:`ROWS` are the benchmark's rows (key -> (label, config, overrides), in table order);
:data:`EVAL_ONLY` the rows that train nothing but evaluate another row's weights. Every row trains one
config + overrides through ``tools/train_net.py`` as a subprocess (:func:`start_row`,
:func:`finish_row`, which writes the row's JSON record) and is scored by box AP50 on the validation
split :data:`VAL`; ``--final`` evaluates chosen rows once on the test splits :data:`TEST`.
:func:`render` writes the markdown tables from the stored JSON records; :func:`refresh_ci` recomputes
their AP50 intervals from the saved detections; :func:`get_parser` / :func:`main` are the command line.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from typing import Optional, Sequence

from .tables import git_commit, schedule_opts

__all__ = [
    "EVAL_ONLY",
    "REPO",
    "ROWS",
    "TEST",
    "VAL",
    "finish_row",
    "get_parser",
    "main",
    "refresh_ci",
    "render",
    "result_path",
    "start_row",
]

# the repository root of a source checkout: rows run there (configs, tools/train_net.py, default paths)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CPU = "configs/synthetic/faster_rcnn_R18_FPN_cpu.yaml"
PRE = "configs/RDDN/synthetic/faster_rcnn_R18_FPN_pre_align.yaml"
PRE_PT = "configs/RDDN/synthetic/faster_rcnn_R18_FPN_pre_align_pt.yaml"
# the ROI settings of the CPU config before issue 11 (128 sampled ROIs per image, 2x2 ROIAlign samples per bin)
# and after (64, 1): committed since the `pre` / `pre_fast` rows measured the same validation AP50
SLOW = ["MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "128", "MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO", "2"]
FAST = ["MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "64", "MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO", "1"]
# a larger share of foreground in the sampled ROIs / anchors (the synthetic images have ~1.5 boxes each:
# with 64 ROIs per image ~6 are foreground, and the classifier sits at "all background" for ~400 it.)
FG = ["MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32", "MODEL.ROI_HEADS.POSITIVE_FRACTION", "0.5",
      "MODEL.RPN.BATCH_SIZE_PER_IMAGE", "64"]
RPN03 = ["MODEL.RPN.IOU_THRESHOLDS", "[0.3,0.7]"]
# RPN positives from IoU 0.5 instead of 0.7: with the CPU anchors a training box has on average 0.2 anchors
# above IoU 0.7 (best-anchor mean IoU 0.46; tools/anchor_stats.py), so nearly every RPN positive is a
# low-quality match
RPN05 = ["MODEL.RPN.IOU_THRESHOLDS", "[0.1,0.5]"]
# anchors fitted to the box statistics (tools/anchor_stats.py): 3 sizes per level from 8 px, ratios 1:16..16:1
# (seams and stencil marks are up to 25:1, insects 4 px): best-anchor mean IoU 0.62, 8 anchors per box > 0.5
ANCH = ["MODEL.ANCHOR_GENERATOR.SIZES", "[[8,11,16],[22,32,45],[64,90,128],[181,256,362]]",
        "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", "[[0.0625,0.25,1.0,4.0,16.0]]"]
# training proposals: 8 jittered copies of each ground-truth box (defect_det/modeling/roi_heads/proposal_jitter.py)
JIT = ["MODEL.ROI_HEADS.GT_JITTER.NUM_PER_GT", "8"]

# the recipe chosen by this search is now the CPU config's default (RPN positives from IoU 0.5, jittered
# ground-truth proposals, containment suppression 0.6); the rows measured before carry the settings they
# were measured with, so that each row reproduces
OLD = ["MODEL.RPN.IOU_THRESHOLDS", "[0.1,0.7]", "MODEL.ROI_HEADS.GT_JITTER.NUM_PER_GT", "0",
       "MODEL.ROI_HEADS.CONTAIN_THRESH_TEST", "0.0"]

# key -> (label: what differs from the config file, config, overrides). Order = table order.
ROWS = {
    "base": ("no template, ROI batch 128, sampling 2 (the CPU config before issue 11)", CPU, OLD + SLOW),
    "pre": ("TR-Pre + alignment, ROI batch 128, sampling 2 (before issue 11)", PRE, OLD + SLOW),
    "pre_fast": ("TR-Pre + align, ROI batch 64/img, ROIAlign sampling 1 (default since issue 11)", PRE, OLD + FAST),
    "pre_fast_pt": ("TR-Pre + align, fast ROI, backbone pre-trained on difference images (PRETRAIN.md)",
                    PRE_PT, OLD),
    "pre_pt_fg": ("as pre_fast_pt, fewer background samples: ROI batch 32/img at 50% positives, RPN batch 64/img",
                  PRE_PT, OLD + FG),
    "base_rpn05_jit": ("no template, fast ROI, RPN positives from IoU 0.5, 8 jittered ground-truth proposals",
                       CPU, OLD + RPN05 + JIT),
    "pre_fast_600": ("as pre_fast, 600 iterations (the demo's schedule)", PRE, OLD + schedule_opts(600)),
    "pre_fast_pt_600": ("as pre_fast_pt, 600 iterations (the demo's schedule)", PRE_PT, OLD + schedule_opts(600)),
    "pre_pt_rpn05": ("as pre_fast_pt, RPN positives from IoU 0.5 (was 0.7)", PRE_PT, OLD + RPN05),
    "pre_pt_rpn05_anch": ("as pre_pt_rpn05, anchors fitted to the boxes (3 sizes/level from 8 px, ratios 1:16..16:1)",
                          PRE_PT, OLD + RPN05 + ANCH),
    "pre_pt_jit": ("as pre_fast_pt, 8 jittered copies of each ground-truth box among the proposals (sigma 0.2)",
                   PRE_PT, OLD + JIT),
    "pre_pt_rpn05_jit": ("as pre_pt_rpn05, 8 jittered copies of each ground-truth box among the proposals",
                         PRE_PT, OLD + RPN05 + JIT),
    "pre_lr2": ("TR-Pre + align, AdamW lr 2e-3", PRE, OLD + ["SOLVER.BASE_LR", "0.002"]),
    "pre_rpn03": ("TR-Pre + align, RPN IoU 0.3/0.7 (Detectron2 default)", PRE, OLD + RPN03),
    "pre_fast_lr2_rpn03": ("TR-Pre + align, fast ROI + lr 2e-3 + RPN 0.3/0.7", PRE,
                           OLD + FAST + ["SOLVER.BASE_LR", "0.002"] + RPN03),
}
# rows that train nothing: they evaluate another row's weights (same seed) with test-time overrides
EVAL_ONLY = {}
for _t in ("0.5", "0.6", "0.7", "0.8"):
    _k = f"pre_pt_rpn05_c{_t[2:]}"
    ROWS[_k] = (f"pre_pt_rpn05's weights, containment suppression {_t} at test (evaluation only)", PRE_PT,
                OLD + RPN05 + ["MODEL.ROI_HEADS.CONTAIN_THRESH_TEST", _t])
    EVAL_ONLY[_k] = "pre_pt_rpn05"
# the chosen recipe = the CPU config's defaults since issue 11 (its overrides here restate them)
ROWS["pre_pt_recipe"] = ("pre_pt_rpn05_jit's weights + containment 0.6 at test = the demo config since issue 11 "
                         "(evaluation only)", PRE_PT, OLD + RPN05 + JIT + ["MODEL.ROI_HEADS.CONTAIN_THRESH_TEST", "0.6"])
EVAL_ONLY["pre_pt_recipe"] = "pre_pt_rpn05_jit"
# third round: from the chosen recipe (the CPU config's defaults, no OLD pins)
IMAGE_PT = ["MODEL.WEIGHTS", "projects/Benchmark/weights/r18half_image.pth"]
ROWS["base_pt"] = ("no template, recipe defaults, backbone pre-trained on images (PRETRAIN.md, --input image)",
                   CPU, IMAGE_PT)
ROWS["pre_pt_lr2"] = ("pre_pt_recipe with AdamW lr 2e-3 (was 1e-3)", PRE_PT, ["SOLVER.BASE_LR", "0.002"])
ROWS["pre_pt_lr05"] = ("pre_pt_recipe with AdamW lr 5e-4 (was 1e-3)", PRE_PT, ["SOLVER.BASE_LR", "0.0005"])
ROWS["pre_pt_lr025"] = ("pre_pt_recipe with AdamW lr 2.5e-4 (was 1e-3)", PRE_PT, ["SOLVER.BASE_LR", "0.00025"])
ROWS["base_lr05"] = ("no template, recipe defaults, AdamW lr 5e-4 (was 1e-3)", CPU, ["SOLVER.BASE_LR", "0.0005"])
# longer schedules: is the budget the limit? (3x the benchmark's 1000 iterations, same recipe)
# (a checkpoint every 500 iterations: a long row resumes where an interrupted session left it)
LONG = schedule_opts(3000) + ["SOLVER.CHECKPOINT_PERIOD", "500"]
ROWS["base_3k"] = ("no template, recipe defaults, 3000 iterations", CPU, LONG)
ROWS["pre_pt_recipe_3k"] = ("pre_pt_recipe trained for 3000 iterations", PRE_PT, LONG)
VAL = "synthetic_fabric_val"
TEST = ("synthetic_fabric_test", "synthetic_fabric_unseen")


def _iters(args, opts):
    """Training iterations of a row: ``--iters`` unless the row's overrides set SOLVER.MAX_ITER."""
    opts = list(opts)
    return int(opts[opts.index("SOLVER.MAX_ITER") + 1]) if "SOLVER.MAX_ITER" in opts else args.iters


def result_path(args, key, seed):
    """``<args.results>[/final]/<key>_s<seed>.json``: the JSON record of one row and seed."""
    return os.path.join(args.results, "final" if args.final else "", f"{key}_s{seed}.json")


def start_row(args, key, seed):
    """Start one row's training (or, with ``--final``, its test evaluation) as a subprocess; returns
    (Popen, out dir, command, start time)."""
    label, cfg, opts = ROWS[key]
    own_dir = os.path.join(args.out, f"{key}_s{seed}")
    out = os.path.join(own_dir, "final") if args.final else own_dir
    # an evaluation-only row reads the weights of the row it re-evaluates
    train_dir = os.path.join(args.out, f"{EVAL_ONLY[key]}_s{seed}") if key in EVAL_ONLY else own_dir
    os.makedirs(out, exist_ok=True)
    cmd = [sys.executable, os.path.join("tools", "train_net.py"), "--config-file", cfg,
           "--save-results", os.path.join(out, "results.json")]
    cmd += ["OUTPUT_DIR", out, "SEED", str(seed), "DATALOADER.NUM_WORKERS", "0"]
    cmd += schedule_opts(args.iters) + ["SOLVER.CHECKPOINT_PERIOD", "250"] + list(opts) + list(args.opts)
    if args.final or key in EVAL_ONLY:
        weights = os.path.join(train_dir, "model_final.pth")
        if not os.path.isfile(weights):
            base = EVAL_ONLY.get(key, key)
            raise SystemExit(f"error: {weights} missing: train row {base!r} (seed {seed}) first, without --final")
        cmd.insert(2, "--eval-only")
        cmd += ["MODEL.WEIGHTS", weights, "DATASETS.TEST", str(TEST).replace(" ", "") if args.final else f"('{VAL}',)"]
    else:
        cmd.insert(2, "--resume")
        cmd += ["DATASETS.TEST", f"('{VAL}',)"]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    log = open(os.path.join(out, "stdout.log"), "a")
    print(f"[recipe_search] start {key} seed {seed}: {' '.join(cmd)}", flush=True)
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT), out, cmd, time.time()


def finish_row(args, key, seed, proc, out, cmd, t0):
    """Wait for a row started by :func:`start_row` and write its JSON record (row, label, config, opts,
    seed, iters, threads, jobs, commit, command, metrics, wall_s, date) to :func:`result_path`;
    returns False (and writes nothing) when the run failed or left no ``results.json``."""
    rc = proc.wait()
    res_file = os.path.join(out, "results.json")
    if rc != 0 or not os.path.isfile(res_file):
        print(f"[recipe_search] {key} seed {seed} FAILED (exit {rc}); see {out}/stdout.log", flush=True)
        return False
    with open(res_file) as f:
        metrics = json.load(f)
    label, cfg, opts = ROWS[key]
    record = {
        "row": key, "label": label, "config": cfg, "opts": list(opts) + list(args.opts), "seed": seed,
        "iters": _iters(args, opts), "threads": args.threads,
        "jobs": args.sharing or args.jobs, "commit": git_commit(),
        "command": " ".join(cmd), "metrics": metrics, "wall_s": time.time() - t0,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    path = result_path(args, key, seed)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(record, f, indent=1)
    os.replace(path + ".tmp", path)
    print(f"[recipe_search] done {key} seed {seed}: {record['wall_s'] / 60:.1f} min -> {path}", flush=True)
    return True


def _fmt_ap(m, k):
    """``AP [low, high]`` of metric ``k`` of ``m`` (``-`` when missing)."""
    v = m.get(k)
    if v is None:
        return "-"
    lo, hi = m.get(f"{k}_ci_low"), m.get(f"{k}_ci_high")
    return f"{v:.1f}" + (f" [{lo:.1f}, {hi:.1f}]" if lo is not None and hi is not None else "")


def _records(folder):
    """Every JSON record of ``folder``, in :data:`ROWS` order, then by seed."""
    recs = []
    if os.path.isdir(folder):
        for name in sorted(os.listdir(folder)):
            if name.endswith(".json"):
                with open(os.path.join(folder, name)) as f:
                    recs.append(json.load(f))
    order = {k: i for i, k in enumerate(ROWS)}
    recs.sort(key=lambda r: (order.get(r["row"], len(order)), r["seed"]))
    return recs


def render(args):
    """Markdown tables of every JSON result: validation rows (``args.results``) and final test rows
    (``args.results/final``), rows in ROWS order; written to ``<results>/../recipe_table.md``."""
    lines = ["Validation (`synthetic_fabric_val`; every choice is made on this table):", "",
             "| row | what differs | seed | iters | val AP50 [95% CI] | val AP50 any class [95% CI] | minutes "
             "(threads/row, rows at once) |", "|---|---|---|---|---|---|---|"]
    for r in _records(args.results):
        m = r["metrics"].get(VAL, {}).get("bbox", {})
        lines.append(f"| `{r['row']}` | {r['label']} | {r['seed']} | {r['iters']} | {_fmt_ap(m, 'AP50')} | "
                     f"{_fmt_ap(m, 'AP50_agnostic')} | {r['wall_s'] / 60:.0f} ({r['threads']}, {r['jobs']}) |")
    final = _records(os.path.join(args.results, "final"))
    if final:
        lines += ["", "Test (each row evaluated once, after it was chosen on validation):", "",
                  "| row | what differs | seed | iters | seen AP50 [95% CI] | unseen AP50 [95% CI] | "
                  "seen AP50 any class | unseen AP50 any class |", "|---|---|---|---|---|---|---|---|"]
        for r in final:
            seen, unseen = (r["metrics"].get(d, {}).get("bbox", {}) for d in TEST)
            lines.append(f"| `{r['row']}` | {r['label']} | {r['seed']} | {r['iters']} | {_fmt_ap(seen, 'AP50')} | "
                         f"{_fmt_ap(unseen, 'AP50')} | {_fmt_ap(seen, 'AP50_agnostic')} | "
                         f"{_fmt_ap(unseen, 'AP50_agnostic')} |")
    table = "\n".join(lines)
    path = os.path.join(os.path.dirname(args.results.rstrip("/")), "recipe_table.md")
    with open(path, "w") as f:
        f.write(table + "\n")
    print(table)
    return table


def refresh_ci(args):
    """Recompute the AP50 intervals of every stored row from its saved detections
    (``<out>/<row>_s<seed>[/final]/inference/<dataset>/coco_instances_results.json``) with the current
    :func:`~defect_det.evaluation.bootstrap_ap50` (e.g. after a change of the interval method)."""
    import contextlib
    import io

    from detectron2.data import MetadataCatalog

    import defect_det  # noqa: F401  (registers the datasets)
    from defect_det.evaluation import bootstrap_ap50
    from pycocotools.coco import COCO

    for final in (False, True):
        folder = os.path.join(args.results, "final") if final else args.results
        for rec in _records(folder):
            run = os.path.join(args.out, f"{rec['row']}_s{rec['seed']}", "final" if final else "")
            for ds, res in rec["metrics"].items():
                dets = os.path.join(run, "inference", ds, "coco_instances_results.json")
                if not os.path.isfile(dets):
                    print(f"[recipe_search] {dets} missing: interval of {rec['row']} on {ds} kept")
                    continue
                with open(dets) as f, contextlib.redirect_stdout(io.StringIO()):
                    gt = COCO(MetadataCatalog.get(ds).json_file)
                    dts = json.load(f)
                for key, agn in (("AP50", False), ("AP50_agnostic", True)):
                    _, lo, hi = bootstrap_ap50(gt, dts, class_agnostic=agn)
                    res["bbox"][f"{key}_ci_low"], res["bbox"][f"{key}_ci_high"] = lo, hi
            path = os.path.join(folder, f"{rec['row']}_s{rec['seed']}.json")
            with open(path + ".tmp", "w") as f:
                json.dump(rec, f, indent=1)
            os.replace(path + ".tmp", path)
            print(f"[recipe_search] intervals refreshed: {path}")


def get_parser(description: Optional[str] = None) -> argparse.ArgumentParser:
    """The command line of ``tools/recipe_search.py`` (``description``: its ``--help`` text)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", nargs="*", default=None, help="row keys, started in this order (default: all)")
    p.add_argument("--seeds", type=int, nargs="*", default=[0])
    p.add_argument("--iters", type=int, default=1000, help="training iterations of every row (default: %(default)s)")
    p.add_argument("--jobs", type=int, default=2, help="rows trained at the same time (default: %(default)s)")
    p.add_argument("--sharing", type=int, default=0,
                   help="CPU-bound processes on the machine, recorded as 'rows at once' (default: --jobs); "
                        "e.g. 2 when one row trains beside a pre-training run")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads per row (default: %(default)s)")
    p.add_argument("--out", default=os.path.join("output", "recipe_search"))
    p.add_argument("--results", default=os.path.join("projects", "Benchmark", "results", "recipe"))
    p.add_argument("--force", action="store_true", help="rerun rows whose results exist")
    p.add_argument("--list", action="store_true", help="list the rows, then exit")
    p.add_argument("--render", action="store_true", help="only render the table from the results")
    p.add_argument("--refresh-ci", action="store_true",
                   help="recompute every stored row's AP50 intervals from its saved detections, then render")
    p.add_argument("--final", action="store_true",
                   help="evaluate trained rows on the TEST splits (once, for rows chosen on validation)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="extra KEY VALUE overrides for every row")
    return p


def main(argv: Optional[Sequence[str]] = None, description: Optional[str] = None):
    """Parse ``argv`` (default ``sys.argv[1:]``) and, from :data:`REPO`: list the rows (``--list``),
    render the table (``--render``; returns it as text), refresh the intervals (``--refresh-ci``), or run
    the rows not done yet, ``--jobs`` at a time, then render. Unknown or failed rows raise
    ``SystemExit``."""
    args = get_parser(description).parse_args(argv)
    os.chdir(REPO)
    if args.list:
        for key, (label, cfg, opts) in ROWS.items():
            print(f"{key:22s} {cfg:58s} {' '.join(opts)}  # {label}")
        return
    if args.refresh_ci:
        refresh_ci(args)
    if args.render or args.refresh_ci:
        return render(args)
    keys = list(ROWS) if args.rows is None else args.rows
    unknown = [k for k in keys if k not in ROWS]
    if unknown:
        raise SystemExit(f"error: unknown rows {unknown}; known: {list(ROWS)}")
    todo = [(k, s) for s in args.seeds for k in keys
            if args.force or not os.path.isfile(result_path(args, k, s))]
    print(f"[recipe_search] {len(todo)} row(s) to run: {todo}", flush=True)
    running, failed = [], []
    while todo or running:
        while todo and len(running) < args.jobs:
            k, s = todo.pop(0)
            running.append((k, s, *start_row(args, k, s)))
        time.sleep(5)
        for item in list(running):
            if item[2].poll() is not None:
                running.remove(item)
                if not finish_row(args, *item):
                    failed.append(item[:2])
    render(args)
    if failed:
        raise SystemExit(f"error: failed rows {failed}")
