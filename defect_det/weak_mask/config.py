"""Config keys of the box-supervised masks (projects/WeakMask), under ``MODEL.ROI_MASK_HEAD``."""
from detectron2.config import CfgNode as CN

__all__ = ["add_weak_mask_config"]


def add_weak_mask_config(cfg):
    """Instance-mask keys under ``cfg.MODEL.ROI_MASK_HEAD`` for masks learnt from box labels.
    BOX_SUPERVISED is read by the dataset mappers (``defect_det.data.build_defect_mapper``) and by
    ``BoxSupervisedMaskHead``; WEAK.* and REFINE.* by ``BoxSupervisedMaskHead`` and its refiner."""
    # True: the mappers never load mask annotations ("segmentation" is dropped before the
    # instances are built, so there is no gt_masks even with MODEL.MASK_ON) and the mask head
    # trains from the boxes alone. False: masks are loaded when MODEL.MASK_ON, as in Detectron2
    # (RLE masks need INPUT.MASK_FORMAT "bitmask").
    cfg.MODEL.ROI_MASK_HEAD.BOX_SUPERVISED = False
    # Box-supervised losses of BoxSupervisedMaskHead (defect_det/weak_mask/mask_head.py;
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
    # (defect_det/weak_mask/refine.py).
    cfg.MODEL.ROI_MASK_HEAD.REFINE = CN()
    _r = cfg.MODEL.ROI_MASK_HEAD.REFINE
    _r.ENABLED = False
    _r.ITERS = 5                # T, refinement steps
    _r.CONF_THRESH = 0.9        # pixels with max(p, 1 - p) >= this are never changed
    _r.PAIRWISE_WEIGHT = 0.5    # lambda: logit per unit of agreeing neighbour affinity
    _r.MARGIN_STEP = 0.25       # eta: minimum |logit| growth per step of an uncertain pixel (entropy)
