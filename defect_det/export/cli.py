"""The command line of ``tools/export_model.py`` (issue 16), after Detectron2's ``tools/deploy/export_model.py``:
export a trained model, check it against the eager model, optionally time both and evaluate the exported one."""
import argparse
import json
import os
import time
from typing import Callable, Dict, Optional, Sequence

import torch

from .deploy import EXPORT_FORMATS, EXPORT_METHODS, ExportError, check_export, eager_outputs, export_model

__all__ = ["get_parser", "main", "latency_ms", "sample_input", "evaluate"]


def get_parser(description: Optional[str] = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, metavar="FILE", help="the model's config")
    p.add_argument("--format", choices=EXPORT_FORMATS, default="torchscript", help="output format (default: %(default)s)")
    p.add_argument("--export-method", choices=EXPORT_METHODS, default="tracing",
                   help="how to export (default: %(default)s)")
    p.add_argument("--output", required=True, metavar="DIR", help="gets model.ts / model.onnx and export_info.json")
    p.add_argument("--sample-image", default=None, metavar="FILE",
                   help="tracing example (default: the first image of DATASETS.TEST[0])")
    p.add_argument("--sample-template", default=None, metavar="FILE", help="its template (template models)")
    p.add_argument("--run-eval", action="store_true",
                   help="evaluate the exported and the eager model on --eval-dataset with our evaluator")
    p.add_argument("--eval-dataset", default=None, metavar="NAME",
                   help="registered dataset of --run-eval (default: DATASETS.TEST[0])")
    p.add_argument("--benchmark", type=int, default=0, metavar="N",
                   help="time eager and exported model on the sample, median of N runs (default: no timing)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides, e.g. MODEL.WEIGHTS model.pth")
    return p


def sample_input(cfg, predictor, image: Optional[str] = None, template: Optional[str] = None) -> Dict:
    """The tracing example: ``image`` (+ ``template``) through the predictor's test-time mapping, or the first
    input of ``DATASETS.TEST[0]``'s test loader (Detectron2's convention)."""
    if image is not None:
        return predictor.inputs(image, template)[0]
    if not cfg.DATASETS.TEST:
        raise ExportError("no --sample-image and DATASETS.TEST is empty: give a tracing example")
    from ..engine.trainer import DefectTrainer

    loader = DefectTrainer.build_test_loader(cfg, cfg.DATASETS.TEST[0])
    return next(iter(loader))[0]


