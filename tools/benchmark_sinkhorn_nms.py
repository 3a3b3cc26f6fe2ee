#!/usr/bin/env python
"""Per-image time of the box post-processing step: Detectron2's hard-NMS ``fast_rcnn_inference`` vs
``sinkhorn_fast_rcnn_inference`` in its three forms (``MODEL.SINKHORN_NMS.MODE``: "shared", the
formulation before issue 17; "dense" and "blocked", the sparse problem of issue 17 as one matrix per
image and as packed blocks), side by side in one process.

Inputs imitate Detectron2's default test settings: R proposals per image (default 1000) with
class-specific boxes for C classes (default 15, the Tianchi fabric set) around a few objects,
softmax scores with one dominant class per proposal, score threshold 0.05, NMS/seed IoU 0.5,
100 detections per image. Three tables (medians over ``--reps`` runs, ms per image, wall clock and
process CPU time; on a shared machine the CPU time is the steadier one):

1. hard / shared / dense / blocked at each ``--batch`` size;
2. scaling with the number of candidates per image (``--scaling``, B = 1; the proposals per image are
   scaled to reach each count, the objects stay the same, so clusters grow);
3. the early-exit trade-off of the blocked form (``--tol-sweep``, with and without warm start): time,
   Sinkhorn iterations per alternation, and the largest deviation of the region boxes (px) and scores
   from the converged solution (float64, tol 1e-10);
4. optionally (``--eval-config CFG --eval-weights W``) a trained detector on a dataset: ONE forward pass
   per image, every post-processor applied to the same candidates (then the model's containment step and
   rescaling), box AP50 with its bootstrap interval and the CPU time of each post-processor.

    python tools/benchmark_sinkhorn_nms.py
    python tools/benchmark_sinkhorn_nms.py --batch 1 4 --proposals 1000 --classes 15 --reps 7
    python tools/benchmark_sinkhorn_nms.py --scaling 250 1000 4000 --tol-sweep 0 0.01
    python tools/benchmark_sinkhorn_nms.py --scaling --tol-sweep --batch --eval-config output/demo/config.yaml \
        --eval-weights output/demo/model_final.pth --eval-dataset synthetic_fabric_val
"""
import argparse
import dataclasses
import os
import statistics
import tempfile
import time

import torch
from detectron2.modeling.roi_heads.fast_rcnn import fast_rcnn_inference

from defect_det.sinkhorn_nms import sinkhorn_fast_rcnn_inference
from defect_det.sinkhorn_nms.nms import SinkhornNMSParams, _greedy_seeds, _layout, _support, pad_candidates, sinkhorn_nms
from defect_det.sinkhorn_nms.postprocess import candidates_from_predictions

SCORE, IOU, DETS = 0.05, 0.5, 100


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


def time_fns(fns, reps):
    """Median (wall, CPU) seconds of each of ``fns`` over ``reps`` runs, after one warm-up run each. The
    functions take turns within every repetition, so that a change of load on a shared machine hits all
    of them alike."""
    for fn in fns:
        fn()
    wall, cpu = [[] for _ in fns], [[] for _ in fns]
    for _ in range(reps):
        for i, fn in enumerate(fns):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[i].append(time.perf_counter() - t0)
            cpu[i].append(time.process_time() - c0)
    return [(statistics.median(w), statistics.median(c)) for w, c in zip(wall, cpu)]


def _sinkhorn_fn(boxes, scores, shapes, params):
    return lambda: sinkhorn_fast_rcnn_inference(boxes, scores, shapes, SCORE, IOU, DETS, params)


def fmt(t, B):
    return f"{t[0] / B * 1e3:.2f} / {t[1] / B * 1e3:.2f}"


def candidates(boxes, scores, shapes):
    cands = [candidates_from_predictions(b, s, sh, SCORE) for b, s, sh in zip(boxes, scores, shapes)]
    return pad_candidates([c[:3] for c in cands], boxes[0])


def problem_stats(boxes, scores, shapes, params):
    """Regions, blocks and the packed problem's shape (S, NR, M) of the blocked form."""
    cb, cs, cc, cm = candidates(boxes, scores, shapes)
    seed_idx, seed_mask = _greedy_seeds(cb, cs, cc, cm, params.seed_iou, params.max_regions)
    sup = _support(cb, cc, cm, seed_idx, seed_mask, params.iou_floor)
    lay = _layout(sup, cb.shape[0], cb.shape[1], seed_idx.shape[1], "blocked")
    B = len(boxes)
    return f"{sup.reg_k.numel() / B:.0f} | {sup.block_root.numel() / B:.0f} | {'x'.join(map(str, lay.shape))}"


