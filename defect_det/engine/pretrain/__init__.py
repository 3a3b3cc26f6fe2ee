"""Backbone pre-training on generated fabric with image-level labels only (``tools/pretrain_backbone.py``).

No weights can be downloaded, so the small CPU detector starts from scratch. This module pre-trains
its bottom-up network (e.g. the half-width ResNet-18 of ``configs/synthetic/faster_rcnn_R18_FPN_cpu.yaml``)
on a separately generated synthetic fabric set, with two image-level tasks:

(a) texture family: softmax cross-entropy over the seen families of the set;
(b) defect presence: one binary cross-entropy per defect type of
    :data:`~defect_det.data.synthetic.fabric.DEFECT_TYPES` (14), multi-label; a normal image has none.

**Masks and boxes are never used.** Labels come from the generator's ``meta.json`` through
:func:`image_level_record`, which reads only the keys in :data:`IMAGE_LEVEL_KEYS` (never ``boxes``,
``bbox``, ``segmentation``; ``Annotations/anno_train.json`` is never opened). The weak-mask comparison
(projects/WeakMask) depends on no pixel label ever reaching the detector, pre-training included.

**Held-out textures are never used.** The benchmark's unseen families (default herringbone and plaid)
measure generalisation to new textures; :func:`check_families` and :func:`load_pretrain_records`
refuse them, and :func:`prepare_pretrain_data` refuses the benchmark's generator seed (same seed =
overlapping images, including the benchmark's test split).

Inputs (``input_mode``) match what the detector's backbone sees:

- ``"image"``: ``(I - PIXEL_MEAN) / PIXEL_STD`` (``GeneralizedRCNN``, the baseline);
- ``"difference"``: ``(I - T) / (2 * PIXEL_STD)`` with T the template registered onto I by phase
  correlation (:func:`defect_det.data.template_ops.align_template`, as ``INPUT.TEMPLATE.ALIGN``),
  as ``TemplateRCNN`` TR-Pre sees it (``MODEL.TEMPLATE.MODE "pre"``).

Determinism: the batch of iteration ``i`` (images, augmentation draws) is a pure function of
``(seed, i)`` (:class:`IterationBatches`), so a resumed run continues at exactly the same data
position; model, optimizer and schedule state come from the checkpoint. With the same number of
threads a resumed run reproduces the uninterrupted one bit for bit.

Output (:func:`export_backbone`): a Detectron2 checkpoint ``{"model": {"backbone.bottom_up.<name>":
tensor}, "__author__": ..., "matching_heuristics": False}`` that ``DetectionCheckpointer(model).load``
loads into ``GeneralizedRCNN`` and ``TemplateRCNN`` (configs: ``MODEL.WEIGHTS <file>``).

Modules (this package re-exports the public API): :mod:`.settings` (settings, constants),
:mod:`.data` (pre-training set, image-level records, labels, split, input pipeline), :mod:`.model`
(network, losses, schedule, metrics), :mod:`.export` (the backbone checkpoint), :mod:`.loop`
(:func:`run_pretraining`); :mod:`.cli` is the command line of ``tools/pretrain_backbone.py`` (not
re-exported).
"""
from .data import (
    ImageLevelRecord,
    IterationBatches,
    PretrainSample,
    benchmark_dataset_info,
    build_labels,
    check_families,
    image_level_record,
    load_pretrain_records,
    normalize_input,
    prepare_pretrain_data,
    split_by_piece,
)
from .anomaly import AnomalyPretrainNet, anomaly_loss, synthesize_anomalies
from .export import bottom_up_state_dict, export_backbone, sha256_file
from .loop import run_pretraining
from .model import (
    BackbonePretrainNet,
    average_precision,
    evaluate,
    lr_factor,
    prepare_pretrain_cfg,
    pretrain_losses,
)
from .objectives import OBJECTIVES, AnomalyObjective, ImageLabelObjective, build_objective
from .settings import (
    AUTHOR,
    CHECKPOINT_NAME,
    FORBIDDEN_KEYS,
    HELD_OUT_FAMILIES,
    IMAGE_LEVEL_KEYS,
    INPUT_MODES,
    METRICS_NAME,
    OBJECTIVE_NAMES,
    SIDECAR_NAME,
    WEIGHTS_NAME,
    PretrainSettings,
)

__all__ = [
    "AnomalyObjective",
    "AnomalyPretrainNet",
    "ImageLabelObjective",
    "OBJECTIVES",
    "OBJECTIVE_NAMES",
    "anomaly_loss",
    "build_objective",
    "synthesize_anomalies",
    "FORBIDDEN_KEYS",
    "HELD_OUT_FAMILIES",
    "IMAGE_LEVEL_KEYS",
    "INPUT_MODES",
    "BackbonePretrainNet",
    "ImageLevelRecord",
    "IterationBatches",
    "PretrainSettings",
    "PretrainSample",
    "average_precision",
    "benchmark_dataset_info",
    "bottom_up_state_dict",
    "build_labels",
    "check_families",
    "evaluate",
    "export_backbone",
    "image_level_record",
    "load_pretrain_records",
    "lr_factor",
    "normalize_input",
    "prepare_pretrain_cfg",
    "prepare_pretrain_data",
    "pretrain_losses",
    "run_pretraining",
    "sha256_file",
    "split_by_piece",
]
