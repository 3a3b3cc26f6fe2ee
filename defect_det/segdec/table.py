"""What ``tools/segdec_table.py`` runs (its ``--help`` text is the tool's docstring): the SegDecNet tables on
the synthetic DAGM-style benchmark (projects/SegDecNet/README.md).

Each (row, class, seed) trains ``configs/SegDecNet/synthetic_dagm_cpu.yaml`` with the row's overrides through
``tools/train_net.py`` and reads the image-level AP, AUROC, detection rate and pixel Dice of the class's test
split, plain and with test-time augmentation. Besides the run's own ``results.json`` (under ``--out``), every
run writes a JSON record (row, label, class, seed, network variant, iterations, config, overrides, command,
git commit, metrics, wall time) to ``--results`` (default ``projects/SegDecNet/results/<net>/`` for the
default ``--out``, else ``<out>/results``): ``<row>_c<class>_s<seed>.json``. Runs with results are reused,
not retrained (``--force`` does).
"""

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import time
from typing import Optional, Sequence

from ..utils.tables import git_commit

__all__ = ["ROWS", "get_parser", "main", "write_record"]

# the repository root of a source checkout (configs, tools/train_net.py)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_OUT = os.path.join("output", "segdec_table")
CONFIG = os.path.join("configs", "SegDecNet", "synthetic_dagm_cpu.yaml")
# The tables in projects/SegDecNet/README.md were measured before the network followed the authors'
# released code by default (issue 13: their normalisation, the logit map normalised, Xavier init);
# every row pins the network it was measured with, so that it reproduces. Re-measure with --net authors.
NETWORKS = {
    "previous": ["MODEL.SEGDEC.NORM", "instance", "MODEL.SEGDEC.SEG_LOGIT_NORM", "False", "MODEL.SEGDEC.INIT", "torch"],
    "authors": [],
}

# (key, label, config overrides)
ROWS = [
    ("full", "full (all extensions)", []),
    ("no_dyn", "- dynamic balancing", ["MODEL.SEGDEC.DYN_BALANCED_LOSS", "False"]),
    ("no_gfa", "- gradient-flow adjustment", ["MODEL.SEGDEC.GRADIENT_ADJUSTMENT", "False"]),
    ("no_fos", "- frequency-of-use sampling", ["DATALOADER.SAMPLER_TRAIN", "TrainingSampler"]),
    ("no_dt", "- distance-transform weights", ["MODEL.SEGDEC.WEIGHTED_SEG_LOSS", "False"]),
    ("none", "no extension", ["MODEL.SEGDEC.DYN_BALANCED_LOSS", "False",
                              "MODEL.SEGDEC.GRADIENT_ADJUSTMENT", "False",
                              "DATALOADER.SAMPLER_TRAIN", "TrainingSampler",
                              "MODEL.SEGDEC.WEIGHTED_SEG_LOSS", "False"]),
    # mixed supervision; N = 0 is weakly supervised: dynamic balancing off, as in the paper
    ("n0", "mixed N=0 (image labels only)", ["MODEL.SEGDEC.NUM_SEGMENTED", "0",
                                             "MODEL.SEGDEC.DYN_BALANCED_LOSS", "False"]),
    ("n5", "mixed N=5", ["MODEL.SEGDEC.NUM_SEGMENTED", "5"]),
    ("n20", "mixed N=20", ["MODEL.SEGDEC.NUM_SEGMENTED", "20"]),
    ("nall", "mixed N=all (= full)", ["MODEL.SEGDEC.NUM_SEGMENTED", "-1"]),
    # not in the paper: stochastic weight averaging over the last quarter of training
    ("swa", "full + weight averaging (SWA)", ["SOLVER.SWA.ENABLED", "True"]),
]
# rows whose trainings are identical to another row's: its results are reused, not trained again
SAME_AS = {"nall": "full"}
# (task, metric, with test-time augmentation) -> column
METRICS = [("image", "AP", False), ("image", "AP", True), ("image", "AUROC", False),
           ("image", "detection_rate", False), ("image", "detection_rate", True), ("pixel", "Dice", False)]
COLUMNS = ["AP", "AP (TTA)", "AUROC", "detection rate", "detection rate (TTA)", "Dice"]