def side_by_side(args, g, params):
    print(f"\n### Hard vs Sinkhorn NMS (ms per image, wall / CPU)\n")
    print("| B | candidates/img | hard | shared | dense | blocked | blocked/hard (wall, CPU) | blocked n_iter |")
    print("|---|---|---|---|---|---|---|---|")
    for B in args.batch:
        boxes, scores, shapes = make_inputs(g, B, args.proposals, args.classes)
        n = sum(int((s[:, :-1] > SCORE).sum()) for s in scores) / B
        fns = [lambda: fast_rcnn_inference(boxes, scores, shapes, SCORE, IOU, DETS)]
        for mode in ("shared", "dense", "blocked"):
            fns.append(_sinkhorn_fn(boxes, scores, shapes, dataclasses.replace(params, mode=mode)))
        times = time_fns(fns, args.reps)
        hard, t = times[0], times[-1]
        row = [str(B), f"{n:.0f}"] + [fmt(x, B) for x in times]
        row.append(f"{t[0] / hard[0]:.1f}x, {t[1] / hard[1]:.1f}x")
        cb, cs, cc, cm = candidates(boxes, scores, shapes)
        row.append(str(sinkhorn_nms(cb, cs, cc, cm, params=params, return_plan=False).n_iter))
        print("| " + " | ".join(row) + " |")


def scaling(args, g, params):
    print(f"\n### Scaling with the candidates per image (B = 1, ms per image, wall / CPU)\n")
    print("| proposals | candidates | regions | blocks | packed S x NR x M | hard | dense | blocked | "
          "blocked/hard (CPU) |")
    print("|---|---|---|---|---|---|---|---|---|")
    per_proposal = 2.46  # candidates per proposal at 15 classes and score 0.05 (measured)
    for target in args.scaling:
        R = max(int(round(target / per_proposal * 15 / args.classes)), 1)
        boxes, scores, shapes = make_inputs(g, 1, R, args.classes)
        n = int((scores[0][:, :-1] > SCORE).sum())
        fns = [lambda: fast_rcnn_inference(boxes, scores, shapes, SCORE, IOU, DETS)]
        for mode in ("dense", "blocked"):
            fns.append(_sinkhorn_fn(boxes, scores, shapes, dataclasses.replace(params, mode=mode)))
        times = time_fns(fns, args.reps)
        hard, t = times[0], times[-1]
        row = [str(R), str(n), problem_stats(boxes, scores, shapes, params)] + [fmt(x, 1) for x in times]
        row.append(f"{t[1] / hard[1]:.1f}x")
        print("| " + " | ".join(row) + " |")


def tol_sweep(args, g, params):
    B = max(args.batch or [1])
    boxes, scores, shapes = make_inputs(g, B, args.proposals, args.classes)
    cb, cs, cc, cm = candidates(boxes, scores, shapes)
    ref = sinkhorn_nms(cb.double(), cs.double(), cc, cm, return_plan=False,
                       params=dataclasses.replace(params, tol=1e-10, sinkhorn_iters=5000))
    print(f"\n### Early exit and warm start (blocked, B = {B}; deviation from the converged solution, "
          f"float64 with tol 1e-10: {ref.n_iter} iterations)\n")
    print("| tol | warm start | sinkhorn_iters | ms/img (wall / CPU) | n_iter | max box dev px | max score dev | same regions |")
    print("|---|---|---|---|---|---|---|---|")
    settings = [dataclasses.replace(params, tol=tol, warm_start=warm) for tol in args.tol_sweep for warm in (True, False)]
    times = time_fns([_sinkhorn_fn(boxes, scores, shapes, p) for p in settings], args.reps)
    for p, t in zip(settings, times):
        res = sinkhorn_nms(cb, cs, cc, cm, params=p, return_plan=False)
        v = ref.valid
        box = float((res.boxes.double() - ref.boxes)[v].abs().max())
        score = float((res.scores.double() - ref.scores)[v].abs().max())
        print(f"| {p.tol:g} | {p.warm_start} | {p.sinkhorn_iters} | {fmt(t, B)} | {res.n_iter} | {box:.3g} | "
              f"{score:.2g} | {bool(torch.equal(res.valid, v))} |")


