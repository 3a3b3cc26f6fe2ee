"""Results as data: the runner behind every benchmark table (``tools/recipe_search.py``, ``tools/rddn_table.py``).

A table is a :class:`TableSpec`: rows (key -> (label, config, overrides)), evaluation-only rows (a row that
trains nothing but evaluates another row's weights with its own config), warm-started rows (a row that
fine-tunes another row's trained weights), the validation dataset every
choice is made on and the test datasets evaluated once per chosen row, where the JSON records go and how
the table is rendered. The runner

- trains each (row, seed) through ``tools/train_net.py`` as a subprocess with ``--threads`` intra-op
  threads and no DataLoader workers, ``--jobs`` at a time, resuming an interrupted training
  (``--resume``, checkpoints every 250 iterations);
- writes one JSON record per (row, seed) — row, label, config, overrides, seed, iterations, threads,
  processes sharing the cores, git commit, command, metrics (with their bootstrap intervals), wall time,
  date — to ``<results>/<row>_s<seed>.json`` (``--final``: ``<results>/final/``), atomically;
- never recomputes a row whose record exists (``--force`` does), so a table run interrupted by the end of
  a session continues where it stopped;
- renders the table from the records alone (``--render``).

Two optional hooks of a :class:`TableSpec` serve tables whose rows are more than a detector's box AP:
``post`` computes extra metrics of a finished row from its weights (e.g. mask IoU on the ground-truth boxes),
merged into the record per dataset; ``computed`` rows train nothing and are computed in-process (e.g. a
network-free reference), recorded in the same schema. Metric names in the rendered tables are paths
``"<task>.<metric>"`` (``"segm.AP50"``, ``"gt_boxes.mIoU"``); a bare name is a ``bbox`` metric.

``--final`` evaluates a trained row's ``model_final.pth`` on the test datasets, without training: use it
once per row, after the row was chosen on validation.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from .tables import git_commit, schedule_opts

__all__ = ["REPO", "Row", "TableSpec", "compute_row", "eval_datasets", "finish_row", "fmt_ap", "get_parser",
           "load_records", "main", "metric_of", "publish_table", "refresh_ci", "result_path", "row_weights", "run_rows", "seed_table",
           "start_row", "summarize", "versus", "write_readme_section", "write_record"]

# the repository root of a source checkout: rows run there (configs, tools/train_net.py, default paths)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

Row = Tuple[str, str, List[str]]  # (label: what differs, config file, KEY VALUE overrides)


@dataclass
class TableSpec:
    """What a table runs and where its records go (module doc)."""

    name: str                                    # log prefix and tool name
    rows: Dict[str, Row]                         # key -> row, in table order
    val: str                                     # the validation dataset (every choice)
    test: Tuple[str, ...]                        # the test datasets (``--final``, once per chosen row)
    results: str                                 # default folder of the JSON records (relative to REPO)
    out: str                                     # default folder of the training runs
    render: Callable[["TableSpec", argparse.Namespace], str]  # records -> markdown (also writes it)
    eval_only: Dict[str, str] = field(default_factory=dict)   # row -> the row whose weights it evaluates
    init_from: Dict[str, str] = field(default_factory=dict)   # row -> the row whose weights it starts from
    iters: int = 1000                            # default training iterations of a row
    # (spec, args, key, seed, run dir, weights, datasets) -> {dataset: {task: {metric: value}}}, merged into the
    # finished row's metrics (raise SystemExit to fail the row)
    post: Optional[Callable[..., Dict[str, dict]]] = None
    # row -> (args, key, seed, datasets) -> ({dataset: {task: {metric: value}}}, command that reproduces it):
    # rows computed in-process, without training or weights, and independent of the seed (recorded as seed 0 only)
    computed: Dict[str, Callable[..., Tuple[Dict[str, dict], str]]] = field(default_factory=dict)


def _iters(args, opts):
    """Training iterations of a row: ``--iters`` unless the row's overrides set SOLVER.MAX_ITER."""
    opts = list(opts)
    return int(opts[opts.index("SOLVER.MAX_ITER") + 1]) if "SOLVER.MAX_ITER" in opts else args.iters


def result_path(args, key, seed):
    """``<args.results>[/final]/<key>_s<seed>.json``: the JSON record of one row and seed."""
    return os.path.join(args.results, "final" if args.final else "", f"{key}_s{seed}.json")


