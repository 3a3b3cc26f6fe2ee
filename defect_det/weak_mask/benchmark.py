"""Inference time of the entropy-constrained mask refinement, as a ratio to the mask head: what
``tools/benchmark_weak_mask.py`` runs (the tool's docstring defines the three timed rows).

:func:`build` makes the model (``MODEL.MASK_ON``, ``BoxSupervisedMaskHead`` with
``REFINE.ENABLED``, random weights), :func:`make_inputs` one smooth random image + template and K
random detections, :func:`main` times the rows :data:`ROWS` interleaved within each repetition and
prints / returns the table (milliseconds per image, median, ratio to the mask head). Never asserted
on in tests beyond the table's structure (timings depend on the machine and its load).
"""
import argparse
import json
import os
import shlex
import statistics
import sys
import time
from typing import Optional, Sequence

import torch

from ..modeling.roi_heads import PIXELS_KEY, TEMPLATE_PIXELS_KEY, TEMPLATE_PIXELS_VALID_KEY
from ..utils.benchmark import cpu_model, torch_threads

__all__ = ["DEFAULT_CONFIG", "ROWS", "build", "get_parser", "main", "make_inputs", "parse_args"]

# the repository root of a source checkout: a relative --config is found there
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DEFAULT_CONFIG = "configs/RDDN/synthetic/faster_rcnn_R18_FPN_baseline.yaml"
ROWS = ("mask head", "refinement", "mask head + refinement")


