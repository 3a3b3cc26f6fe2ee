"""Config keys of defect_det's shared ROI heads (``DefectStandardROIHeads`` / ``DefectCascadeROIHeads``
and the RDDN heads built on them): the box post-processor, jittered training proposals, containment."""
from detectron2.config import CfgNode as CN

__all__ = ["add_roi_heads_config"]


def add_roi_heads_config(cfg):
    """Add ``MODEL.ROI_HEADS.{NMS_TYPE, SOFT_NMS, WBF, GT_JITTER, CONTAIN_THRESH_TEST,
    CROSS_CLASS_IOU_TEST}`` (defect_det/modeling/roi_heads/)."""
    # Box post-processing (postprocess.py): "hard" (Detectron2's per-class NMS), "sinkhorn" (Sinkhorn NMS,
    # MODEL.SINKHORN_NMS; its seeding IoU is NMS_THRESH_TEST), "soft" (Soft-NMS, SOFT_NMS below; the linear
    # decay's IoU threshold is NMS_THRESH_TEST), "wbf" (weighted box fusion, WBF below) or the name of a class registered in
    # defect_det.modeling.roi_heads.BOX_POSTPROCESSOR_REGISTRY.
    cfg.MODEL.ROI_HEADS.NMS_TYPE = "hard"
    cfg.MODEL.ROI_HEADS.SOFT_NMS = CN()
    cfg.MODEL.ROI_HEADS.SOFT_NMS.METHOD = "gaussian"  # "gaussian": s * exp(-IoU^2 / SIGMA); "linear": s * (1 - IoU)
    cfg.MODEL.ROI_HEADS.SOFT_NMS.SIGMA = 0.5          # the paper's default
    cfg.MODEL.ROI_HEADS.SOFT_NMS.MIN_SCORE = 0.001    # candidates decayed below this are dropped
    # "wbf" (weighted box fusion, wbf.py): a candidate joins a cluster when IoU with its fused box > this
    cfg.MODEL.ROI_HEADS.WBF = CN()
    cfg.MODEL.ROI_HEADS.WBF.IOU_THRESH = 0.55
    cfg.MODEL.ROI_HEADS.GT_JITTER = CN()
    # Copies of each ground-truth box, jittered, added to the proposals before sampling (0 = off):
    # extra positives at varied IoU and near-miss negatives for the box head (proposal_jitter.py).
    cfg.MODEL.ROI_HEADS.GT_JITTER.NUM_PER_GT = 0
    # Std of the centre shift (in box widths/heights) and of the log-size change; 0.2: ~57% of the
    # copies at IoU >= 0.5 with their box, the rest in (0.1, 0.5).
    cfg.MODEL.ROI_HEADS.GT_JITTER.SIGMA = 0.2
    # Inference: drop a detection when a better-scored one of its class covers at least this share of
    # its area (fragments of a long defect that NMS keeps; containment.py). 0 = off.
    cfg.MODEL.ROI_HEADS.CONTAIN_THRESH_TEST = 0.0
    # Inference: drop a detection when a better-scored one of *another* class overlaps it with IoU >= this
    # (class-agnostic NMS on top of per-class NMS: the classifier's second guess on the same defect;
    # containment.py). 0 = off.
    cfg.MODEL.ROI_HEADS.CROSS_CLASS_IOU_TEST = 0.0
