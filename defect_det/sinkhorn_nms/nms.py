"""Sinkhorn NMS: duplicate suppression as entropy-regularised soft assignment of detections to regions.

Batched over images (padding masks), per-image number of regions K_b, a dustbin slot, refined region
centres, and differentiable w.r.t. scores, boxes and features (not w.r.t. the integer K or the seed
choice). The construction and its defaults are written down in ``projects/SinkhornNMS/README.md``.

Sparsity (issue 17): a candidate may only join a region of its own class whose seed box it overlaps
(IoU > ``iou_floor``); every other pair is forbidden (zero mass). The allowed pairs split the batch into
independent *blocks* — connected components of the candidate-region graph, one class of one image each —
and each block has its own dustbin slot. ``mode="blocked"`` (default) packs the blocks of the whole batch
block-diagonally into a few small padded problems, ``mode="dense"`` solves the very same problem as one
(N, 2K) matrix per image (regions + one dustbin column per block; a test checks that both give the same
plan), ``mode="shared"`` is the earlier formulation (one (N, K + 1) matrix and one dustbin per image, only
classes forbidden). Every mode calls :func:`defect_det.layers.sinkhorn` once per refinement alternation for
the whole batch; the first assignment has a closed form (:func:`_row_softmax_plan`).

Shapes: B images, N candidate detections per image (padded), K regions per image (padded), D
feature channels. A candidate is one (box, class, score) triple, i.e. Detectron2's per-class boxes
after the score threshold.
"""
from dataclasses import dataclass
from typing import NamedTuple, Optional, Tuple

import torch
from torchvision.ops import batched_nms

from ..layers.sinkhorn import sinkhorn
from .blocks import (  # noqa: F401  (pairwise_box_iou, paired_box_iou: public here)
    _area_cm,
    _iou_cm,
    _layout,
    _Layout,
    _pack_blocks,
    _rank_in_group,
    _support,
    _Support,
    _take,
    paired_box_iou,
    pairwise_box_iou,
)

__all__ = [
    "SinkhornNMSParams",
    "SinkhornNMSResult",
    "sinkhorn_nms",
    "pad_candidates",
    "pairwise_box_iou",
    "paired_box_iou",
    "MODES",
]