def row_weights(spec: TableSpec, args, key: str, seed: int) -> str:
    """The ``model_final.pth`` a row's evaluation reads: its own training's, or that of the row it
    re-evaluates (``eval_only``)."""
    return os.path.join(args.out, f"{spec.eval_only.get(key, key)}_s{seed}", "model_final.pth")


def eval_datasets(spec: TableSpec, args) -> Tuple[str, ...]:
    """The datasets a row is scored on: the test splits with ``--final``, else the validation split."""
    return tuple(spec.test) if args.final else (spec.val,)


def start_row(spec: TableSpec, args, key: str, seed: int):
    """Start one row's training (or, with ``--final`` or for an evaluation-only row, its evaluation) as a
    subprocess; returns (Popen, out dir, command, start time)."""
    label, cfg, opts = spec.rows[key]
    own_dir = os.path.join(args.out, f"{key}_s{seed}")
    out = os.path.join(own_dir, "final") if args.final else own_dir
    os.makedirs(out, exist_ok=True)
    cmd = [sys.executable, os.path.join("tools", "train_net.py"), "--config-file", cfg,
           "--save-results", os.path.join(out, "results.json")]
    cmd += ["OUTPUT_DIR", out, "SEED", str(seed), "DATALOADER.NUM_WORKERS", "0"]
    cmd += schedule_opts(args.iters) + ["SOLVER.CHECKPOINT_PERIOD", "250"] + list(opts) + list(args.opts)
    if args.final or key in spec.eval_only:
        weights = row_weights(spec, args, key, seed)  # an evaluation-only row reads its source row's
        if not os.path.isfile(weights):
            base = spec.eval_only.get(key, key)
            raise SystemExit(f"error: {weights} missing: train row {base!r} (seed {seed}) first, without --final")
        cmd.insert(2, "--eval-only")
        test = str(tuple(spec.test)).replace(" ", "") if args.final else f"('{spec.val}',)"
        cmd += ["MODEL.WEIGHTS", weights, "DATASETS.TEST", test]
    else:
        cmd.insert(2, "--resume")  # its own last checkpoint if any, else MODEL.WEIGHTS
        if key in spec.init_from:  # warm start: fine-tune another row's trained weights
            src = os.path.join(args.out, f"{spec.init_from[key]}_s{seed}", "model_final.pth")
            if not os.path.isfile(src):
                raise SystemExit(f"error: {src} missing: train row {spec.init_from[key]!r} (seed {seed}) first")
            cmd += ["MODEL.WEIGHTS", src]
        cmd += ["DATASETS.TEST", f"('{spec.val}',)"]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    log = open(os.path.join(out, "stdout.log"), "a")
    print(f"[{spec.name}] start {key} seed {seed}: {' '.join(cmd)}", flush=True)
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT), out, cmd, time.time()


