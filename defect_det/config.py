"""Config keys added by defect_det.

``add_defect_config(cfg)`` is the single entry point; it calls one ``add_*_config`` function per
concept, and each of those owns (adds, documents and defaults) its keys. Call it on a Detectron2
``get_cfg()`` before ``merge_from_file`` of any defect_det config::

    from detectron2.config import get_cfg
    from defect_det.config import add_defect_config, get_defect_cfg

    cfg = get_cfg(); add_defect_config(cfg)       # or: cfg = get_defect_cfg()
    cfg.merge_from_file("configs/synthetic/faster_rcnn_R18_FPN_cpu.yaml")
"""
import logging

from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

__all__ = [
    "add_defect_config",
    "add_evaluation_config",
    "add_rddn_config",
    "add_roi_sampling_config",
    "add_segdec_config",
    "add_sinkhorn_nms_config",
    "add_solver_config",
    "add_weak_mask_config",
    "get_defect_cfg",
    "load_defect_cfg",
]


def add_sinkhorn_nms_config(cfg):
    """Sinkhorn NMS keys (read by defect_det.modeling.roi_heads; equations and defaults in
    projects/SinkhornNMS/README.md)."""
    # Box post-processing of DefectStandardROIHeads / DefectCascadeROIHeads: "hard" (Detectron2's
    # per-class NMS) or "sinkhorn". The seeding IoU of Sinkhorn NMS is ROI_HEADS.NMS_THRESH_TEST.
    cfg.MODEL.ROI_HEADS.NMS_TYPE = "hard"
    cfg.MODEL.SINKHORN_NMS = CN()
    _c = cfg.MODEL.SINKHORN_NMS
    _c.ALPHA = 1.0          # weight of the quality term (1 - score)
    _c.BETA = 0.0           # weight of the feature term (1 - cos); the drop-in heads pass no features
    _c.GAMMA = 1.0          # weight of the spatial term
    _c.SPATIAL = "iou"      # "iou": 1 - IoU(box, region box); "center": centre distance / image diagonal
    _c.TAU = 0.1            # entropic temperature (Sinkhorn eps)
    _c.DUSTBIN_COST = 0.5   # cost of the background slot
    _c.MAX_REGIONS = 100    # cap on regions per image
    _c.REFINE_ITERS = 2     # assignment -> centres -> assignment alternations
    _c.SINKHORN_ITERS = 50  # Sinkhorn iterations per assignment
    _c.SCORE_POWER = 1.0    # region weights P_jk * score_j ** SCORE_POWER
    # End-to-end training: weight of the loss computed after Sinkhorn NMS (soft one-to-one matching
    # of the regions to the ground truth, defect_det/modeling/roi_heads/sinkhorn_loss.py); 0 = off.
    _c.E2E_LOSS_WEIGHT = 0.0
    _c.E2E_TOPK = 300       # candidates per image entering that loss


def add_roi_sampling_config(cfg):
    """Proposal (training) and final-detection (inference) keys of ``DefectStandardROIHeads`` /
    ``DefectCascadeROIHeads`` and the RDDN heads built on them (defect_det/modeling/roi_heads/
    proposal_jitter.py, containment.py)."""
    cfg.MODEL.ROI_HEADS.GT_JITTER = CN()
    # Copies of each ground-truth box, jittered, added to the proposals before sampling (0 = off):
    # extra positives at varied IoU and near-miss negatives for the box head.
    cfg.MODEL.ROI_HEADS.GT_JITTER.NUM_PER_GT = 0
    # Std of the centre shift (in box widths/heights) and of the log-size change; 0.2: ~57% of the
    # copies at IoU >= 0.5 with their box, the rest in (0.1, 0.5).
    cfg.MODEL.ROI_HEADS.GT_JITTER.SIGMA = 0.2
    # Inference: drop a detection when a better-scored one of its class covers at least this share of
    # its area (fragments of a long defect that NMS keeps; roi_heads/containment.py). 0 = off.
    cfg.MODEL.ROI_HEADS.CONTAIN_THRESH_TEST = 0.0


