"""
The export table of the README (``tools/benchmark_export.py``, issue 16): every architecture x format x method ->
works (parity with the eager model at the tracing size and two others) or fails (the refusal or the error), and
eager vs exported latency per image on CPU at the config's test size.

Models are the CPU configs of the repository with untrained (seed-0) weights: latency depends on the number of
detections (up to ``TEST.DETECTIONS_PER_IMAGE``), which for an untrained box head is about the maximum, so these
are upper-end numbers for the post-processing part.
"""
import argparse
import json
import os
import platform
import tempfile
import time
from typing import Dict, List, Optional, Sequence

import torch

from .cli import latency_ms
from .deploy import ExportError, check_export, eager_outputs, export_model
from .runtime import ExportedModel

__all__ = ["ARCHITECTURES", "COMBINATIONS", "benchmark_row", "run_benchmark", "format_table", "main"]

# name -> (config file relative to the repository, KEY VALUE overrides)
ARCHITECTURES = {
    "GeneralizedRCNN, DefectStandardROIHeads": ("configs/synthetic/faster_rcnn_R18_FPN_cpu.yaml", []),
    "GeneralizedRCNN, DefectCascadeROIHeads": (
        "configs/synthetic/faster_rcnn_R18_FPN_cpu.yaml",
        ["MODEL.ROI_HEADS.NAME", "DefectCascadeROIHeads", "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", "True"]),
    "TemplateRCNN none": ("configs/RDDN/synthetic/faster_rcnn_R18_FPN_baseline.yaml", []),
    "TemplateRCNN pre (TR-Pre)": ("configs/RDDN/synthetic/faster_rcnn_R18_FPN_pre.yaml", []),
    "TemplateRCNN inter (TR-Inter)": ("configs/RDDN/synthetic/faster_rcnn_R18_FPN_inter.yaml", []),
    "TemplateRCNN ptg (PTG)": ("configs/RDDN/synthetic/faster_rcnn_R18_FPN_ptg.yaml", []),
    "TemplateRCNN none + TR-Post": ("configs/RDDN/synthetic/faster_rcnn_R18_FPN_post.yaml", []),
    "TemplateRCNN ptg + TR-Post": ("configs/RDDN/synthetic/faster_rcnn_R18_FPN_ptg.yaml",
                                   ["MODEL.TEMPLATE.POST", "True"]),
    "TemplateRCNN, RDDNCascadeROIHeads": ("configs/RDDN/synthetic/cascade_rcnn_R18_FPN.yaml", []),
    "TR-Pre + box-supervised masks, refined": (
        "configs/WeakMask/synthetic/mask_rcnn_R18_FPN_box_supervised_refine.yaml", []),
    "TR-Pre + Sinkhorn NMS": ("configs/RDDN/synthetic/faster_rcnn_R18_FPN_pre.yaml",
                              ["MODEL.ROI_HEADS.NMS_TYPE", "sinkhorn"]),
    "SegDecNet": ("configs/SegDecNet/synthetic_dagm_cpu.yaml", []),
}
COMBINATIONS = [("torchscript", "tracing"), ("torchscript", "scripting"), ("onnx", "tracing")]