def get_parser(description: Optional[str] = None) -> argparse.ArgumentParser:
    """The command line of ``tools/benchmark_weak_mask.py`` (``description``: its ``--help`` text)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument("--size", type=int, nargs=2, default=(256, 320), metavar=("H", "W"))
    p.add_argument("--detections", type=int, default=50, help="K detections per image")
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch threads (0 = leave as is)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", default="", help="also write the results here")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="config overrides KEY VALUE ...")
    return p


def parse_args(argv: Optional[Sequence[str]] = None, description: Optional[str] = None) -> argparse.Namespace:
    """:func:`get_parser`'s options of ``argv`` (default ``sys.argv[1:]``); ``--iters`` < 1,
    ``--warmup`` < 0 or ``--detections`` < 1 exit with a usage error."""
    p = get_parser(description)
    args = p.parse_args(argv)
    if args.iters < 1:
        p.error(f"--iters must be >= 1, got {args.iters}")
    if args.warmup < 0:
        p.error(f"--warmup must be >= 0, got {args.warmup}")
    if args.detections < 1:
        p.error(f"--detections must be >= 1, got {args.detections}")
    return args


def build(args):
    """``(cfg, model)``: ``args.config`` (relative to :data:`REPO` unless absolute) with the box-supervised
    mask head and refinement switched on, ``args.opts`` on top, built with random weights (seed
    ``args.seed``) in eval mode. Raises ``ValueError`` unless the meta-architecture is TemplateRCNN."""
    from detectron2.modeling import build_model

    from ..config import get_defect_cfg

    cfg = get_defect_cfg()
    path = args.config if os.path.isabs(args.config) else os.path.join(REPO, args.config)
    cfg.merge_from_file(path)
    cfg.merge_from_list(["MODEL.MASK_ON", "True", "MODEL.ROI_MASK_HEAD.NAME", "BoxSupervisedMaskHead",
                         "MODEL.ROI_MASK_HEAD.BOX_SUPERVISED", "True", "MODEL.ROI_MASK_HEAD.REFINE.ENABLED", "True",
                         "MODEL.DEVICE", args.device])
    cfg.merge_from_list(list(args.opts))
    if cfg.MODEL.META_ARCHITECTURE != "TemplateRCNN":
        raise ValueError(
            f"--config must use MODEL.META_ARCHITECTURE 'TemplateRCNN', got {cfg.MODEL.META_ARCHITECTURE!r}")
    torch.manual_seed(args.seed)
    model = build_model(cfg).eval()
    return cfg, model


def make_inputs(args, num_classes, device):
    """One smooth random image + template (uint8, 3 x H x W) and K random boxes / classes."""
    from detectron2.structures import Boxes, Instances

    h, w = args.size
    g = torch.Generator().manual_seed(args.seed)
    coarse = torch.randint(0, 256, (2, 3, max(h // 16, 2), max(w // 16, 2)), generator=g).float()
    smooth = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    image, template = smooth.round().clamp(0, 255).to(torch.uint8)
    k = args.detections
    xy = torch.rand(k, 2, generator=g) * torch.tensor([w * 0.8, h * 0.8])
    wh = (0.05 + 0.3 * torch.rand(k, 2, generator=g)) * torch.tensor([w, h])
    boxes = torch.cat([xy, torch.minimum(xy + wh, torch.tensor([w - 1.0, h - 1.0]))], dim=1)
    det = Instances((h, w))
    det.pred_boxes = Boxes(boxes.to(device))
    det.pred_classes = torch.randint(0, num_classes, (k,), generator=g).to(device)
    det.scores = torch.rand(k, generator=g).to(device)
    return {"image": image, "template": template, "height": h, "width": w}, det


def main(argv: Optional[Sequence[str]] = None, out=None, description: Optional[str] = None) -> dict:
    """Parse ``argv`` (default ``sys.argv[1:]``), time the three rows with ``--threads`` torch threads,
    print the command, the machine and the table to ``out`` (default stdout); returns
    ``{"meta": {...}, "rows": [{"name", "ms_per_image", "ratio"}, ...]}`` (also written to ``--json``)."""
    out = out or sys.stdout
    args = parse_args(argv, description)
    with torch_threads(args.threads):
        return _run(args, argv, out)


def _run(args, argv, out) -> dict:
    """The measurement of :func:`main` (inside its thread setting)."""
    import detectron2

    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    cmd = " ".join(shlex.quote(a) for a in (["python", "tools/benchmark_weak_mask.py"]
                                             + (list(argv) if argv is not None else sys.argv[1:])))
    cfg, model = build(args)
    head, roi_heads = model.roi_heads.mask_head, model.roi_heads
    refiner = head.refiner
    x, det = make_inputs(args, cfg.MODEL.ROI_HEADS.NUM_CLASSES, device)
    r = cfg.MODEL.ROI_MASK_HEAD.REFINE
    meta = {
        "command": cmd, "torch": torch.__version__, "detectron2": detectron2.__version__,
        "threads": torch.get_num_threads(), "cpu": cpu_model(), "cpu_count": os.cpu_count(),
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "config": args.config, "size": list(args.size), "detections": args.detections,
        "mask_grid": 2 * cfg.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION, "refine_iters": r.ITERS,
        "iters": args.iters, "warmup": args.warmup, "seed": args.seed, "load_avg_start": list(os.getloadavg()),
    }
    print(f"command: {cmd}", file=out)
    print(f"torch {meta['torch']}, detectron2 {meta['detectron2']}, {meta['threads']} torch threads, CPU: "
          f"{meta['cpu']} ({meta['cpu_count']} logical cores), device: {meta['device']}", file=out)
    print(f"input: 1 image 3 x {args.size[0]} x {args.size[1]} + template, K = {args.detections} random "
          f"detections, mask grid {meta['mask_grid']} x {meta['mask_grid']}, REFINE.ITERS {r.ITERS}; "
          f"time: median of {args.iters} after {args.warmup} warm-up, per image; load average at start: "
          + " ".join(f"{v:.2f}" for v in meta["load_avg_start"]), file=out)

    with torch.no_grad():
        images = model.preprocess_image([x])
        features = model.extract_features(images, [x])
        pixels, templates, valid = model.pixel_inputs(images, [x])
        features = dict(features, **{PIXELS_KEY: pixels, TEMPLATE_PIXELS_KEY: templates,
                                     TEMPLATE_PIXELS_VALID_KEY: valid})

        def detections():
            return [det[:]]  # a fresh copy: the mask branch writes pred_masks into it

        def mask_head_only():
            head.refiner = None
            try:
                return roi_heads._forward_mask(features, detections())
            finally:
                head.refiner = refiner

        def refinement(instances):
            head.refine(instances, head.cues(pixels, templates, valid))

        def mask_head_and_refinement():
            return roi_heads._forward_mask(features, detections())

        times = {name: [] for name in ROWS}
        for i in range(args.warmup + args.iters):
            sync(); t0 = time.perf_counter()
            plain = mask_head_only()
            sync(); t1 = time.perf_counter()
            refinement(plain)
            sync(); t2 = time.perf_counter()
            mask_head_and_refinement()
            sync(); t3 = time.perf_counter()
            if i >= args.warmup:
                for name, dt in zip(ROWS, (t1 - t0, t2 - t1, t3 - t2)):
                    times[name].append(dt * 1e3)

    med = {name: statistics.median(v) for name, v in times.items()}
    ref = med["mask head"]
    rows = [{"name": n, "ms_per_image": med[n], "ratio": med[n] / ref if ref > 0 else None} for n in ROWS]
    print("", file=out)
    print("| variant | ms / image (median) | ratio to mask head |", file=out)
    print("|---|---:|---:|", file=out)
    for row in rows:
        ratio = "-" if row["ratio"] is None else f"{row['ratio']:.2f}x"
        print(f"| {row['name']} | {row['ms_per_image']:.2f} | {ratio} |", file=out)
    result = {"meta": meta, "rows": rows}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result
