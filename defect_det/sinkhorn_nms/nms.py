"""Sinkhorn NMS: duplicate suppression as entropy-regularised soft assignment of detections to regions.

Batched over images (padding masks, one :func:`defect_det.layers.sinkhorn` call per alternation for
the whole batch), per-image number of regions K_b, a dustbin slot, refined region centres, and
differentiable w.r.t. scores, boxes and features (not w.r.t. the integer K or the seed choice).
The construction and its defaults are written down in ``projects/SinkhornNMS/README.md``.

Shapes: B images, N candidate detections per image (padded), K regions per image (padded), D
feature channels. A candidate is one (box, class, score) triple, i.e. Detectron2's per-class boxes
after the score threshold.
"""
from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch
from torchvision.ops import batched_nms, box_iou

from ..layers.sinkhorn import sinkhorn

__all__ = ["SinkhornNMSParams", "SinkhornNMSResult", "sinkhorn_nms", "pad_candidates", "pairwise_box_iou"]

# Cost added to pairs of different classes: exp(-FORBIDDEN / tau) is exactly 0 for any tau <= 1.
FORBIDDEN = 1e4


@dataclass
class SinkhornNMSParams:
    """Hyper-parameters (config keys ``MODEL.SINKHORN_NMS.*``, see ``add_sinkhorn_nms_config``).

    alpha, beta, gamma: weights of quality (1 - s_j), feature (1 - cos) and spatial terms.
    tau: entropic temperature (Sinkhorn eps), > 0.
    spatial: "iou" (1 - IoU(box_j, region box)) or "center" (centre distance / image diagonal).
    dustbin_cost: cost of sending a candidate to the background slot (independent of its score).
    seed_iou: IoU threshold of the greedy seeding (hard NMS over candidates, per class).
    max_regions: cap on K per image (the greedy keep list is truncated to its top-scoring K).
    refine_iters: alternations assignment -> centres -> assignment after the first assignment.
    sinkhorn_iters: Sinkhorn iterations per assignment.
    score_power: region weights are P_jk * s_j ** score_power (score-weighted box/score fusion).
    """

    alpha: float = 1.0
    beta: float = 0.0
    gamma: float = 1.0
    tau: float = 0.1
    spatial: str = "iou"
    dustbin_cost: float = 0.5
    seed_iou: float = 0.5
    max_regions: int = 100
    refine_iters: int = 2
    sinkhorn_iters: int = 50
    score_power: float = 1.0

    def check(self):
        if not self.tau > 0:
            raise ValueError(f"sinkhorn_nms: tau must be > 0, got {self.tau}")
        if self.spatial not in ("iou", "center"):
            raise ValueError(f"sinkhorn_nms: spatial must be 'iou' or 'center', got {self.spatial!r}")
        for name in ("alpha", "beta", "gamma", "dustbin_cost", "score_power"):
            if getattr(self, name) < 0:
                raise ValueError(f"sinkhorn_nms: {name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.seed_iou <= 1:
            raise ValueError(f"sinkhorn_nms: seed_iou must be in [0, 1], got {self.seed_iou}")
        if self.max_regions < 1 or self.refine_iters < 0 or self.sinkhorn_iters < 1:
            raise ValueError("sinkhorn_nms: max_regions >= 1, refine_iters >= 0, sinkhorn_iters >= 1")
        return self


class SinkhornNMSResult(NamedTuple):
    """boxes (B, K, 4) XYXY, scores (B, K), classes (B, K) long, valid (B, K) bool,
    rep (B, K) long: index of the candidate with the largest weight P_jk * s_j in each region
    (the "kept" detection, for comparisons with hard NMS), plan (B, N, K + 1) with the dustbin last."""

    boxes: torch.Tensor
    scores: torch.Tensor
    classes: torch.Tensor
    valid: torch.Tensor
    rep: torch.Tensor
    plan: torch.Tensor


def pairwise_box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Batched IoU of XYXY boxes: a (B, N, 4), b (B, K, 4) -> (B, N, K); 0 for empty boxes."""
    lt = torch.maximum(a[:, :, None, :2], b[:, None, :, :2])
    rb = torch.minimum(a[:, :, None, 2:], b[:, None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[..., 2:] - a[..., :2]).clamp(min=0).prod(-1)
    area_b = (b[..., 2:] - b[..., :2]).clamp(min=0).prod(-1)
    union = area_a[:, :, None] + area_b[:, None, :] - inter
    return inter / union.clamp(min=1e-9)


def pad_candidates(items, like: torch.Tensor):
    """Per-image candidate lists -> one padded batch (differentiable w.r.t. boxes and scores).

    Args:
        items: list over images of (boxes (n_i, 4), scores (n_i,), classes (n_i,) long).
        like: any tensor giving dtype/device when every list is empty.
    Returns:
        boxes (B, n, 4), scores (B, n), classes (B, n), mask (B, n) with n = max(n_i, 1).
    """
    n = max([sc.numel() for _, sc, _ in items] + [1])
    boxes, scores, classes, mask = [], [], [], []
    for bx, sc, cl in items:
        k = n - sc.numel()
        boxes.append(torch.cat([bx.to(like.dtype), like.new_zeros(k, 4)], 0))
        scores.append(torch.cat([sc.to(like.dtype), like.new_zeros(k)], 0))
        classes.append(torch.cat([cl, cl.new_zeros(k)], 0))
        mask.append(torch.arange(n, device=like.device) < sc.numel())
    return torch.stack(boxes), torch.stack(scores), torch.stack(classes), torch.stack(mask)


def _greedy_seeds(boxes, scores, classes, mask, iou, max_regions):
    """Hard-NMS keep lists of every image in ONE batched_nms call (image and class in the group id).
    Returns seed indices (B, K) into the candidates (padded with 0) and their mask (B, K)."""
    B, N = scores.shape
    flat = mask.reshape(-1).nonzero().squeeze(1)
    img = flat // N
    num_cls = int(classes.max().item()) + 1 if classes.numel() else 1
    group = img * num_cls + classes.reshape(-1)[flat]
    with torch.no_grad():
        keep = batched_nms(boxes.reshape(-1, 4)[flat].float(), scores.reshape(-1)[flat].float(), group, iou)
    keep = flat[keep]  # sorted by decreasing score
    kimg = keep // N
    # rank of each kept index within its image (keep is score-sorted across the batch)
    order = torch.argsort(kimg, stable=True)
    keep, kimg = keep[order], kimg[order]
    counts = torch.bincount(kimg, minlength=B)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(keep.numel(), device=keep.device) - starts[kimg]
    sel = rank < max_regions
    keep, kimg, rank = keep[sel], kimg[sel], rank[sel]
    K = max(int(counts.clamp(max=max_regions).max().item()) if B else 0, 1)
    seed_idx = torch.zeros(B, K, dtype=torch.long, device=scores.device)
    seed_mask = torch.zeros(B, K, dtype=torch.bool, device=scores.device)
    seed_idx[kimg, rank] = keep % N
    seed_mask[kimg, rank] = True
    return seed_idx, seed_mask


def _gather(x, idx):
    """x (B, N, ...) gathered at idx (B, K) -> (B, K, ...)."""
    return x.gather(1, idx.view(*idx.shape, *([1] * (x.dim() - 2))).expand(*idx.shape, *x.shape[2:]))


def sinkhorn_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    classes: torch.Tensor,
    mask: Optional[torch.Tensor] = None,
    features: Optional[torch.Tensor] = None,
    image_sizes: Optional[torch.Tensor] = None,
    params: Optional[SinkhornNMSParams] = None,
) -> SinkhornNMSResult:
    """Soft, differentiable NMS over a padded batch of candidate detections.

    Args:
        boxes: (B, N, 4) XYXY candidate boxes.
        scores: (B, N) candidate scores in [0, 1].
        classes: (B, N) long class ids (regions never mix classes).
        mask: (B, N) bool, True = real candidate (default all).
        features: optional (B, N, D) candidate features for the beta term.
        image_sizes: optional (B, 2) (H, W), for the "center" spatial term (default: box extent).
        params: :class:`SinkhornNMSParams`.
    Returns:
        :class:`SinkhornNMSResult`. Region k of image b is ``valid[b, k]``; its score is the
        weighted mean of its members' scores, its box the weighted mean of their boxes, with
        weights ``P_jk * s_j ** score_power`` (P = Sinkhorn plan over K_b regions + dustbin).
    """
    p = (params or SinkhornNMSParams()).check()
    if boxes.dim() != 3 or boxes.shape[-1] != 4:
        raise ValueError(f"sinkhorn_nms: boxes must be (B, N, 4), got {tuple(boxes.shape)}")
    B, N = boxes.shape[:2]
    if tuple(scores.shape) != (B, N) or tuple(classes.shape) != (B, N):
        raise ValueError(
            f"sinkhorn_nms: scores and classes must be (B, N) = {(B, N)}, got "
            f"{tuple(scores.shape)} and {tuple(classes.shape)}"
        )
    if mask is None:
        mask = torch.ones(B, N, dtype=torch.bool, device=boxes.device)
    if not (torch.isfinite(boxes[mask]).all() and torch.isfinite(scores[mask]).all()):
        raise ValueError("sinkhorn_nms: boxes or scores contain NaN/inf")
    if features is not None and (features.dim() != 3 or tuple(features.shape[:2]) != (B, N)):
        raise ValueError(f"sinkhorn_nms: features must be (B, N, D), got {tuple(features.shape)}")
    dtype = boxes.dtype if boxes.dtype in (torch.float32, torch.float64) else torch.float32

    seed_idx, seed_mask = _greedy_seeds(boxes, scores, classes, mask, p.seed_iou, p.max_regions)
    K = seed_idx.shape[1]
    region_boxes = _gather(boxes, seed_idx)
    region_cls = _gather(classes, seed_idx)
    region_feat = _gather(features, seed_idx) if features is not None and p.beta > 0 else None
    if p.spatial == "center":
        if image_sizes is not None:
            diag = image_sizes.to(dtype).pow(2).sum(-1).sqrt()  # (B,)
        else:
            diag = (boxes.amax((1, 2)) - boxes.amin((1, 2))).abs().to(dtype) * 2 ** 0.5
        diag = diag.clamp(min=1e-6)[:, None, None]

    quality = p.alpha * (1 - scores.to(dtype))  # (B, N)
    w_score = scores.to(dtype).clamp(min=0) ** p.score_power  # (B, N)
    row_mask = mask
    col_mask = torch.cat([seed_mask, seed_mask.any(1, keepdim=True)], 1)  # regions + dustbin
    a = row_mask.to(dtype)
    b = None
    for it in range(p.refine_iters + 1):
        if p.spatial == "iou":
            spatial = 1 - pairwise_box_iou(boxes.to(dtype), region_boxes.to(dtype))
        else:
            cj = (boxes[..., :2] + boxes[..., 2:]) / 2
            ck = (region_boxes[..., :2] + region_boxes[..., 2:]) / 2
            spatial = (cj[:, :, None] - ck[:, None]).pow(2).sum(-1).sqrt() / diag
        cost = quality[:, :, None] + p.gamma * spatial  # (B, N, K)
        if region_feat is not None:
            cos = torch.nn.functional.cosine_similarity(features[:, :, None], region_feat[:, None], dim=-1)
            cost = cost + p.beta * (1 - cos)
        cost = cost + FORBIDDEN * (classes[:, :, None] != region_cls[:, None, :]).to(dtype)
        cost = torch.cat([cost, torch.full_like(cost[..., :1], p.dustbin_cost)], -1)  # (B, N, K+1)
        cost = torch.where(row_mask[:, :, None] & col_mask[:, None, :], cost, torch.zeros_like(cost))
        if b is None:
            # capacities: soft counts of the plain per-candidate assignment (row softmax)
            logits = (-cost / p.tau).masked_fill(~col_mask[:, None, :], -1e30)
            b = (logits.softmax(-1) * a[:, :, None]).sum(1)
        b = b * col_mask.to(dtype)
        # keep every valid column strictly positive so the op never sees a 0-mass region
        b = torch.where(col_mask, b.clamp(min=1e-6), b)
        b = b * (a.sum(1, keepdim=True) / b.sum(1, keepdim=True).clamp(min=1e-12))
        plan = sinkhorn(cost, p.tau, a=a, b=b, row_mask=row_mask, col_mask=col_mask,
                        max_iter=p.sinkhorn_iters).plan  # (B, N, K+1)
        P = plan[..., :K]
        wgt = P * w_score[:, :, None]  # (B, N, K)
        norm = wgt.sum(1).clamp(min=1e-12)  # (B, K)
        region_boxes = torch.einsum("bnk,bnc->bkc", wgt, boxes.to(dtype)) / norm[..., None]
        if region_feat is not None:
            region_feat = torch.einsum("bnk,bnd->bkd", wgt, features.to(dtype)) / norm[..., None]
        b = plan.sum(1)  # capacities for the next alternation
    region_scores = (wgt * scores.to(dtype)[:, :, None]).sum(1) / norm
    rep = wgt.argmax(1)
    valid = seed_mask & (P.sum(1) > 1e-6)
    return SinkhornNMSResult(region_boxes, region_scores * valid, region_cls, valid, rep, plan)