def _sample(cfg, seed: int = 0) -> Dict[str, torch.Tensor]:
    """A blocky random input at the config's test size (R-CNN: MIN_SIZE_TEST x 1.5 MIN_SIZE_TEST, with a
    template; SegDecNet: MODEL.SEGDEC.INPUT_SIZE)."""
    if cfg.MODEL.META_ARCHITECTURE == "SegDecNet":
        (h, w), c = cfg.MODEL.SEGDEC.INPUT_SIZE, cfg.MODEL.SEGDEC.IN_CHANNELS
    else:
        h, c = cfg.INPUT.MIN_SIZE_TEST, 3
        w = min(int(h * 1.5), cfg.INPUT.MAX_SIZE_TEST)
    g = torch.Generator().manual_seed(seed)

    def image():
        small = torch.randint(0, 256, (1, c, h // 8 + 1, w // 8 + 1), generator=g).float()
        return torch.nn.functional.interpolate(small, scale_factor=8, mode="nearest")[0, :, :h, :w].to(torch.uint8)

    out = {"image": image()}
    if cfg.MODEL.META_ARCHITECTURE != "SegDecNet":
        out["template"] = image()
    return out


def benchmark_row(cfg, fmt: str, method: str, runs: int = 10, output_dir: Optional[str] = None) -> Dict:
    """
    One cell of the table.

    Returns:
        ``{"status": "works" | "fails", "why": reason or None, "eager_ms", "exported_ms" ({"median", "min"} per
        image over ``runs`` alternating calls after 3 warm-up calls, :func:`~.cli.latency_ms`), "parity",
        "size"}``.
    """
    from detectron2.modeling import build_model

    import defect_det  # noqa: F401  (registers every architecture)

    try:
        check_export(cfg, fmt, method)
    except ExportError as e:
        return {"status": "fails", "why": str(e)}
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    sample = _sample(cfg)
    out_dir = output_dir or tempfile.mkdtemp(prefix="export_bench_")
    try:
        info = export_model(cfg, model, sample, out_dir, fmt, method)
    except Exception as e:  # an exporter error is a result of the table, not a crash of the tool
        return {"status": "fails", "why": f"{type(e).__name__}: {e}"}
    exported = ExportedModel(info["path"])
    lat = latency_ms({"eager": lambda: eager_outputs(model, sample), "exported": lambda: exported.run(sample)}, runs)
    return {"status": "works", "why": None, "eager_ms": lat["eager"], "exported_ms": lat["exported"],
            "parity": info["parity"], "size": [int(x) for x in sample["image"].shape[-2:]]}


def run_benchmark(repo: str, names: Optional[Sequence[str]] = None, runs: int = 10,
                  combinations: Sequence = tuple(COMBINATIONS), log=print) -> List[Dict]:
    """Every (architecture, format, method) of ``names`` (default: all of :data:`ARCHITECTURES`)."""
    from ..config import load_defect_cfg

    rows = []
    for name in names or list(ARCHITECTURES):
        cfg_file, opts = ARCHITECTURES[name]
        for fmt, method in combinations:
            cfg = load_defect_cfg(os.path.join(repo, cfg_file), list(opts) + ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""])
            row = {"architecture": name, "config": cfg_file, "format": fmt, "method": method}
            row.update(benchmark_row(cfg, fmt, method, runs))
            log(format_table([row], header=False))
            rows.append(row)
    return rows


def _why(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def format_table(rows: Sequence[Dict], header: bool = True) -> str:
    """Markdown: architecture | format | method | result | eager ms | exported ms (median, min in brackets)."""
    lines = []
    if header:
        lines += ["| architecture | format | method | result | eager ms / image, median (min) | "
                  "exported ms / image, median (min) |", "|---|---|---|---|---|---|"]
    for r in rows:
        if r["status"] == "works":
            parity = r.get("parity")
            worst = (max(max(d.values()) for d in parity.values()) if isinstance(parity, dict) else None)
            res = "works" + (f" (max diff {worst:.1g})" if worst is not None else "")
            lat = [f"{r[k]['median']:.0f} ({r[k]['min']:.0f})" for k in ("eager_ms", "exported_ms")]
        else:
            res, lat = "fails: " + _why(r["why"]), ["", ""]
        lines.append(f"| {r['architecture']} | {r['format']} | {r['method']} | {res} | {lat[0]} | {lat[1]} |")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None, description: Optional[str] = None) -> List[Dict]:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--architectures", nargs="+", default=None, choices=list(ARCHITECTURES), metavar="NAME",
                   help="rows to run (default: all): " + "; ".join(ARCHITECTURES))
    p.add_argument("--runs", type=int, default=10, help="timed calls per model, median (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default: %(default)s)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write every row with the machine and time")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    start = time.time()
    rows = run_benchmark(repo, args.architectures, args.runs)
    print()
    print(format_table(rows))
    print(f"\n{len(rows)} cells in {time.time() - start:.0f} s, {args.threads} thread(s), torch {torch.__version__}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"threads": args.threads, "runs": args.runs, "torch": torch.__version__,
                       "cpu_count": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M"), "rows": rows},
                      f, indent=2, default=str)
    return rows
