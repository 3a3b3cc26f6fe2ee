"""Config keys of RDDN (projects/RDDN): template reference (``MODEL.TEMPLATE``), context reference
(``MODEL.ROI_BOX_HEAD.CONTEXT_*``) and the paired image/template input (``INPUT.TEMPLATE``)."""
from detectron2.config import CfgNode as CN

__all__ = ["add_rddn_config"]


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