def add_rddn_config(cfg):
    """RDDN keys: template reference (``MODEL.TEMPLATE``), context reference
    (``MODEL.ROI_BOX_HEAD.CONTEXT_*``) and the paired-image input (``INPUT.TEMPLATE``). Read by
    ``TemplateRCNN``, ``RDDNStandardROIHeads`` / ``RDDNCascadeROIHeads`` and ``PairedDatasetMapper``;
    equations and defaults in projects/RDDN/README.md."""
    cfg.MODEL.TEMPLATE = CN()
    # How TemplateRCNN uses the template T of image I (paper section IV-A/B):
    #   "none":  baseline (T only loaded if POST needs it at inference)
    #   "pre":   input (I - T) / (2 * PIXEL_STD)                                  (TR-Pre, eq. 7)
    #   "inter": one shared bottom-up on I and T (batched), FPN on C_i^I - C_i^T   (TR-Inter, eq. 9)
    #   "ptg":   FPN on C_i - G_i(C_i), G_i trained by MSE on normal images        (PTG, eqs. 13-14)
    cfg.MODEL.TEMPLATE.MODE = "none"
    # TR-Post (eq. 10): at inference multiply class scores by (1 - cos(F^I, F^T)) of the box-head
    # features of each proposal on the image and on its template. Needs no retraining; only with
    # MODE "none" or "ptg". Images without a template keep their scores.
    cfg.MODEL.TEMPLATE.POST = False
    cfg.MODEL.TEMPLATE.PTG = CN()
    cfg.MODEL.TEMPLATE.PTG.HIDDEN_DIM = 256   # paper: 256
    cfg.MODEL.TEMPLATE.PTG.LOSS_WEIGHT = 1.0  # weight of sum_i mean((C_i^N - G_i(C_i^N))^2)
    # True: the reconstruction loss trains G only (C^N detached), so it cannot pull the shared
    # backbone towards features that are trivial to reconstruct; False: it reaches the backbone too.
    cfg.MODEL.TEMPLATE.PTG.DETACH_FEATURES = True
    # Context reference (section IV-C): pool a concentric box (x, y, k*w, k*h), clipped to the image,
    # and concatenate its ROI features with the region's along channels. 1.0 = off.
    cfg.MODEL.ROI_BOX_HEAD.CONTEXT_SCALE = 1.5
    cfg.MODEL.ROI_BOX_HEAD.CONTEXT_ONLY = False  # the paper's CR*: context features alone
    cfg.INPUT.TEMPLATE = CN()
    # Register the template to the image (phase correlation, sub-pixel translation) before use.
    cfg.INPUT.TEMPLATE.ALIGN = False
    # Template misalignment augmentation: a random translation of magnitude uniform in
    # [SHIFT_RANGE[0], SHIFT_RANGE[1]] px in a random direction, plus a rotation uniform in
    # +-MAX_ROTATION degrees. (0, 0) = off. The paper's "shifted" rows use (5, 10) at train AND test.
    cfg.INPUT.TEMPLATE.SHIFT_RANGE = (0.0, 0.0)
    cfg.INPUT.TEMPLATE.MAX_ROTATION = 0.0
    # Apply the misalignment at test time too (deterministic per image: seeded by its file name).
    cfg.INPUT.TEMPLATE.SHIFT_AT_TEST = False
    # Independent photometric jitter of image and template: brightness/contrast factors uniform in
    # 1 +- this (0 = off), drawn separately for each of the two.
    cfg.INPUT.TEMPLATE.PHOTOMETRIC = 0.0