def write_record(spec: TableSpec, args, key: str, seed: int, metrics: dict, command: str, wall_s: float,
                 iters: int) -> str:
    """Write the JSON record of one row and seed (module doc) atomically to :func:`result_path`; returns it."""
    label, cfg, opts = spec.rows[key]
    record = {
        "row": key, "label": label, "config": cfg, "opts": list(opts) + list(args.opts), "seed": seed,
        "iters": iters, "threads": args.threads, "jobs": args.sharing or args.jobs, "commit": git_commit(),
        "command": command.replace(sys.executable, "python"),  # no machine path in a committed record
        "metrics": metrics, "wall_s": wall_s, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    path = result_path(args, key, seed)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(record, f, indent=1)
    os.replace(path + ".tmp", path)
    print(f"[{spec.name}] done {key} seed {seed}: {wall_s / 60:.1f} min -> {path}", flush=True)
    return path


def _merge(metrics: dict, extra: Dict[str, dict]) -> dict:
    """``metrics[dataset][task] = ...`` for every dataset and task of ``extra``."""
    for ds, tasks in extra.items():
        metrics.setdefault(ds, {}).update(tasks)
    return metrics


def finish_row(spec: TableSpec, args, key, seed, proc, out, cmd, t0) -> bool:
    """Wait for a row started by :func:`start_row`, run the spec's ``post`` hook on its weights, and write its
    JSON record (:func:`write_record`); returns False (and writes nothing) when the run or the hook failed or
    the run left no ``results.json``."""
    rc = proc.wait()
    res_file = os.path.join(out, "results.json")
    if rc != 0 or not os.path.isfile(res_file):
        print(f"[{spec.name}] {key} seed {seed} FAILED (exit {rc}); see {out}/stdout.log", flush=True)
        return False
    with open(res_file) as f:
        metrics = json.load(f)
    if spec.post is not None:
        try:
            _merge(metrics, spec.post(spec, args, key, seed, out, row_weights(spec, args, key, seed),
                                      eval_datasets(spec, args)))
        except SystemExit as e:
            print(f"[{spec.name}] {key} seed {seed} FAILED after training: {e}", flush=True)
            return False
    write_record(spec, args, key, seed, metrics, " ".join(cmd), time.time() - t0, _iters(args, spec.rows[key][2]))
    return True


def compute_row(spec: TableSpec, args, key: str, seed: int) -> bool:
    """Compute a ``computed`` row in-process and write its record (iterations 0)."""
    t0 = time.time()
    print(f"[{spec.name}] compute {key} seed {seed} on {eval_datasets(spec, args)}", flush=True)
    metrics, command = spec.computed[key](args, key, seed, eval_datasets(spec, args))
    write_record(spec, args, key, seed, metrics, command, time.time() - t0, 0)
    return True


def fmt_ap(m: dict, k: str) -> str:
    """``AP [low, high]`` of metric ``k`` of the metrics dict ``m`` (``-`` when missing)."""
    v = m.get(k)
    if v is None:
        return "-"
    lo, hi = m.get(f"{k}_ci_low"), m.get(f"{k}_ci_high")
    return f"{v:.1f}" + (f" [{lo:.1f}, {hi:.1f}]" if lo is not None and hi is not None else "")


def metric_of(metrics_ds: dict, path: str) -> Tuple[dict, str]:
    """(task dict, metric name) of the metric path ``"<task>.<metric>"`` (bare name: ``bbox``) in one
    dataset's metrics; the task dict is empty when missing."""
    task, _, name = path.rpartition(".")
    return metrics_ds.get(task or "bbox", {}) or {}, name


def summarize(records: List[dict], dataset: str, metric: str = "AP50") -> Dict[str, dict]:
    """Per row: ``{"values": [...] per seed, "mean", "std" (0 with one seed), "n", "record": the last}``
    of the metric path ``metric`` (:func:`metric_of`) on ``dataset``."""
    out: Dict[str, dict] = {}
    for r in records:
        m, name = metric_of(r["metrics"].get(dataset, {}), metric)
        if name not in m or m[name] is None or m[name] != m[name]:  # missing or NaN
            continue
        row = out.setdefault(r["row"], {"values": [], "record": r})
        row["values"].append(float(m[name]))
        row["record"] = r
    for row in out.values():
        v = row["values"]
        row.update(n=len(v), mean=statistics.fmean(v), std=statistics.stdev(v) if len(v) > 1 else 0.0)
    return out


def _cell(s: Optional[dict], dataset: str, metric: str, digits: int) -> str:
    if s is None:
        return "-"
    if s["n"] == 1:  # one seed: its bootstrap interval over images, where there is one
        m, name = metric_of(s["record"]["metrics"][dataset], metric)
        return fmt_ap(m, name) if digits == 1 else f"{m[name]:.{digits}f}"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f} (n={s['n']})"


def versus(s: Optional[dict], base: Optional[dict]) -> str:
    """The difference of the means to the reference row and whether it counts: "beats" / "worse" when it
    exceeds both rows' standard deviations over seeds (>= 2 seeds each), else "within noise"; "(1 seed)"."""
    if s is None or base is None or s is base:
        return ""
    diff = s["mean"] - base["mean"]
    if s["n"] < 2 or base["n"] < 2:
        return f"{diff:+.1f} (1 seed)"
    noise = max(s["std"], base["std"])
    verdict = "beats" if diff > noise else ("worse" if -diff > noise else "within noise")
    return f"{diff:+.1f} ({verdict})"


