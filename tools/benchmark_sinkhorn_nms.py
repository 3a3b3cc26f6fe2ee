#!/usr/bin/env python
"""Per-image time of the box post-processing step: Detectron2's hard-NMS ``fast_rcnn_inference`` vs
``sinkhorn_fast_rcnn_inference``, side by side in one process.

Inputs imitate Detectron2's default test settings: R proposals per image (default 1000) with
class-specific boxes for C classes (default 15, the Tianchi fabric set) around a few objects,
softmax scores with one dominant class per proposal, score threshold 0.05, NMS/seed IoU 0.5,
100 detections per image. Prints a table (median ms per image over ``--reps`` runs) and the ratio.

    python tools/benchmark_sinkhorn_nms.py
    python tools/benchmark_sinkhorn_nms.py --batch 1 4 --proposals 1000 --classes 15
"""
import argparse
import statistics
import time

import torch
from detectron2.modeling.roi_heads.fast_rcnn import fast_rcnn_inference

from defect_det.sinkhorn_nms.nms import SinkhornNMSParams
from defect_det.sinkhorn_nms import sinkhorn_fast_rcnn_inference


def make_inputs(g, B, R, C, H=800, W=1333, objects=8):
    boxes, scores = [], []
    for _ in range(B):
        centres = torch.rand(objects, 2, generator=g) * torch.tensor([W, H])
        sizes = 20 + torch.rand(objects, 2, generator=g) * 200
        obj = torch.randint(objects, (R,), generator=g)
        c, s = centres[obj], sizes[obj] * (0.7 + 0.6 * torch.rand(R, 2, generator=g))
        c = c + (torch.rand(R, 2, generator=g) - 0.5) * s * 0.5
        b = torch.cat([c - s / 2, c + s / 2], 1)  # (R, 4)
        b = b[:, None, :].repeat(1, C, 1) + torch.randn(R, C, 4, generator=g) * 3
        logits = torch.randn(R, C + 1, generator=g)
        logits[torch.arange(R), torch.randint(C + 1, (R,), generator=g)] += 4
        boxes.append(b.reshape(R, C * 4))
        scores.append(logits.softmax(1))
    return boxes, scores, [(H, W)] * B


def time_fn(fn, reps):
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--proposals", type=int, default=1000)
    ap.add_argument("--classes", type=int, default=15)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    params = SinkhornNMSParams()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, R={args.proposals} proposals x "
          f"C={args.classes} classes, score 0.05, IoU 0.5, 100 dets; Sinkhorn: tau={params.tau}, "
          f"{params.refine_iters + 1} assignments x {params.sinkhorn_iters} iterations")
    print("| B | candidates/img | hard ms/img | sinkhorn ms/img | ratio sinkhorn/hard |")
    print("|---|---|---|---|---|")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for B in args.batch:
            boxes, scores, shapes = make_inputs(g, B, args.proposals, args.classes)
            n = sum(int((s[:, :-1] > 0.05).sum()) for s in scores) / B
            hard = time_fn(lambda: fast_rcnn_inference(boxes, scores, shapes, 0.05, 0.5, 100), args.reps)
            sk = time_fn(lambda: sinkhorn_fast_rcnn_inference(boxes, scores, shapes, 0.05, 0.5, 100, params),
                         args.reps)
            print(f"| {B} | {n:.0f} | {hard / B * 1e3:.2f} | {sk / B * 1e3:.2f} | {sk / hard:.1f}x |")


if __name__ == "__main__":
    main()