def add_segdec_config(cfg):
    """SegDecNet keys (``cfg.MODEL.SEGDEC``), read by ``SegDecNet``, ``SegDecDatasetMapper`` and the
    image-level evaluators; equations and defaults in projects/SegDecNet/README.md. Defaults are the
    paper's DAGM settings. SegDecNet's frequency-of-use sampling of negatives is chosen with
    Detectron2's own key: ``DATALOADER.SAMPLER_TRAIN: "FrequencyOfUseSampler"``
    (defect_det/data/samplers.py; DefectTrainer builds it)."""
    cfg.MODEL.SEGDEC = CN()
    _c = cfg.MODEL.SEGDEC
    _c.IN_CHANNELS = 1          # 1: grayscale (INPUT.FORMAT "L"); 3: colour (INPUT.FORMAT "RGB"/"BGR")
    _c.INPUT_SIZE = (512, 512)  # (H, W) every image is resized to; both multiples of 8
    # Channel multiplier of both subnets (32/64/1024 and 8/16/32 channels x WIDTH, at least 1);
    # 1.0 = the paper's network, small values make CPU-sized models.
    _c.WIDTH = 1.0
    # Dynamic loss balancing: loss = (1 - e/E) L_seg + DELTA (e/E) L_cls with e/E = iteration /
    # SOLVER.MAX_ITER; off: loss = L_seg + DELTA L_cls.
    _c.DYN_BALANCED_LOSS = True
    _c.DELTA = 1.0              # delta, weight of the classification loss
    # Gradient-flow adjustment: the decision subnet's inputs are detached, so L_cls never reaches
    # the segmentation subnet.
    _c.GRADIENT_ADJUSTMENT = True
    # Square dilation kernel (px) applied to the pixel labels before they become training targets
    # (1 = no dilation).
    _c.DILATE = 7
    # Distance-transform weighting of positive pixels: w = (edt(mask) / max edt) ** P * OMEGA on
    # the (dilated) defect, 1 on the background; off: w = 1 everywhere.
    _c.WEIGHTED_SEG_LOSS = True
    _c.WEIGHTED_SEG_LOSS_P = 1.0
    _c.WEIGHTED_SEG_LOSS_OMEGA = 10.0
    # Mixed supervision: how many defective training images keep their pixel labels (the first N
    # in dataset order); the other defective images contribute only L_cls. -1 = all.
    _c.NUM_SEGMENTED = -1
    # Training augmentation of SegDecDatasetMapper (not in the paper, which uses none): "none",
    # "horizontal", "vertical" or "both"; each direction flipped with probability 1/2; "dihedral":
    # "both" plus a transpose with probability 1/2 (all 8 rotations/reflections; square inputs).
    _c.FLIP = "none"
    # Test-time augmentation (on with Detectron2's TEST.AUG.ENABLED; modeling/meta_arch/segdec_tta.py):
    # the flips / transposes averaged, "" = those of FLIP ("horizontal", "vertical", "both",
    # "dihedral"), and whether the logits ("logit") or the probabilities ("prob") are averaged.
    _c.TEST_AUG_FLIP = ""
    _c.TEST_AUG_REDUCE = "logit"
    # Probability threshold binarising the defect map for the pixel-level Dice / IoU.
    _c.PIXEL_THRESHOLD = 0.5
    # With DATALOADER.SAMPLER_TRAIN "FrequencyOfUseSampler": "balanced" (least-used negatives
    # first; use counts differ by <= 1 after every epoch) or "paper" (the authors' soft
    # probabilities p = (1 - f/max f - median + 1) ** (4 ln N_neg)).
    cfg.DATALOADER.FREQUENCY_OF_USE_MODE = "balanced"


def add_solver_config(cfg):
    """Optimizer keys (``cfg.SOLVER.*``), read by :func:`defect_det.solver.build_optimizer` (which
    ``DefectTrainer.build_optimizer`` calls) and ``DefectTrainer.build_hooks``."""
    # "SGD" (Detectron2's default optimizer, SOLVER.MOMENTUM/NESTEROV) or "AdamW"
    # (SOLVER.BETAS, SOLVER.WEIGHT_DECAY as decoupled decay). AdamW trains from-scratch models
    # on small data (the CPU synthetic baseline) far more reliably than SGD. Detectron2's own
    # DefaultTrainer ignores this key (always SGD): a host trainer must return
    # defect_det.solver.build_optimizer(cfg, model) from its build_optimizer.
    cfg.SOLVER.OPTIMIZER = "SGD"
    cfg.SOLVER.BETAS = (0.9, 0.999)
    # Stochastic weight averaging (defect_det/engine/weight_averaging.py; DefectTrainer adds the
    # hook): the mean of the parameters over iterations [START * MAX_ITER, MAX_ITER), one sample
    # every PERIOD iterations and the last one, replaces the model before model_final.pth is
    # written and the final evaluation runs. For constant-lr schedules; not for BatchNorm models.
    cfg.SOLVER.SWA = CN()
    cfg.SOLVER.SWA.ENABLED = False
    cfg.SOLVER.SWA.START = 0.75
    cfg.SOLVER.SWA.PERIOD = 10