def seed_table(spec: TableSpec, records: List[dict], datasets: Sequence[str], reference: str, title: str,
               metrics: Sequence[Tuple[str, str, int]] = (("AP50", "AP50", 1), ("AP50_agnostic", "any class", 1)),
               compare: str = "AP50", compare_name: str = "AP50") -> List[str]:
    """Markdown lines of a table over the spec's rows: per dataset, each of ``metrics`` (metric path, column
    name, decimals) as value [interval] (one seed) or mean ± std (several), then the metric ``compare``
    (named ``compare_name``) against row ``reference`` (:func:`versus`)."""
    cols = [(ds, key, name, digits) for ds in datasets for key, name, digits in metrics]
    stats = {(ds, key): summarize(records, ds, key) for ds, key, _, _ in cols}
    for ds in datasets:
        stats.setdefault((ds, compare), summarize(records, ds, compare))
    short = {ds: ds.replace("synthetic_fabric_", "") for ds in datasets}
    head = ["row", "iters"] + [f"{name} {short[ds]}" for ds, _, name, _ in cols] + \
           [f"{compare_name} vs {reference} ({short[ds]})" for ds in datasets]
    lines = [title, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, (label, _, _) in spec.rows.items():
        row_stats = [stats[(ds, k)].get(key) for ds, k, _, _ in cols]
        if not any(row_stats):
            continue
        iters = next(s["record"]["iters"] for s in row_stats if s)
        src = f" (weights of {spec.eval_only[key]})" if key in spec.eval_only else (
            f" (from {spec.init_from[key]})" if key in spec.init_from else (
                " (no network)" if key in spec.computed else ""))
        cells = [_cell(s, ds, k, d) for s, (ds, k, _, d) in zip(row_stats, cols)]
        vs = [versus(stats[(ds, compare)].get(key), stats[(ds, compare)].get(reference)) for ds in datasets]
        lines.append(f"| `{key}`: {label}{src} | {iters} | " + " | ".join(cells + vs) + " |")
    return lines


def write_readme_section(readme: str, mark: str, text: str) -> bool:
    """Replace what lies between the lines ``<!-- <mark>:begin -->`` and ``<!-- <mark>:end -->`` of the
    markdown file ``readme`` by ``text`` (written atomically); False, and nothing written, when the file or
    the markers are missing."""
    begin, end = f"<!-- {mark}:begin -->", f"<!-- {mark}:end -->"
    if not os.path.isfile(readme):
        return False
    with open(readme) as f:
        s = f.read()
    i, j = s.find(begin), s.find(end)
    if i < 0 or j < i:
        print(f"[table_runner] {readme} has no {begin} ... {end} section: README not updated")
        return False
    s = s[: i + len(begin)] + "\n" + text.strip() + "\n" + s[j:]
    with open(readme + ".tmp", "w") as f:
        f.write(s)
    os.replace(readme + ".tmp", readme)
    return True


def publish_table(spec: TableSpec, args, text: str, md_name: str, readme: str, mark: str) -> str:
    """Write a rendered table to ``<results>/../<md_name>``, into the README section ``mark`` of ``readme`` when
    ``args.results`` is the spec's default folder (:func:`write_readme_section`), and print it; returns it."""
    folder = os.path.dirname(args.results.rstrip("/"))
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, md_name), "w") as f:
        f.write(text + "\n")
    if os.path.abspath(args.results) == os.path.abspath(spec.results):
        write_readme_section(readme, mark, text)
    print(text)
    return text


def load_records(spec: TableSpec, folder: str) -> List[dict]:
    """Every JSON record of ``folder``, in the spec's row order, then by seed."""
    recs = []
    if os.path.isdir(folder):
        for name in sorted(os.listdir(folder)):
            if name.endswith(".json"):
                with open(os.path.join(folder, name)) as f:
                    recs.append(json.load(f))
    order = {k: i for i, k in enumerate(spec.rows)}
    recs.sort(key=lambda r: (order.get(r["row"], len(order)), r["seed"]))
    return recs


def run_rows(spec: TableSpec, args) -> List[Tuple[str, int]]:
    """Run every (row, seed) of ``args.rows`` x ``args.seeds`` without a record (all with ``--force``),
    ``args.jobs`` at a time; returns the failed ones."""
    keys = list(spec.rows) if args.rows is None else args.rows
    unknown = [k for k in keys if k not in spec.rows]
    if unknown:
        raise SystemExit(f"error: unknown rows {unknown}; known: {list(spec.rows)}")
    # computed rows do not depend on the seed: recorded once, as seed 0
    todo = [(k, s) for s in args.seeds for k in keys if not (k in spec.computed and s != 0)
            and (args.force or not os.path.isfile(result_path(args, k, s)))]
    # an evaluation-only or warm-started row needs its source row's weights: run sources first
    deps = {**spec.eval_only, **spec.init_from}
    todo.sort(key=lambda ks: ks[0] in deps)
    print(f"[{spec.name}] {len(todo)} row(s) to run: {todo}", flush=True)
    running, failed = [], []
    for k, s in [ks for ks in todo if ks[0] in spec.computed]:  # no training: computed here, first
        todo.remove((k, s))
        if not compute_row(spec, args, k, s):
            failed.append((k, s))
    while todo or running:
        while todo and len(running) < args.jobs:
            k, s = todo[0]
            src = deps.get(k)
            if src is not None and any(r[:2] == (src, s) for r in running):
                break  # wait for the row whose weights it evaluates
            todo.pop(0)
            running.append((k, s, *start_row(spec, args, k, s)))
        time.sleep(5)
        for item in list(running):
            if item[2].poll() is not None:
                running.remove(item)
                if not finish_row(spec, args, *item):
                    failed.append(item[:2])
    return failed


