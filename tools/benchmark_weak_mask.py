#!/usr/bin/env python
"""Inference time of the entropy-constrained mask refinement, as a ratio to the mask head.

One model (``--config``, default the CPU synthetic RDDN baseline, random weights seeded by
``--seed``) is built with ``MODEL.MASK_ON``, ``MODEL.ROI_MASK_HEAD.NAME BoxSupervisedMaskHead`` and
``MODEL.ROI_MASK_HEAD.REFINE.ENABLED`` (plus ``--opts``). The backbone runs ONCE on one random
image (smooth random colours, ``--size H W``, with a random template) and ``--detections`` K random
boxes stand in for the detections; then, in the same process, interleaved within each repetition:

- **mask head**: ``roi_heads._forward_mask`` with the refiner switched off: mask ROIAlign on the
  FPN, the head's convolutions and ``mask_rcnn_inference`` (probabilities of the detected class);
- **refinement**: ``mask_head.cues`` + ``mask_head.refine`` on those probabilities: image
  cues (image / 255, ``||I - T||``), their ROIAlign onto the K grids, the affinities and the
  refiner's iterations;
- **mask head + refinement**: ``roi_heads._forward_mask`` with the refiner on (the images in the
  features dict, as TemplateRCNN passes them).

Each number is milliseconds PER IMAGE, the median over ``--iters`` repetitions after ``--warmup``
untimed ones, printed with its ratio to the mask head::

    python tools/benchmark_weak_mask.py                          # 256 x 320, K = 50, 1 thread
    python tools/benchmark_weak_mask.py --detections 100 --iters 100 --opts MODEL.ROI_MASK_HEAD.REFINE.ITERS 10
    python tools/benchmark_weak_mask.py --device cuda

Never asserted on in tests (timings depend on the machine and its load); tests check the table's
structure with ``--iters 1``.
"""
from defect_det.weak_mask.benchmark import main

if __name__ == "__main__":
    main(description=__doc__.split("\n\n")[0])