def add_evaluation_config(cfg):
    """Evaluation keys (``cfg.TEST.*``)."""
    # Name in defect_det.evaluation.EVALUATOR_REGISTRY of the evaluator DefectTrainer builds for
    # every dataset in DATASETS.TEST. "DefectCOCOEvaluator" = Detectron2's COCOEvaluator (bbox)
    # plus per-category AP50 (the RDDN paper's headline metric is mAP@0.5).
    cfg.TEST.EVALUATOR = "DefectCOCOEvaluator"
    # Number of test images per dataset that tools/train_net.py --vis draws with predictions.
    cfg.TEST.VIS_NUM_IMAGES = 4
    # Score threshold for drawing predictions in the visualisations.
    cfg.TEST.VIS_SCORE_THRESH = 0.3
    # DefectCOCOEvaluator: replicates of the 95% bootstrap interval over test images of box AP50 and
    # class-agnostic AP50 (AP50_ci_low/high, AP50_agnostic_ci_low/high); 0 = no interval.
    cfg.TEST.BOOTSTRAP_ITERS = 1000
    # Seed of the bootstrap image draws (fixed, so the interval is reproducible).
    cfg.TEST.BOOTSTRAP_SEED = 0


def add_weak_mask_config(cfg):
    """Instance-mask keys under ``cfg.MODEL.ROI_MASK_HEAD`` for masks learnt from box labels.
    BOX_SUPERVISED is read by the dataset mappers (``defect_det.data.build_defect_mapper``) and by
    ``BoxSupervisedMaskHead``; WEAK.* and REFINE.* by ``BoxSupervisedMaskHead`` and its refiner."""
    # True: the mappers never load mask annotations ("segmentation" is dropped before the
    # instances are built, so there is no gt_masks even with MODEL.MASK_ON) and the mask head
    # trains from the boxes alone. False: masks are loaded when MODEL.MASK_ON, as in Detectron2
    # (RLE masks need INPUT.MASK_FORMAT "bitmask").
    cfg.MODEL.ROI_MASK_HEAD.BOX_SUPERVISED = False
    # Box-supervised losses of BoxSupervisedMaskHead (defect_det/modeling/roi_heads/weak_mask_head.py;
    # equations in projects/WeakMask/README.md). Used when BOX_SUPERVISED; the affinity keys
    # (THETA, THETA_TEMPLATE, TAU, DILATION, USE_TEMPLATE) are shared with REFINE.
    cfg.MODEL.ROI_MASK_HEAD.WEAK = CN()
    _w = cfg.MODEL.ROI_MASK_HEAD.WEAK
    _w.PROJECTION_WEIGHT = 1.0  # weight of the box projection (dice) loss
    _w.PAIRWISE_WEIGHT = 1.0    # weight of the pairwise affinity loss; 0 = projection loss only
    # affinity w = exp(-||c_i - c_j|| / THETA) * exp(-|d_i - d_j| / THETA_TEMPLATE): c = the input
    # pixel values / 255 (in [0, 1], independent of PIXEL_MEAN/STD), d = ||I - T|| (same units)
    # where a template exists; an edge (w >= TAU) needs ||c_i - c_j|| <= THETA * ln(1 / TAU)
    _w.THETA = 0.05
    _w.THETA_TEMPLATE = 0.1
    _w.TAU = 0.3                # edges with w >= TAU enter the pairwise loss (and the refinement)
    _w.DILATION = 2             # spacing of the 8 neighbours on the mask grid
    _w.WARMUP_ITERS = 1000      # the pairwise weight ramps in linearly over these iterations; 0 = off
    _w.USE_TEMPLATE = True      # use the image - template difference where the input has a template
    # Template-difference loss (needs USE_TEMPLATE and a template): inside the box, cells whose
    # pooled difference d_i >= TEMPLATE_THRESH * max_box d are pseudo-foreground, the others
    # pseudo-background (BCE, weight TEMPLATE_WEIGHT; 0 = off); ROIs whose max_box d is below
    # TEMPLATE_MIN_DIFF (no visible difference: d in [0, sqrt(3)], pixel units / 255) are skipped.
    _w.TEMPLATE_WEIGHT = 1.0
    _w.TEMPLATE_THRESH = 0.4
    _w.TEMPLATE_MIN_DIFF = 0.05
    # Entropy-constrained refinement of the predicted mask probabilities at inference
    # (defect_det/modeling/roi_heads/mask_refine.py).
    cfg.MODEL.ROI_MASK_HEAD.REFINE = CN()
    _r = cfg.MODEL.ROI_MASK_HEAD.REFINE
    _r.ENABLED = False
    _r.ITERS = 5                # T, refinement steps
    _r.CONF_THRESH = 0.9        # pixels with max(p, 1 - p) >= this are never changed
    _r.PAIRWISE_WEIGHT = 0.5    # lambda: logit per unit of agreeing neighbour affinity
    _r.MARGIN_STEP = 0.25       # eta: minimum |logit| growth per step of an uncertain pixel (entropy)


