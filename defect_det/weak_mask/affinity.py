"""Pixel affinities on the M x M mask grid of each ROI, from image-level cues.

Shared by the box-supervised mask losses (:mod:`.mask_head`) and the entropy-constrained
refinement (:mod:`.refine`); equations in projects/WeakMask/README.md.

**Cues.** Per image n of the batch, :func:`image_cues` stacks the input image I (C channels; the
mask head passes pixel values / 255, i.e. intensities in [0, 1], whatever PIXEL_MEAN / PIXEL_STD
are) and, where the image has a template T (same units), the difference magnitude ``||I - T||_2``
over channels (1 channel; 0 where there is no template). :func:`pool_cues` ROIAligns them onto each
ROI's M x M grid (the grid of the mask logits), averaging each cell (adaptive sampling), so cell
(v, u) of ROI r carries colour c_i and difference d_i.

**Neighbours.** The K = 8 neighbours of cell i = (v, u) are (v + a * D, u + b * D) for
(a, b) in {-1, 0, 1}^2 \\ {(0, 0)} (:func:`neighbour_offsets`, D = dilation); neighbour k of every
cell is read with one shifted view (:func:`shift_to_neighbours`), so everything is batched over ROIs.

**Affinity.** (:func:`pairwise_affinity`)::

    w_ik = exp(-||c_i - c_j||_2 / theta) * exp(-|d_i - d_j| / theta_T)    (j = neighbour k of i)

with the second factor 1 for ROIs whose image has no template (or when the template cue is off),
and w_ik = 0 where the neighbour falls outside the grid. Similar colour AND similar difference
magnitude are needed for a strong edge.
"""
from typing import List, Optional, Tuple

import torch
from detectron2.layers import ROIAlign
from detectron2.modeling.poolers import convert_boxes_to_pooler_format
from detectron2.structures import Boxes

__all__ = [
    "image_cues",
    "neighbour_offsets",
    "neighbour_sum",
    "pairwise_affinity",
    "pool_cues",
    "shift_to_neighbours",
]


def neighbour_offsets(dilation: int) -> List[Tuple[int, int]]:
    """The K = 8 offsets (dy, dx) of the dilated 3 x 3 neighbourhood, centre excluded."""
    if int(dilation) != dilation or dilation < 1:
        raise ValueError(f"dilation must be an integer >= 1, got {dilation!r}")
    d = int(dilation)
    return [(a * d, b * d) for a in (-1, 0, 1) for b in (-1, 0, 1) if (a, b) != (0, 0)]


