"""Config keys of SegDecNet (projects/SegDecNet), ``MODEL.SEGDEC`` and ``DATALOADER.FREQUENCY_OF_USE_MODE``."""
from detectron2.config import CfgNode as CN

__all__ = ["add_segdec_config"]


def add_segdec_config(cfg):
    """SegDecNet keys (``cfg.MODEL.SEGDEC``), read by ``SegDecNet``, ``SegDecDatasetMapper`` and the
    image-level evaluators; equations and defaults in projects/SegDecNet/README.md. Defaults are the
    paper's DAGM settings. SegDecNet's frequency-of-use sampling of negatives is chosen with
    Detectron2's own key: ``DATALOADER.SAMPLER_TRAIN: "FrequencyOfUseSampler"``
    (defect_det/segdec/sampler.py; DefectTrainer builds it)."""
    cfg.MODEL.SEGDEC = CN()
    _c = cfg.MODEL.SEGDEC
    _c.IN_CHANNELS = 1          # 1: grayscale (INPUT.FORMAT "L"); 3: colour (INPUT.FORMAT "RGB"/"BGR")
    _c.INPUT_SIZE = (512, 512)  # (H, W) every image is resized to; both multiples of 8
    # Channel multiplier of both subnets (32/64/1024 and 8/16/32 channels x WIDTH, at least 1);
    # 1.0 = the paper's network, small values make CPU-sized models.
    _c.WIDTH = 1.0
    # Fidelity to the authors' released code (projects/SegDecNet/README.md, "Fidelity"); each switch
    # has our alternative. NORM "authors": (x - mean) / sqrt(std + eps) per sample and channel (their
    # FeatureNorm); "instance": (x - mean) / sqrt(var + eps) (instance norm, what defect_det used before).
    _c.NORM = "authors"
    # Normalise the 1x1 segmentation conv's logit map too (scale only), as their code does.
    _c.SEG_LOGIT_NORM = True
    # Conv initialisation: "xavier" (Xavier-normal, their Conv2d_init) or "torch" (PyTorch's default).
    _c.INIT = "xavier"
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
    # Test-time augmentation (on with Detectron2's TEST.AUG.ENABLED; segdec/tta.py):
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
