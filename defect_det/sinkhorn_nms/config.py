"""Config keys of Sinkhorn NMS (``MODEL.SINKHORN_NMS``); equations and defaults in
projects/SinkhornNMS/README.md. The post-processor itself is chosen with the shared key
``MODEL.ROI_HEADS.NMS_TYPE: "sinkhorn"`` (defect_det/modeling/roi_heads/config.py)."""
from detectron2.config import CfgNode as CN

__all__ = ["add_sinkhorn_nms_config"]


def add_sinkhorn_nms_config(cfg):
    """Add the ``MODEL.SINKHORN_NMS`` keys (read by :class:`~defect_det.sinkhorn_nms.SinkhornNMS`)."""
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
    _c.SINKHORN_ITERS = 50  # Sinkhorn iterations per assignment (at most, see TOL)
    # Issue 17: a candidate may join only a region of its class whose seed box it overlaps by IoU > IOU_FLOOR
    # (< 0: only classes are separated); the allowed pairs split the batch into independent blocks, each with
    # its own dustbin. MODE "blocked" solves the blocks packed into few small problems, "dense" the same
    # problem as one matrix per image (same plan, for checks), "shared" the earlier formulation (one dustbin
    # per image, only classes separated).
    _c.MODE = "blocked"
    _c.IOU_FLOOR = 0.0
    _c.TOL = 0.01           # early exit once every problem's row-marginal L1 error is below TOL (0 = off)
    _c.WARM_START = True    # each alternation starts from the previous one's dual potentials
    _c.SCORE_POWER = 1.0    # region weights P_jk * score_j ** SCORE_POWER
    # End-to-end training: weight of the loss computed after Sinkhorn NMS (soft one-to-one matching
    # of the regions to the ground truth, defect_det/sinkhorn_nms/loss.py); 0 = off. Needs
    # MODEL.ROI_HEADS.NMS_TYPE "sinkhorn" (the loss is the post-processor's).
    _c.E2E_LOSS_WEIGHT = 0.0
    _c.E2E_TOPK = 300       # candidates per image entering that loss
    # The loss weight rises linearly from 0 to E2E_LOSS_WEIGHT over these iterations (0 = at once): the way to
    # fine-tune a trained detector through the suppression (from scratch, weight 1.0 at once diverged).
    _c.E2E_WARMUP_ITERS = 0
