"""End-to-end loss computed *after* Sinkhorn NMS.

During training the box predictor's class probabilities and regressed boxes of the sampled
proposals go through :func:`defect_det.sinkhorn_nms.sinkhorn_nms` (differentiable); the resulting regions
are softly matched one-to-one to the image's ground-truth boxes with the same Sinkhorn op, on a
problem with a dustbin row and column (SuperGlue-style):

    rows: K regions + 1 dustbin (mass G),   columns: G ground truths + 1 dustbin (mass K)
    cost(k, g)   = -log(s_k) + L1(box_k, gt_g) / scale + (1 - IoU(box_k, gt_g)),  class(k) == class(g)
                   (forbidden otherwise)
    cost(k, dust) = -log(1 - s_k)         (an unmatched region should have a low score)
    cost(dust, g) = MISS_COST, cost(dust, dust) = 0

    loss = <P*, cost> / max(G, 1), averaged over images,

with the matching plan P* detached: by the envelope theorem this is the gradient of the optimal
(entropic) matching cost w.r.t. the regions, while the gradient still flows through the NMS plan
into the scores and boxes of *every* candidate, including those hard NMS would discard.
"""
import torch

from ..layers.sinkhorn import sinkhorn
from .nms import FORBIDDEN, SinkhornNMSParams, pad_candidates, pairwise_box_iou, sinkhorn_nms

__all__ = ["sinkhorn_nms_matching_loss", "gather_candidates"]

MISS_COST = 4.6  # -log(0.01): a ground truth left unmatched costs like a region scored 0.01


def gather_candidates(boxes, probs, score_thresh, topk):
    """Differentiable candidates of one batch, padded.

    Args:
        boxes: list of (R_i, C*4) or (R_i, 4) regressed boxes; probs: list of (R_i, C+1).
    Returns:
        boxes (B, n, 4), scores (B, n), classes (B, n), mask (B, n); at most ``topk`` per image.
    """
    out = []
    for bx, pr in zip(boxes, probs):
        s = pr[:, :-1]
        R, C = s.shape
        bx = bx.view(R, -1, 4).expand(R, C, 4) if bx.shape[1] == 4 else bx.view(R, C, 4)
        with torch.no_grad():
            keep = (s > score_thresh).nonzero()
            if keep.shape[0] > topk:
                keep = keep[s[keep[:, 0], keep[:, 1]].topk(topk).indices]
        out.append((bx[keep[:, 0], keep[:, 1]], s[keep[:, 0], keep[:, 1]], keep[:, 1]))
    return pad_candidates(out, probs[0])


def sinkhorn_nms_matching_loss(boxes, probs, gt_boxes, gt_classes, image_sizes, params: SinkhornNMSParams,
                               score_thresh=0.05, topk=300, match_eps=0.1, match_iters=50):
    """The loss above.

    Args:
        boxes, probs: per image (R_i, C*4 or 4) predicted boxes and (R_i, C+1) probabilities.
        gt_boxes: per image (G_i, 4); gt_classes: per image (G_i,) long.
        image_sizes: per image (H, W), to normalise the L1 term.
    Returns:
        scalar loss tensor.
    """
    cb, cs, cc, cm = gather_candidates(boxes, probs, score_thresh, topk)
    res = sinkhorn_nms(cb, cs, cc, cm, params=params, return_plan=False)
    B, K = res.scores.shape
    G = max([g.shape[0] for g in gt_boxes] + [1])
    dev, dt = cs.device, cs.dtype
    gb = torch.zeros(B, G, 4, device=dev, dtype=dt)
    gc = torch.full((B, G), -1, dtype=torch.long, device=dev)
    gm = torch.zeros(B, G, dtype=torch.bool, device=dev)
    for i, (b, c) in enumerate(zip(gt_boxes, gt_classes)):
        gb[i, : len(c)], gc[i, : len(c)], gm[i, : len(c)] = b.to(dt), c, True
    scale = torch.tensor([max(h, w) for h, w in image_sizes], device=dev, dtype=dt)[:, None, None]
    s = res.scores.clamp(1e-6, 1 - 1e-6)  # (B, K)
    l1 = (res.boxes[:, :, None, :] - gb[:, None, :, :]).abs().sum(-1) / scale
    iou = pairwise_box_iou(res.boxes, gb)
    cost = -s.log()[:, :, None] + l1 + (1 - iou)
    cost = cost + FORBIDDEN * (res.classes[:, :, None] != gc[:, None, :]).to(dt)  # (B, K, G)
    full = cost.new_zeros(B, K + 1, G + 1)
    full[:, :K, :G] = cost
    full[:, :K, G] = -(1 - s).log()
    full[:, K, :G] = MISS_COST
    rv, gv = res.valid, gm
    nk, ng = rv.sum(1).to(dt), gv.sum(1).to(dt)
    a = torch.cat([rv.to(dt), ng[:, None]], 1)
    b = torch.cat([gv.to(dt), nk[:, None]], 1)
    row_mask = torch.cat([rv, (ng > 0)[:, None]], 1)
    col_mask = torch.cat([gv, (nk > 0)[:, None]], 1)
    full = torch.where(row_mask[:, :, None] & col_mask[:, None, :], full, torch.zeros_like(full))
    with torch.no_grad():
        P = sinkhorn(full.detach(), match_eps, a=a, b=b, row_mask=row_mask, col_mask=col_mask,
                     max_iter=match_iters).plan
    per_image = (P * full).sum((1, 2)) / ng.clamp(min=1)
    return per_image.mean()