def ensure_data(args):
    root = os.path.join(args.out, "datasets", "synthetic_dagm")
    if all(os.path.isdir(os.path.join(root, f"Class{c}")) for c in args.classes):
        return
    cmd = [sys.executable, os.path.join(REPO, "tools", "make_synthetic_dagm.py"), "--out", root,
           "--size", str(args.size), "--train-images", str(args.train_images),
           "--test-images", str(args.test_images), "--classes"] + [str(c) for c in args.classes]
    subprocess.run(cmd, cwd=REPO, check=True)


def iterations(args):
    """``--epochs`` epochs of (2 x defective training images) at batch 1 (an epoch of the
    frequency-of-use sampler: every positive and as many negatives)."""
    return args.iters or args.epochs * 2 * round(0.25 * args.train_images)


def run(key, overrides, cls, seed, args):
    out = os.path.join(args.out, key, f"class{cls}", f"seed{seed}")
    result = os.path.join(out, "results.json")
    if os.path.isfile(result) and not args.force:
        results = json.load(open(result))
        if any(k.endswith("_TTA") for k in results):
            return results
        # trained before the test-time augmentation was evaluated: evaluate the saved model again
        weights = os.path.join(out, "model_final.pth")
        if not os.path.isfile(weights):
            raise SystemExit(f"{result} has no _TTA results and {weights} is missing: rerun with --force")
        return train_net(key, overrides, cls, seed, args, out, ["--eval-only"], ["MODEL.WEIGHTS", weights])
    os.makedirs(out, exist_ok=True)
    return train_net(key, overrides, cls, seed, args, out, [], [])