def get_parser(spec: TableSpec, description: Optional[str] = None) -> argparse.ArgumentParser:
    """The command line shared by the table tools (``description``: the tool's ``--help`` text)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", nargs="*", default=None, help="row keys, started in this order (default: all)")
    p.add_argument("--seeds", type=int, nargs="*", default=[0])
    p.add_argument("--iters", type=int, default=spec.iters,
                   help="training iterations of every row (default: %(default)s)")
    p.add_argument("--jobs", type=int, default=2, help="rows trained at the same time (default: %(default)s)")
    p.add_argument("--sharing", type=int, default=0,
                   help="CPU-bound processes on the machine, recorded as 'rows at once' (default: --jobs); "
                        "e.g. 2 when one row trains beside a pre-training run")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads per row (default: %(default)s)")
    p.add_argument("--out", default=spec.out)
    p.add_argument("--results", default=spec.results)
    p.add_argument("--force", action="store_true", help="rerun rows whose results exist")
    p.add_argument("--list", action="store_true", help="list the rows, then exit")
    p.add_argument("--render", action="store_true", help="only render the table from the results")
    p.add_argument("--refresh-ci", action="store_true",
                   help="recompute every stored row's AP50 intervals from its saved detections, then render")
    p.add_argument("--final", action="store_true",
                   help="evaluate trained rows on the TEST splits (once, for rows chosen on validation)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="extra KEY VALUE overrides for every row")
    return p


def refresh_ci(spec: TableSpec, args):
    """Recompute the AP50 intervals of every stored row from its saved detections
    (``<out>/<row>_s<seed>[/final]/inference/<dataset>/coco_instances_results.json``) with the current
    :func:`~defect_det.evaluation.bootstrap_ap50` (e.g. after a change of the interval method)."""
    import contextlib
    import io

    from detectron2.data import MetadataCatalog
    from pycocotools.coco import COCO

    from ..evaluation import bootstrap_ap50

    for final in (False, True):
        folder = os.path.join(args.results, "final") if final else args.results
        for rec in load_records(spec, folder):
            run = os.path.join(args.out, f"{rec['row']}_s{rec['seed']}", "final" if final else "")
            for ds, res in rec["metrics"].items():
                dets = os.path.join(run, "inference", ds, "coco_instances_results.json")
                if not os.path.isfile(dets):
                    print(f"[{spec.name}] {dets} missing: interval of {rec['row']} on {ds} kept")
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
            print(f"[{spec.name}] intervals refreshed: {path}")


def main(spec: TableSpec, argv: Optional[Sequence[str]] = None, description: Optional[str] = None):
    """Parse ``argv`` (default ``sys.argv[1:]``) and, from :data:`REPO`: list the rows (``--list``),
    render the table (``--render``; returns it as text), refresh the intervals (``--refresh-ci``), or run
    the rows not done yet, ``--jobs`` at a time, then render. Unknown or failed rows raise ``SystemExit``."""
    args = get_parser(spec, description).parse_args(argv)
    os.chdir(REPO)
    if args.list:
        for key, (label, cfg, opts) in spec.rows.items():
            src = f"  [evaluates the weights of {spec.eval_only[key]}]" if key in spec.eval_only else (
                f"  [starts from the weights of {spec.init_from[key]}]" if key in spec.init_from else (
                    "  [computed, no network]" if key in spec.computed else ""))
            print(f"{key:22s} {cfg:58s} {' '.join(opts)}  # {label}{src}")
        return None
    if args.refresh_ci:
        refresh_ci(spec, args)
    if args.render or args.refresh_ci:
        return spec.render(spec, args)
    failed = run_rows(spec, args)
    spec.render(spec, args)
    if failed:
        raise SystemExit(f"error: failed rows {failed}")
    return None