def add_defect_config(cfg):
    """
    Add every defect_det key to ``cfg`` (a Detectron2 CfgNode), in place, and return it.

    Idempotent through a marker of our own, ``cfg.DEFECT_DET.CONFIG_VERSION``, added with the keys
    (it survives ``clone()`` and a dump): a second call returns at once and keeps every value set
    since. Nothing else decides, so a host project's config may hold keys of its own anywhere
    (``TEST.EVALUATOR`` included). A key of the host that we also define gets our default: a warning
    names every such key whose value changed.
    """
    if "DEFECT_DET" in cfg:  # already added
        return cfg
    before = _flat(cfg)
    add_evaluation_config(cfg)
    add_solver_config(cfg)
    add_sinkhorn_nms_config(cfg)
    add_roi_sampling_config(cfg)
    add_rddn_config(cfg)
    add_segdec_config(cfg)
    add_weak_mask_config(cfg)
    # the marker: version of defect_det's key set (no meaning beyond "add_defect_config ran")
    cfg.DEFECT_DET = CN()
    cfg.DEFECT_DET.CONFIG_VERSION = 1
    after = _flat(cfg)
    replaced = [k for k, v in before.items() if k not in after or after[k] != v]
    if replaced:
        logging.getLogger(__name__).warning(
            "add_defect_config: the config already had these keys, which defect_det also defines; their "
            "values are now defect_det's defaults (set them after add_defect_config to keep yours): "
            + ", ".join(replaced)
        )
    return cfg


def _flat(node, prefix=""):
    """{"A.B.C": value} of every leaf of a CfgNode."""
    out = {}
    for k, v in node.items():
        if isinstance(v, CN):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def get_defect_cfg():
    """A fresh Detectron2 default config with all defect_det keys added."""
    cfg = get_cfg()
    add_defect_config(cfg)
    return cfg


def load_defect_cfg(config_file, opts=()):
    """
    :func:`get_defect_cfg` merged with ``config_file`` and the ``KEY VALUE`` list ``opts`` (not
    frozen). A missing file is a ``FileNotFoundError`` naming it; ``MODEL.DEVICE`` "cuda" on a
    machine without a GPU falls back to "cpu" with a message.
    """
    import os

    import torch

    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"--config-file {config_file!r} does not exist")
    cfg = get_defect_cfg()
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        print(f"[defect_det] MODEL.DEVICE={cfg.MODEL.DEVICE} but no GPU is available: using cpu")
        cfg.MODEL.DEVICE = "cpu"
    return cfg