def train_net(key, overrides, cls, seed, args, out, flags, extra_opts):
    """Run tools/train_net.py (training, or ``flags`` = ["--eval-only"]) for one row / class / seed;
    return its saved results (plain and ``_TTA``)."""
    result = os.path.join(out, "results.json")
    opts = NETWORKS[args.net] + overrides + list(args.opts) + [
        "DATASETS.TRAIN", f"('synthetic_dagm_class{cls}_train',)",
        "DATASETS.TEST", f"('synthetic_dagm_class{cls}_test',)",
        "MODEL.SEGDEC.INPUT_SIZE", f"({args.size}, {args.size})",
        "SOLVER.MAX_ITER", str(iterations(args)), "SEED", str(seed), "OUTPUT_DIR", out,
        "DATALOADER.NUM_WORKERS", "0", "TEST.AUG.ENABLED", "True",
    ] + extra_opts
    cmd = [sys.executable, os.path.join(REPO, "tools", "train_net.py"), "--config-file", CONFIG,
           "--save-results", result] + flags
    threads = str(args.threads)
    env = dict(os.environ, DETECTRON2_DATASETS=os.path.join(os.path.abspath(args.out), "datasets"),
               OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    t0 = time.time()
    log_name = "stdout_eval.txt" if flags else "stdout.txt"
    with open(os.path.join(out, log_name), "w") as log:
        r = subprocess.run(cmd + opts, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
    if r.returncode != 0:
        raise SystemExit(f"{key} class {cls} seed {seed} failed (exit {r.returncode}); see {out}/{log_name}")
    what = "evaluated" if flags else "trained"
    print(f"[segdec_table] {key} class {cls} seed {seed}: {what} in {time.time() - t0:.0f} s", flush=True)
    with open(result) as f:
        metrics = json.load(f)
    write_record(args, key, cls, seed, opts, " ".join(cmd + opts), metrics, time.time() - t0)
    return metrics


def results_dir(args) -> str:
    """Where the JSON records go (module doc)."""
    if args.results:
        return args.results
    if os.path.normpath(args.out) == os.path.normpath(DEFAULT_OUT):
        return os.path.join(REPO, "projects", "SegDecNet", "results", args.net)
    return os.path.join(args.out, "results")


def write_record(args, key, cls, seed, opts, command, metrics, wall_s):
    """One run's JSON record (module doc), written atomically."""
    label = {k: lab for k, lab, _ in ROWS}[key]
    record = {"row": key, "label": label, "class": cls, "seed": seed, "net": args.net, "iters": iterations(args),
              "config": CONFIG, "opts": list(opts), "command": command, "commit": git_commit(),
              "metrics": metrics, "wall_s": wall_s, "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    folder = results_dir(args)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{key}_c{cls}_s{seed}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(record, f, indent=1)
    os.replace(path + ".tmp", path)


def metric(results, task, name, tta=False):
    """``results``: {dataset: {task: metrics}} with the test set and its ``_TTA`` twin."""
    (res,) = [r for k, r in results.items() if k.endswith("_TTA") == tta]
    return float(res[task][name])


def get_parser(description: Optional[str] = None) -> argparse.ArgumentParser:
    """The command line of ``tools/segdec_table.py``."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--out", default=DEFAULT_OUT)
    p.add_argument("--results", default=None,
                   help="folder of the JSON records (default: projects/SegDecNet/results/<net> for the default "
                        "--out, else <out>/results)")
    p.add_argument("--rows", nargs="+", default=[r[0] for r in ROWS])
    p.add_argument("--classes", type=int, nargs="+", default=[1, 2])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--train-images", type=int, default=320)
    p.add_argument("--test-images", type=int, default=160)
    p.add_argument("--epochs", type=int, default=140,
                   help="epochs per training (the paper: 70 on DAGM; the quarter-width CPU network needs 140)")
    p.add_argument("--iters", type=int, default=0, help="override MAX_ITER (0: from --epochs)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per training")
    p.add_argument("--jobs", type=int, default=0, help="trainings at once (0: cores // threads)")
    p.add_argument("--force", action="store_true")
    p.add_argument("--list", action="store_true")
    p.add_argument("--net", choices=sorted(NETWORKS), default="previous",
                   help="network variant: 'previous' (ours before issue 13, the README's tables) or 'authors' "
                        "(the authors' released code, the config default); default: %(default)s")
    p.add_argument("opts", nargs=argparse.REMAINDER,
                   help="KEY VALUE overrides for every row (applied after the row's own; use a new --out)")
    return p


def main(argv: Optional[Sequence[str]] = None, description: Optional[str] = None):
    """Run the rows not done yet and print / write the table (module doc)."""
    args = get_parser(description).parse_args(argv)
    rows = {k: (label, o) for k, label, o in ROWS}
    if args.list:
        for k, label, o in ROWS:
            print(f"{k:8s} {label:35s} {' '.join(o)}")
        return
    unknown = [r for r in args.rows if r not in rows]
    if unknown:
        raise SystemExit(f"unknown rows {unknown}; --list shows them")
    ensure_data(args)
    lines = ["| row | " + " | ".join(COLUMNS) + " | AP per class | AP (TTA) per class |",
             "|---|" + "---|" * (len(COLUMNS) + 2)]
    jobs = args.jobs or max(1, (os.cpu_count() or 1) // args.threads)
    trained = sorted({SAME_AS.get(k, k) for k in args.rows}, key=[r[0] for r in ROWS].index)
    runs = [(key, cls, seed) for key in trained for cls in args.classes for seed in args.seeds]
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {r: pool.submit(run, r[0], rows[r[0]][1], r[1], r[2], args) for r in runs}
        results = {r: f.result() for r, f in futures.items()}
    for key in args.rows:
        if key in SAME_AS:
            results.update({(key, c, s): results[(SAME_AS[key], c, s)] for c in args.classes for s in args.seeds})
    for key in args.rows:
        values = {m: [] for m in METRICS}
        for cls in args.classes:
            for seed in args.seeds:
                for task, name, tta in METRICS:
                    values[(task, name, tta)].append(metric(results[(key, cls, seed)], task, name, tta))
        cells = [f"{sum(v) / len(v):.3f}" for v in values.values()]
        for tta in (False, True):
            per_class = [sum(metric(results[(key, cls, s)], "image", "AP", tta) for s in args.seeds) / len(args.seeds)
                         for cls in args.classes]
            cells.append(" / ".join(f"{v:.3f}" for v in per_class))
        lines.append(f"| {rows[key][0]} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    header = (f"classes {args.classes}, seeds {args.seeds}, {args.size} px, {iterations(args)} iterations, "
              f"({args.epochs} epochs unless --iters), {args.train_images} train / {args.test_images} test images per class\n\n")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(header + table + "\n")
    print(header + table)