def model_eval(args, params):
    """Table 4 (see the module doc). Needs the dataset registered (DETECTRON2_DATASETS)."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model
    from detectron2.modeling.meta_arch import GeneralizedRCNN

    from defect_det.config import get_defect_cfg
    from defect_det.engine import DefectTrainer
    from defect_det.modeling.roi_heads.containment import suppress_contained
    from defect_det.modeling.roi_heads.postprocess import HardNMS
    from defect_det.sinkhorn_nms import SinkhornNMS

    cfg = get_defect_cfg()
    cfg.merge_from_file(args.eval_config)
    cfg.MODEL.WEIGHTS = args.eval_weights
    cfg.freeze()
    model = build_model(cfg)
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    model.eval()
    rh = cfg.MODEL.ROI_HEADS
    variants = {"hard": HardNMS(nms_thresh=rh.NMS_THRESH_TEST, topk_per_image=cfg.TEST.DETECTIONS_PER_IMAGE)}
    for name, kw in (("shared, tol 0 (before issue 17)", dict(mode="shared", tol=0.0, warm_start=False)),
                     ("dense", dict(mode="dense")), ("blocked", {}), ("blocked, tol 0", dict(tol=0.0)),
                     ("blocked, tol 0.03", dict(tol=0.03)), ("blocked, tol 0.1", dict(tol=0.1))):
        variants[name] = SinkhornNMS(params=dataclasses.replace(params, **kw), nms_thresh=rh.NMS_THRESH_TEST,
                                     topk_per_image=cfg.TEST.DETECTIONS_PER_IMAGE)
    cpu = {k: [] for k in variants}
    counts = []

    class Recorder:
        """Stands in for the model's post-processor: runs every variant on the same candidates."""
        has_losses = False

        def __call__(self, boxes, scores, image_shapes, score_thresh):
            counts.append(sum(int((s[:, :-1] > score_thresh).sum()) for s in scores) / len(scores))
            self.outs, self.shapes = {}, image_shapes
            for k, post in variants.items():
                c0 = time.process_time()
                self.outs[k] = post(boxes, scores, image_shapes, score_thresh)[0]
                cpu[k].append((time.process_time() - c0) / len(scores))
            return self.outs["hard"], None

    rec = Recorder()
    model.roi_heads.box_predictor.postprocessor = rec
    loader = DefectTrainer.build_test_loader(cfg, args.eval_dataset)
    tmp = tempfile.mkdtemp(prefix="sinkhorn_nms_eval_")  # the evaluators' files, not the model's folder
    evaluators = {k: DefectTrainer.build_evaluator(cfg, args.eval_dataset, os.path.join(tmp, str(i)))
                  for i, k in enumerate(variants)}
    for e in evaluators.values():
        e.reset()
    for inputs in loader:
        model(inputs)
        for k, e in evaluators.items():
            inst = [suppress_contained(x, rh.CONTAIN_THRESH_TEST) for x in rec.outs[k]]
            e.process(inputs, GeneralizedRCNN._postprocess(inst, inputs, rec.shapes))
    print(f"\n### {args.eval_weights} on {args.eval_dataset}: one forward pass, every post-processor on the same "
          f"candidates (median {statistics.median(counts):.0f}, max {max(counts):.0f} per image)\n")
    print("| post-processor | AP50 [95% bootstrap CI] | AP75 | CPU ms/img (median) |")
    print("|---|---|---|---|")
    for k, e in evaluators.items():
        r = e.evaluate()["bbox"]
        ci = f" [{r['AP50_ci_low']:.1f}, {r['AP50_ci_high']:.1f}]" if "AP50_ci_low" in r else ""
        print(f"| {k} | {r['AP50']:.2f}{ci} | {r['AP75']:.2f} | {statistics.median(cpu[k]) * 1e3:.2f} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, nargs="*", default=[1, 4], help="batch sizes (empty: skip table 1)")
    ap.add_argument("--proposals", type=int, default=1000)
    ap.add_argument("--classes", type=int, default=15)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--scaling", type=int, nargs="*", default=[250, 500, 1000, 2000, 4000],
                    help="candidates per image to reach (empty: skip the table)")
    ap.add_argument("--tol-sweep", type=float, nargs="*", default=[0.0, 1e-3, 1e-2, 3e-2, 1e-1],
                    help="early-exit tolerances to compare (empty: skip the table)")
    ap.add_argument("--eval-config", default=None, help="a trained detector's config: adds table 4")
    ap.add_argument("--eval-weights", default=None)
    ap.add_argument("--eval-dataset", default="synthetic_fabric_val")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    params = SinkhornNMSParams()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, R={args.proposals} proposals x "
          f"C={args.classes} classes, score {SCORE}, IoU {IOU}, {DETS} dets; Sinkhorn: tau={params.tau}, "
          f"{params.refine_iters + 1} assignments (the first in closed form), at most {params.sinkhorn_iters} "
          f"iterations, tol={params.tol}, warm start {params.warm_start}, IoU floor {params.iou_floor}")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        if args.batch:
            side_by_side(args, g, params)
        if args.scaling:
            scaling(args, g, params)
        if args.tol_sweep:
            tol_sweep(args, g, params)
        if args.eval_config:
            model_eval(args, params)


if __name__ == "__main__":
    main()