# Cost of a forbidden pair: exp(-FORBIDDEN / tau) is exactly 0 for any tau <= 1, in float32 and float64.
FORBIDDEN = 1e4
MODES = ("blocked", "dense", "shared")


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
    sinkhorn_iters: Sinkhorn iterations per assignment (at most, see ``tol``).
    score_power: region weights are P_jk * s_j ** score_power (score-weighted box/score fusion).
    mode: "blocked" (independent blocks, packed), "dense" (the same problem, one matrix per image) or
        "shared" (the earlier formulation: one dustbin per image, only other classes forbidden).
    iou_floor: a candidate may join a region only if IoU(candidate box, seed box) > iou_floor (its own
        seed always); < 0 forbids only other classes. Not used by "shared".
    tol: early exit of each assignment once the row-marginal L1 error (in candidates' mass) of every
        problem handed to the op (a pack of blocks in "blocked", an image otherwise) is below tol
        (0 = always ``sinkhorn_iters`` iterations).
    warm_start: start each alternation from the previous alternation's dual potentials of the regions
        and dustbins.
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
    mode: str = "blocked"
    iou_floor: float = 0.0
    tol: float = 0.01
    warm_start: bool = True

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
        if self.mode not in MODES:
            raise ValueError(f"sinkhorn_nms: mode must be one of {MODES}, got {self.mode!r}")
        if not self.iou_floor < 1:
            raise ValueError(f"sinkhorn_nms: iou_floor must be < 1, got {self.iou_floor}")
        if not self.tol >= 0:
            raise ValueError(f"sinkhorn_nms: tol must be >= 0, got {self.tol}")
        return self


class SinkhornNMSResult(NamedTuple):
    """boxes (B, K, 4) XYXY, scores (B, K), classes (B, K) long, valid (B, K) bool,
    rep (B, K) long: index of the candidate with the largest weight P_jk * s_j in each region
    (the "kept" detection, for comparisons with hard NMS), plan (B, N, K + 1) with the dustbin last
    (in "blocked" / "dense" the dustbin of the candidate's block; 1 for a candidate with no allowed
    region; None when not asked for), n_iter: Sinkhorn iterations run in each alternation (0 for the
    first, which is solved in closed form)."""

    boxes: torch.Tensor
    scores: torch.Tensor
    classes: torch.Tensor
    valid: torch.Tensor
    rep: torch.Tensor
    plan: Optional[torch.Tensor]
    n_iter: Tuple[int, ...] = ()


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
    img, pos = mask.nonzero(as_tuple=True)
    num_cls = int(classes.max().item()) + 1 if classes.numel() else 1
    with torch.no_grad():
        group = img * num_cls + classes[img, pos]
        flat = img * N + pos
        keep = batched_nms(_take(boxes.reshape(-1, 4), flat).float(), _take(scores.reshape(-1), flat).float(),
                           group, iou)  # sorted by decreasing score
        kimg, kpos = _take(img, keep), _take(pos, keep)
        # rank of each kept index within its image (keep is score-sorted across the batch)
        order = torch.argsort(kimg, stable=True)
        kimg, kpos = _take(kimg, order), _take(kpos, order)
        counts = torch.bincount(kimg, minlength=B)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(kimg.numel(), device=kimg.device) - _take(starts, kimg)
        sel = (rank < max_regions).nonzero().squeeze(1)
        kimg, kpos, rank = _take(kimg, sel), _take(kpos, sel), _take(rank, sel)
        K = max(int(counts.clamp(max=max_regions).max().item()) if B else 0, 1)
        seed_idx = torch.zeros(B, K, dtype=torch.long, device=scores.device)
        seed_mask = torch.zeros(B, K, dtype=torch.bool, device=scores.device)
        seed_idx[kimg, rank] = kpos
        seed_mask[kimg, rank] = True
    return seed_idx, seed_mask


def _gather(x, idx):
    """x (B, N, ...) gathered at idx (B, K) -> (B, K, ...)."""
    return x.gather(1, idx.view(*idx.shape, *([1] * (x.dim() - 2))).expand(*idx.shape, *x.shape[2:]))


def _row_softmax_plan(cost, tau, a, col_mask):
    """The first assignment in closed form: P_ij = a_i softmax_j(-C_ij / tau) over the valid columns.
    With capacities b = P^T 1 (the soft counts) this *is* the Sinkhorn solution: P has the form
    exp(u_i - C_ij / tau + v_j) with v = 0 and both marginals, and Sinkhorn from v = 0 stops after one
    iteration. cost (S, NR, M), a (S, NR), col_mask (S, M) -> plan (S, NR, M)."""
    logits = (-cost / tau).masked_fill(~col_mask[:, None, :], -1e30)
    return logits.softmax(-1) * a[:, :, None]


def _edge_softmax(cost_e, row_e, n_rows, dust_cost, tau):
    """:func:`_row_softmax_plan` on the allowed pairs: cost_e (E,) of the pairs, row_e (E,) their row in
    0..n_rows-1, every row also has its dustbin at ``dust_cost`` -> plan_e (E,), dust (n_rows,)."""
    logit_e = -cost_e / tau
    dust_logit = -dust_cost / tau
    with torch.no_grad():  # the shift cancels in the softmax
        shift = logit_e.new_full((n_rows,), dust_logit).scatter_reduce(0, row_e, logit_e, "amax")
    exp_e = (logit_e - _take(shift, row_e)).exp()
    dust = (dust_logit - shift).exp()
    total = dust.index_add(0, row_e, exp_e)
    return exp_e / _take(total, row_e), dust / total


def _assign(cost, tau, a, b, row_mask, col_mask, g_prev, max_iter, tol):
    """One balanced Sinkhorn assignment of (S, R, C) with row marginals ``a`` (S, R) and capacities
    ``b`` (S, C), the latter kept positive at valid columns and rescaled to the rows' mass; warm start
    from the column duals ``g_prev`` (S, C) (or None) by shifting the cost: C - g_prev has the same
    plan, and the op starts from g = g_prev. Returns plan (S, R, C), column duals of ``cost`` (S, C),
    iterations run."""
    # keep every valid column strictly positive so the op never sees a 0-mass column
    b = torch.where(col_mask, b.clamp(min=1e-6), 0.0)
    b = b * (a.sum(1, keepdim=True) / b.sum(1, keepdim=True).clamp(min=1e-12))
    shifted = cost if g_prev is None else cost - g_prev[:, None, :]
    # the problem is valid by construction (finite costs, exact masks, equal masses): no input checks
    res = sinkhorn(shifted, tau, a=a, b=b, row_mask=row_mask, col_mask=col_mask, max_iter=max_iter, tol=tol,
                   validate=False)
    g = res.g if g_prev is None else res.g + g_prev  # both 0 at invalid columns
    return res.plan, g, res.n_iter


def _safe_norm(sq: torch.Tensor) -> torch.Tensor:
    """sqrt of squared distances with a finite gradient at 0 (a seed's distance to its own region)."""
    return sq.clamp(min=1e-12).sqrt()


def _image_diagonal(boxes, image_sizes, dtype):
    """(B,) image diagonals for the "center" term (default: the extent of the boxes), >= 1e-6."""
    if image_sizes is not None:
        diag = image_sizes.to(dtype).pow(2).sum(-1).sqrt()
    else:
        diag = (boxes.amax((1, 2)) - boxes.amin((1, 2))).abs().to(dtype) * 2 ** 0.5
    return diag.clamp(min=1e-6)


def _sparse_sinkhorn_nms(p, boxes, scores, classes, mask, features, image_sizes, seed_idx, seed_mask, dtype,
                         return_plan):
    """Modes "blocked" and "dense": the problem on the allowed pairs only (module doc). Per-pair
    quantities live on the E allowed pairs, region ones on the R valid seeds; only the op's input is
    laid out as a padded (S, NR, M) tensor. Returns (boxes, scores, valid, rep, plan, n_iter) in the
    (B, K) / (B, N, K + 1) layout of :class:`SinkhornNMSResult` (plan None unless ``return_plan``)."""
    B, N = scores.shape
    K = seed_idx.shape[1]
    sup = _support(boxes, classes, mask, seed_idx, seed_mask, p.iou_floor)
    lay = _layout(sup, B, N, K, p.mode)
    S, NR, M = lay.shape
    ec, er, R, n = sup.edge_cand, sup.edge_reg, sup.reg_k.numel(), sup.rows.numel()
    x_cm = boxes.reshape(-1, 4).to(dtype).t().contiguous()  # (4, B*N)
    xe = _take(x_cm, ec, 1)  # (4, E)
    se = _take(scores.reshape(-1).to(dtype), ec)  # (E,)
    area_e = _area_cm(xe)
    quality = p.alpha * (1 - se)  # (E,)
    we = se.clamp(min=0) ** p.score_power  # (E,) score weights of the fusion
    region_boxes = _take(x_cm, sup.reg_cand, 1)  # (4, R)
    use_feat = features is not None and p.beta > 0
    if use_feat:
        f = features.reshape(B * N, -1).to(dtype)
        fe, region_feat = _take(f, ec), _take(f, sup.reg_cand)  # (E, D), (R, D)
    if p.spatial == "center":
        diag_e = _take(_take(_image_diagonal(boxes, image_sizes, dtype), sup.reg_img), er)
    base = torch.full((S * NR * M,), FORBIDDEN, dtype=dtype, device=boxes.device)
    base[lay.dust_at] = p.dustbin_cost
    mass = lay.cand_mask.to(dtype)  # every candidate has mass 1
    cap_at = torch.cat([_take(lay.reg_slot, er), lay.dust_slot])  # (E + n,) slot of every plan entry, into S * M
    g = None
    n_iter = []
    for it in range(p.refine_iters + 1):
        rb = _take(region_boxes, er, 1)  # (4, E)
        if p.spatial == "iou":
            spatial = 1 - _iou_cm(xe, rb, area_e)
        else:
            d = (xe[:2] + xe[2:] - rb[:2] - rb[2:]) / 2
            spatial = _safe_norm(d[0] * d[0] + d[1] * d[1]) / diag_e
        cost_e = quality + p.gamma * spatial  # (E,)
        if use_feat:
            cost_e = cost_e + p.beta * (1 - torch.nn.functional.cosine_similarity(fe, _take(region_feat, er), dim=-1))
        if it == 0:  # capacities = soft counts: the solution is the row softmax (_row_softmax_plan)
            plan_e, dust = _edge_softmax(cost_e, sup.row_of_edge, n, p.dustbin_cost, p.tau)
            n_iter.append(0)
        else:  # capacities: the previous plan's slot sums
            cap = x_cm.new_zeros(S * M).index_add_(0, cap_at, torch.cat([plan_e, dust]))
            cost = base.index_put((lay.edge_at,), cost_e).view(S, NR, M)
            plan, g, k = _assign(cost, p.tau, mass, cap.view(S, M), lay.cand_mask, lay.slot_mask,
                                 g if p.warm_start else None, p.sinkhorn_iters, p.tol)
            n_iter.append(k)
            plan = plan.reshape(-1)
            plan_e, dust = _take(plan, lay.edge_at), _take(plan, lay.dust_at)  # (E,), (n,)
        wgt = plan_e * we
        norm = x_cm.new_zeros(R).index_add_(0, er, wgt).clamp(min=1e-12)  # (R,)
        region_boxes = x_cm.new_zeros(4, R).index_add_(1, er, xe * wgt) / norm
        if use_feat:
            region_feat = fe.new_zeros(R, fe.shape[1]).index_add_(0, er, wgt[:, None] * fe) / norm[:, None]
    region_scores = x_cm.new_zeros(R).index_add_(0, er, wgt * se) / norm
    region_valid = x_cm.new_zeros(R).index_add_(0, er, plan_e) > 1e-6
    reg_flat = sup.reg_img * K + sup.reg_k
    with torch.no_grad():
        # representative: the member of largest weight, the lowest candidate index among ties
        best = x_cm.new_full((R,), -1.0).scatter_reduce(0, er, wgt, "amax")
        top = (wgt == _take(best, er)).nonzero().squeeze(1)
        rep_r = torch.full((R,), B * N, dtype=torch.long, device=ec.device).scatter_reduce(
            0, _take(er, top), _take(ec, top), "amin")
        rep = torch.zeros(B * K, dtype=torch.long, device=ec.device)
        rep[reg_flat] = rep_r - sup.reg_img * N
        valid = torch.zeros(B * K, dtype=torch.bool, device=ec.device)
        valid[reg_flat] = region_valid
    out_boxes = x_cm.new_zeros(B * K, 4).index_put((reg_flat,), region_boxes.t()).view(B, K, 4)
    out_scores = x_cm.new_zeros(B * K).index_put((reg_flat,), region_scores * region_valid).view(B, K)
    out_plan = None
    if return_plan:  # (B, N, K + 1); a valid candidate with no allowed region is all dustbin
        with torch.no_grad():
            lone = mask.reshape(-1).clone()
            lone[sup.rows] = False
            out_plan = x_cm.new_zeros(B * N * (K + 1))
            out_plan[lone.nonzero().squeeze(1) * (K + 1) + K] = 1
        at = torch.cat([ec * (K + 1) + _take(sup.reg_k, er), sup.rows * (K + 1) + K])
        out_plan = out_plan.index_put((at,), torch.cat([plan_e, dust])).view(B, N, K + 1)
    return out_boxes, out_scores, valid.view(B, K), rep.view(B, K), out_plan, tuple(n_iter)


def _shared_sinkhorn_nms(p, boxes, scores, classes, mask, features, image_sizes, seed_idx, seed_mask, dtype,
                         return_plan):
    """Mode "shared" (the formulation before issue 17): one dense (N, K + 1) problem per image with one
    dustbin, only pairs of different classes forbidden. Same returns as :func:`_sparse_sinkhorn_nms`."""
    K = seed_idx.shape[1]
    region_boxes = _gather(boxes, seed_idx)
    region_cls = _gather(classes, seed_idx)
    region_feat = _gather(features, seed_idx) if features is not None and p.beta > 0 else None
    if p.spatial == "center":
        diag = _image_diagonal(boxes, image_sizes, dtype)[:, None, None]
    quality = p.alpha * (1 - scores.to(dtype))  # (B, N)
    w_score = scores.to(dtype).clamp(min=0) ** p.score_power  # (B, N)
    row_mask = mask
    col_mask = torch.cat([seed_mask, seed_mask.any(1, keepdim=True)], 1)  # regions + dustbin
    a = row_mask.to(dtype)
    b = g = None
    n_iter = []
    for _ in range(p.refine_iters + 1):
        if p.spatial == "iou":
            spatial = 1 - pairwise_box_iou(boxes.to(dtype), region_boxes.to(dtype))
        else:
            cj = (boxes[..., :2] + boxes[..., 2:]) / 2
            ck = (region_boxes[..., :2] + region_boxes[..., 2:]) / 2
            spatial = _safe_norm((cj[:, :, None] - ck[:, None]).pow(2).sum(-1)) / diag
        cost = quality[:, :, None] + p.gamma * spatial  # (B, N, K)
        if region_feat is not None:
            cos = torch.nn.functional.cosine_similarity(features[:, :, None], region_feat[:, None], dim=-1)
            cost = cost + p.beta * (1 - cos)
        cost = cost + FORBIDDEN * (classes[:, :, None] != region_cls[:, None, :]).to(dtype)
        cost = torch.cat([cost, torch.full_like(cost[..., :1], p.dustbin_cost)], -1)  # (B, N, K+1)
        cost = torch.where(row_mask[:, :, None] & col_mask[:, None, :], cost, torch.zeros_like(cost))
        if b is None:  # capacities = soft counts: the solution is the row softmax
            plan, n = _row_softmax_plan(cost, p.tau, a, col_mask), 0
        else:
            plan, g, n = _assign(cost, p.tau, a, b, row_mask, col_mask, g if p.warm_start else None,
                                 p.sinkhorn_iters, p.tol)
        n_iter.append(n)
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
    return region_boxes, region_scores * valid, valid, rep, plan if return_plan else None, tuple(n_iter)


def sinkhorn_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    classes: torch.Tensor,
    mask: Optional[torch.Tensor] = None,
    features: Optional[torch.Tensor] = None,
    image_sizes: Optional[torch.Tensor] = None,
    params: Optional[SinkhornNMSParams] = None,
    return_plan: bool = True,
) -> SinkhornNMSResult:
    """Soft, differentiable NMS over a padded batch of candidate detections.

    Args:
        boxes: (B, N, 4) XYXY candidate boxes.
        scores: (B, N) candidate scores in [0, 1].
        classes: (B, N) long class ids (regions never mix classes).
        mask: (B, N) bool, True = real candidate (default all).
        features: optional (B, N, D) candidate features for the beta term.
        image_sizes: optional (B, 2) (H, W), for the "center" spatial term (default: box extent).
        params: :class:`SinkhornNMSParams` (``mode`` chooses blocked / dense / shared).
        return_plan: also return the plan in the dense (B, N, K + 1) layout (``plan`` is None otherwise).
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
    if tuple(mask.shape) != (B, N):
        raise ValueError(f"sinkhorn_nms: mask must be (B, N) = {(B, N)}, got {tuple(mask.shape)}")
    if not bool((torch.isfinite(boxes).all(-1) & torch.isfinite(scores) | ~mask).all()):
        raise ValueError("sinkhorn_nms: boxes or scores contain NaN/inf")
    if features is not None and (features.dim() != 3 or tuple(features.shape[:2]) != (B, N)):
        raise ValueError(f"sinkhorn_nms: features must be (B, N, D), got {tuple(features.shape)}")
    dtype = boxes.dtype if boxes.dtype in (torch.float32, torch.float64) else torch.float32

    seed_idx, seed_mask = _greedy_seeds(boxes, scores, classes, mask, p.seed_iou, p.max_regions)
    solve = _shared_sinkhorn_nms if p.mode == "shared" else _sparse_sinkhorn_nms
    out_boxes, out_scores, valid, rep, plan, n_iter = solve(
        p, boxes, scores, classes, mask, features, image_sizes, seed_idx, seed_mask, dtype, return_plan)
    return SinkhornNMSResult(out_boxes, out_scores, _gather(classes, seed_idx), valid, rep, plan, n_iter)