def latency_ms(fns: Dict[str, Callable[[], object]], runs: int, warmup: int = 3) -> Dict[str, Dict[str, float]]:
    """
    Wall time per call of each function, in milliseconds, the functions called in turn (a, b, a, b, ...) so that
    a busy machine slows all of them alike; ``warmup`` calls of each first (TorchScript optimises a graph on its
    first calls).

    Returns:
        {name: {"median": ms, "min": ms}} over ``runs`` calls each.
    """
    times = {k: [] for k in fns}
    with torch.no_grad():
        for _ in range(warmup):
            for fn in fns.values():
                fn()
        for _ in range(max(1, runs)):
            for k, fn in fns.items():
                t = time.perf_counter()
                fn()
                times[k].append((time.perf_counter() - t) * 1000.0)
    return {k: {"median": sorted(v)[len(v) // 2], "min": min(v)} for k, v in times.items()}


def evaluate(cfg, model, dataset_name: str, output_dir: str) -> Dict:
    """``model`` (eager, or an :class:`~.runtime.ExportedModel`) on ``dataset_name`` through our test loader and
    ``TEST.EVALUATOR`` (single process); returns the evaluator's results."""
    from detectron2.evaluation import inference_on_dataset

    from ..engine.trainer import DefectTrainer
    from ..evaluation.build import build_defect_evaluator

    loader = DefectTrainer.build_test_loader(cfg, dataset_name)
    evaluator = build_defect_evaluator(cfg, dataset_name, output_dir=output_dir, distributed=False)
    return inference_on_dataset(model, loader, evaluator)


def _flat(results: Dict, prefix: str = "") -> Dict[str, float]:
    out = {}
    for k, v in results.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}/"))
        elif isinstance(v, (int, float)):
            out[prefix + k] = float(v)
    return out


def _metric_diff(a: Optional[float], b: Optional[float]) -> float:
    """|a - b| of one metric; 0 for two NaN (e.g. AP of a category without ground truth), inf when only one is
    NaN or missing."""
    if a is None or b is None:
        return float("inf")
    if a != a or b != b:
        return 0.0 if (a != a and b != b) else float("inf")
    return abs(a - b)


def main(argv: Optional[Sequence[str]] = None, description: Optional[str] = None) -> Dict:
    """Parse ``argv``, export, check, and (``--benchmark`` / ``--run-eval``) time and evaluate; returns the
    export info with ``latency_ms`` and ``eval`` when asked."""
    args = get_parser(description).parse_args(argv)
    import defect_det  # noqa: F401  (registers everything)
    from ..config import load_defect_cfg
    from ..inference.predictor import DefectPredictor
    from .runtime import ExportedModel

    cfg = load_defect_cfg(args.config_file, args.opts)
    try:
        check_export(cfg, args.format, args.export_method)
    except ExportError as e:
        raise SystemExit(f"error: {e}")
    if not cfg.MODEL.WEIGHTS:
        print("[export] MODEL.WEIGHTS is empty: exporting the untrained model (give MODEL.WEIGHTS model.pth)")
    predictor = DefectPredictor(cfg)
    model = predictor.model
    sample = sample_input(cfg, predictor, args.sample_image, args.sample_template)
    try:
        info = export_model(cfg, model, sample, args.output, args.format, args.export_method)
    except ExportError as e:
        raise SystemExit(f"error: {e}")
    print(f"[export] {info['path']}: inputs {info['inputs']} -> outputs {info['outputs']} "
          f"({args.format}, {args.export_method}, traced at {info['traced_size'][0]}x{info['traced_size'][1]})")
    if isinstance(info["parity"], dict):
        for size, diff in info["parity"].items():
            print(f"[export] parity at {size}: max |exported - eager| " + ", ".join(f"{k} {v:.2g}" for k, v in diff.items()))
    else:
        print(f"[export] parity {info['parity']}")

    if args.benchmark > 0:
        exported = ExportedModel(info["path"])
        lat = latency_ms({"eager": lambda: eager_outputs(model, sample), "exported": lambda: exported.run(sample)},
                         args.benchmark)
        info["latency_ms"] = lat
        print(f"[export] latency per image ({args.benchmark} calls each, alternating, {torch.get_num_threads()} "
              f"thread(s)): eager {lat['eager']['median']:.1f} ms (min {lat['eager']['min']:.1f}), exported "
              f"{lat['exported']['median']:.1f} ms (min {lat['exported']['min']:.1f})")

    if args.run_eval:
        dataset = args.eval_dataset or (cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else None)
        if dataset is None:
            raise SystemExit("error: --run-eval needs --eval-dataset or DATASETS.TEST")
        exported = ExportedModel(info["path"])
        res_exp = evaluate(cfg, exported, dataset, os.path.join(args.output, "eval_exported"))
        res_eager = evaluate(cfg, model, dataset, os.path.join(args.output, "eval_eager"))
        a, b = _flat(res_exp), _flat(res_eager)
        worst = max((_metric_diff(a.get(k), b.get(k)) for k in set(a) | set(b)), default=0.0)
        info["eval"] = {"dataset": dataset, "exported": res_exp, "eager": res_eager, "max_abs_diff": worst}
        print(f"[export] --run-eval on {dataset}: exported {json.dumps(a)}")
        print(f"[export] --run-eval on {dataset}: eager    {json.dumps(b)}")
        print(f"[export] largest |exported - eager| over the metrics: {worst:.3g}")
        with open(os.path.join(args.output, "eval.json"), "w") as f:
            json.dump(info["eval"], f, indent=2, default=float)
    return info
