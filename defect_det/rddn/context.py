"""RDDN's context reference (paper section IV-C): for every region r = (x, y, w, h) the concentric box
r_c = (x, y, k*w, k*h), clipped to the image, is pooled too, and the two ROI features are concatenated
along channels before the box head (so classification and regression see both).
``MODEL.ROI_BOX_HEAD.CONTEXT_SCALE`` is k (1.0 = off); ``CONTEXT_ONLY`` pools only r_c (the paper's CR*
ablation)."""
from typing import List, Optional, Tuple

import torch
from detectron2.structures import Boxes
from torch import nn

__all__ = ["ContextROIPooler", "context_boxes"]


def context_boxes(boxes: torch.Tensor, image_size: Tuple[int, int], scale: float) -> torch.Tensor:
    """
    Concentric context boxes.

    Args:
        boxes: (R, 4) XYXY absolute.
        image_size: (height, width) of the image the boxes live in.
        scale: k >= 1; width and height are multiplied by k about the box centre.
    Returns:
        (R, 4) XYXY boxes, clipped to [0, width] x [0, height].
    """
    cx = (boxes[:, 0] + boxes[:, 2]) * 0.5
    cy = (boxes[:, 1] + boxes[:, 3]) * 0.5
    hw = (boxes[:, 2] - boxes[:, 0]) * (0.5 * scale)
    hh = (boxes[:, 3] - boxes[:, 1]) * (0.5 * scale)
    h, w = image_size
    return torch.stack(
        [(cx - hw).clamp(0, w), (cy - hh).clamp(0, h), (cx + hw).clamp(0, w), (cy + hh).clamp(0, h)], dim=1
    )


class ContextROIPooler(nn.Module):
    """
    Wraps a Detectron2 ``ROIPooler``: pools each box and its context box (module doc).

    Output: (R, C_out, S, S) with C_out = 2C (region ++ context), C (scale 1: region only) or
    C (``context_only``). Clipping needs the image size of every box list: the caller passes them.
    """

    def __init__(self, pooler: nn.Module, scale: float = 1.5, context_only: bool = False):
        super().__init__()
        if scale < 1.0:
            raise ValueError(f"MODEL.ROI_BOX_HEAD.CONTEXT_SCALE must be >= 1 (1 = off), got {scale}")
        if context_only and scale == 1.0:
            raise ValueError("MODEL.ROI_BOX_HEAD.CONTEXT_ONLY needs CONTEXT_SCALE > 1")
        self.pooler = pooler
        self.scale = float(scale)
        self.context_only = context_only

    @property
    def enabled(self) -> bool:
        return self.scale != 1.0

    def channel_factor(self) -> int:
        """Output channels / input channels."""
        return 2 if self.enabled and not self.context_only else 1

    def forward(self, x: List[torch.Tensor], box_lists: List[Boxes],
                image_sizes: Optional[List[Tuple[int, int]]] = None) -> torch.Tensor:
        """
        Args:
            x: per-level (N, C, H_l, W_l) features.
            box_lists: N ``Boxes``, one per image.
            image_sizes: N (height, width), the images the boxes are clipped to; needed when enabled.
        Returns:
            (R, C_out, S, S).
        """
        if not self.enabled:
            return self.pooler(x, box_lists)
        if image_sizes is None or len(image_sizes) != len(box_lists):
            raise ValueError(f"ContextROIPooler needs the (height, width) of each of the {len(box_lists)} box lists "
                             f"(got {None if image_sizes is None else len(image_sizes)})")
        ctx = [Boxes(context_boxes(b.tensor, s, self.scale)) for b, s in zip(box_lists, image_sizes)]
        context = self.pooler(x, ctx)
        if self.context_only:
            return context
        return torch.cat([self.pooler(x, box_lists), context], dim=1)