def shift_to_neighbours(x: torch.Tensor, offsets: List[Tuple[int, int]], fill: float = 0.0) -> torch.Tensor:
    """
    Values at the neighbours of every cell.

    Args:
        x: (R, C, M, M') tensor.
        offsets: K offsets (dy, dx).
        fill: value where the neighbour is outside the grid.
    Returns:
        (R, K, C, M, M'): ``out[r, k, :, v, u] = x[r, :, v + dy_k, u + dx_k]`` (``fill`` outside).
    """
    if x.dim() != 4:
        raise ValueError(f"x must be (R, C, M, M'), got shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    p = max(max(abs(dy), abs(dx)) for dy, dx in offsets)
    padded = torch.nn.functional.pad(x, (p, p, p, p), value=fill)
    return torch.stack([padded[:, :, p + dy : p + dy + h, p + dx : p + dx + w] for dy, dx in offsets], dim=1)


def neighbour_sum(x: torch.Tensor, weights: torch.Tensor, offsets: List[Tuple[int, int]]) -> torch.Tensor:
    """
    Weighted sum over the neighbours: ``out[r, :, v, u] = sum_k weights[r, k, v, u] *
    x[r, :, v + dy_k, u + dx_k]`` (0 outside the grid); equals
    ``(weights[:, :, None] * shift_to_neighbours(x, offsets)).sum(1)`` without its (R, K, C, M, M)
    intermediate.

    Args:
        x: (R, C, M, M'); weights: (R, K, M, M'); offsets: K offsets (dy, dx).
    Returns:
        (R, C, M, M').
    """
    if weights.shape[1] != len(offsets) or weights.shape[-2:] != x.shape[-2:] or weights.shape[0] != x.shape[0]:
        raise ValueError(f"weights {tuple(weights.shape)} must be (R, K={len(offsets)}, M, M') for x {tuple(x.shape)}")
    h, w = x.shape[-2:]
    p = max(max(abs(dy), abs(dx)) for dy, dx in offsets)
    padded = torch.nn.functional.pad(x, (p, p, p, p))
    out = torch.zeros_like(x)
    for k, (dy, dx) in enumerate(offsets):  # 8 shifted views, each batched over all ROIs
        out.addcmul_(weights[:, k : k + 1], padded[:, :, p + dy : p + dy + h, p + dx : p + dx + w])
    return out


def image_cues(
    images: torch.Tensor, templates: Optional[torch.Tensor] = None, template_valid: Optional[torch.Tensor] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """
    Image-level cue maps of a batch.

    Args:
        images: (N, C, H, W) images (padded batch), in the units of the affinity's theta.
        templates: (N, C, H, W) templates of the same batch, same units, or None.
        template_valid: (N,) bool, which images really have a template (None: all, if templates).
    Returns:
        (cues, valid): cues (N, C + 1, H, W) = [image; ||I - T||_2] (last channel 0 where no
        template), valid (N,) bool.
    """
    if images.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    n = images.shape[0]
    if templates is None:
        diff = images.new_zeros(n, 1, *images.shape[-2:])
        valid = torch.zeros(n, dtype=torch.bool, device=images.device)
    else:
        if templates.shape != images.shape:
            raise ValueError(f"templates {tuple(templates.shape)} must have the images' shape {tuple(images.shape)}")
        valid = (torch.ones(n, dtype=torch.bool, device=images.device) if template_valid is None
                 else template_valid.to(device=images.device, dtype=torch.bool))
        if valid.shape != (n,):
            raise ValueError(f"template_valid must be ({n},), got shape {tuple(valid.shape)}")
        diff = (images - templates).square().sum(1, keepdim=True).sqrt() * valid.view(n, 1, 1, 1).to(images.dtype)
    return torch.cat([images, diff], dim=1), valid


def pool_cues(
    cues: torch.Tensor, box_lists: List[Boxes], size: Tuple[int, int], sampling_ratio: int = 0
) -> torch.Tensor:
    """
    ROIAlign of image-level cue maps onto each ROI's grid (boxes in input-image pixels).

    Args:
        cues: (N, C, H, W).
        box_lists: N ``Boxes`` (XYXY), one per image, R boxes in total.
        size: (M, M') output grid.
        sampling_ratio: ROIAlign samples per cell side; 0 = adaptive (ceil(box side / M)), i.e. the
            cell average.
    Returns:
        (R, C, M, M'), rows in the order of ``box_lists`` (image by image).
    """
    if len(box_lists) != cues.shape[0]:
        raise ValueError(f"{len(box_lists)} box lists for a batch of {cues.shape[0]} cue maps")
    rois = convert_boxes_to_pooler_format(box_lists).to(cues.dtype)
    if rois.shape[0] == 0:
        return cues.new_zeros(0, cues.shape[1], *size)
    return ROIAlign(tuple(size), 1.0, sampling_ratio, aligned=True)(cues, rois)


# the padding value of the cue maps outside the ROI grid (in units of theta): exp(-1e6) == 0.0 exactly
_FAR = 1e6


def pairwise_affinity(
    colour: torch.Tensor,
    offsets: List[Tuple[int, int]],
    theta: float,
    diff: Optional[torch.Tensor] = None,
    diff_valid: Optional[torch.Tensor] = None,
    theta_template: float = 1.0,
) -> torch.Tensor:
    """
    Affinities between each cell and its K neighbours (module doc).

    Args:
        colour: (R, C, M, M) pooled colour c.
        offsets: K neighbour offsets (:func:`neighbour_offsets`).
        theta: colour scale (units of ``colour``), > 0.
        diff: (R, 1, M, M) pooled difference magnitude d, or None (no template cue).
        diff_valid: (R,) bool, ROIs whose image has a template (None: all).
        theta_template: difference scale, > 0.
    Returns:
        (R, K, M, M) affinities in [0, 1]; 0 where the neighbour is outside the grid.
    """
    if theta <= 0:
        raise ValueError(f"theta must be > 0, got {theta}")
    if theta_template <= 0:
        raise ValueError(f"theta_template must be > 0, got {theta_template}")
    if colour.dim() != 4:
        raise ValueError(f"colour must be (R, C, M, M), got shape {tuple(colour.shape)}")
    r, _, h, w = colour.shape
    p = max(max(abs(dy), abs(dx)) for dy, dx in offsets)
    # padding far away: the distance to an outside neighbour is >= _FAR, so its affinity exp(-distance) is exactly 0
    # in float32 and float64 (finite, unlike +inf, which ONNX Runtime turns into NaN)
    col = torch.nn.functional.pad(colour / theta, (p, p, p, p), value=_FAR)
    dif = None
    if diff is not None:
        d = diff / theta_template
        if diff_valid is not None:  # no template: d = 0 everywhere, the factor is exp(0) = 1
            d = d * diff_valid.view(-1, 1, 1, 1).to(d.dtype)
        dif = torch.nn.functional.pad(d, (p, p, p, p), value=_FAR)
    out = colour.new_empty(r, len(offsets), h, w)
    centre = (slice(None), slice(None), slice(p, p + h), slice(p, p + w))
    for k, (dy, dx) in enumerate(offsets):  # 8 shifted views, each batched over all ROIs
        nb = (slice(None), slice(None), slice(p + dy, p + dy + h), slice(p + dx, p + dx + w))
        logw = (col[centre] - col[nb]).square().sum(1).sqrt()   # (R, M, M); .norm(dim=1) is slower on CPU
        if dif is not None:
            logw = logw + (dif[centre] - dif[nb])[:, 0].abs()
        out[:, k] = logw
    return out.neg_().exp_()
