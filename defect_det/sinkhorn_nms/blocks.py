"""Geometry and block bookkeeping of Sinkhorn NMS (:mod:`.nms`): box IoU helpers, the allowed
(candidate, region) pairs of a batch and their independent blocks (:func:`_support`), and how the blocks are
packed into padded problems (:func:`_layout`). All integer bookkeeping, no gradient."""
from typing import NamedTuple, Optional, Tuple

import torch

def pairwise_box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Batched IoU of XYXY boxes: a (B, N, 4), b (B, K, 4) -> (B, N, K); 0 for empty boxes."""
    lt = torch.maximum(a[:, :, None, :2], b[:, None, :, :2])
    rb = torch.minimum(a[:, :, None, 2:], b[:, None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[..., 2:] - a[..., :2]).clamp(min=0).prod(-1)
    area_b = (b[..., 2:] - b[..., :2]).clamp(min=0).prod(-1)
    union = area_a[:, :, None] + area_b[:, None, :] - inter
    return inter / union.clamp(min=1e-9)


# Boxes of the sparse path are kept coordinate-major, (4, E): x1, y1, x2, y2 are contiguous rows, so
# every elementwise op runs on contiguous memory (on strided (E, 4) columns they are ~10x slower on CPU).
def _area_cm(box: torch.Tensor) -> torch.Tensor:
    """(4, E) coordinate-major XYXY -> (E,) area, 0 for empty boxes."""
    return (box[2] - box[0]).clamp(min=0) * (box[3] - box[1]).clamp(min=0)


def _iou_cm(a: torch.Tensor, b: torch.Tensor, area_a: Optional[torch.Tensor] = None) -> torch.Tensor:
    """IoU of matching columns of coordinate-major boxes a, b (4, E) -> (E,); ``area_a``: known areas."""
    iw = (torch.minimum(a[2], b[2]) - torch.maximum(a[0], b[0])).clamp(min=0)
    ih = (torch.minimum(a[3], b[3]) - torch.maximum(a[1], b[1])).clamp(min=0)
    inter = iw * ih
    area_a = _area_cm(a) if area_a is None else area_a
    return inter / (area_a + _area_cm(b) - inter).clamp(min=1e-9)


def paired_box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of matching rows of XYXY boxes: a (E, 4), b (E, 4) -> (E,); 0 for empty boxes."""
    return _iou_cm(a.t().contiguous(), b.t().contiguous())


def _take(t: torch.Tensor, idx: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """``t`` at the indices ``idx`` along ``dim``; index_select is 3-4x faster than ``t[idx]`` on CPU."""
    return t.index_select(dim, idx)


def _rank_in_group(group: torch.Tensor, num_groups: int):
    """Position of every element among the elements of its group, in index order.
    group (L,) long in [0, num_groups) -> rank (L,), counts (num_groups,)."""
    order = torch.argsort(group, stable=True)
    counts = torch.bincount(group, minlength=num_groups)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(group)
    rank[order] = torch.arange(group.numel(), device=group.device) - _take(starts, _take(group, order))
    return rank, counts


class _Support(NamedTuple):
    """The allowed (candidate, region) pairs of a batch and their blocks (all integer bookkeeping).

    Regions are the R valid seeds in (image, k) order: image ``reg_img`` (R,), slot ``reg_k`` (R,),
    flat candidate index (into B * N) of the seed ``reg_cand`` (R,). ``edge_cand`` / ``edge_reg`` (E,):
    the allowed pairs (same image and class, IoU with the seed box > floor, or the seed itself), sorted
    by candidate; ``edge_cand`` is a flat index into B * N, ``edge_reg`` indexes the regions.
    ``rows`` (n,): the candidates with at least one allowed region (flat, ascending); ``row_of_edge``
    (E,) indexes ``rows``. ``reg_block`` (R,) / ``row_block`` (n,): block (connected component) of
    every region / row, blocks numbered 0..NB-1 in the order of their first region, ``block_root``
    (NB,): that first region.
    """

    reg_img: torch.Tensor
    reg_k: torch.Tensor
    reg_cand: torch.Tensor
    edge_cand: torch.Tensor
    edge_reg: torch.Tensor
    rows: torch.Tensor
    row_of_edge: torch.Tensor
    reg_block: torch.Tensor
    row_block: torch.Tensor
    block_root: torch.Tensor


def _support(boxes, classes, mask, seed_idx, seed_mask, iou_floor) -> _Support:
    """Allowed pairs and blocks, see :class:`_Support`. Shapes: boxes (B, N, 4), classes (B, N),
    mask (B, N), seed_idx / seed_mask (B, K). Without gradient; memory O(pairs of the same class)."""
    N = classes.shape[1]
    dev = classes.device
    with torch.no_grad():
        box = boxes.detach().reshape(-1, 4)
        box_cm = (box if box.dtype in (torch.float32, torch.float64) else box.float()).t().contiguous()  # (4, B*N)
        c_img, c_pos = mask.nonzero(as_tuple=True)  # (n0,) valid candidates, ascending
        r_img, r_k = seed_mask.nonzero(as_tuple=True)  # (R,) valid regions
        reg_cand = r_img * N + seed_idx[r_img, r_k]
        # group = (image, class), as one int64 key
        g_cand = (c_img << 32) + classes[c_img, c_pos]
        g_reg = (r_img << 32) + _take(classes.reshape(-1), reg_cand)
        # every (candidate, region) pair of the same group: regions sorted by group, a candidate's
        # regions are the range [lo, lo + cnt) of that order
        g_sorted, order = torch.sort(g_reg)
        lo = torch.searchsorted(g_sorted, g_cand)
        cnt = torch.searchsorted(g_sorted, g_cand, right=True) - lo
        src = torch.repeat_interleave(cnt)  # (E0,) candidate of each pair, ascending
        offs = torch.arange(src.numel(), device=dev) - _take(torch.cumsum(cnt, 0) - cnt - lo, src)
        e_cand, e_reg = _take(c_img * N + c_pos, src), _take(order, offs)
        e_seed = _take(reg_cand, e_reg)
        bc, bs = _take(box_cm, e_cand, 1), _take(box_cm, e_seed, 1)
        iw = (torch.minimum(bc[2], bs[2]) - torch.maximum(bc[0], bs[0])).clamp(min=0)
        ih = (torch.minimum(bc[3], bs[3]) - torch.maximum(bc[1], bs[1])).clamp(min=0)
        inter = iw * ih
        if iou_floor > 0:  # IoU > floor  <=>  inter > floor * union
            over = inter > iou_floor * (_area_cm(bc) + _area_cm(bs) - inter)
        else:  # IoU > floor for any floor < 0, IoU > 0 for floor 0
            over = inter > 0 if iou_floor == 0 else torch.ones_like(inter, dtype=torch.bool)
        keep = (over | (e_cand == e_seed)).nonzero().squeeze(1)
        e_cand, e_reg = _take(e_cand, keep), _take(e_reg, keep)
        rows, row_of_edge = torch.unique_consecutive(e_cand, return_inverse=True)
        R, n = r_img.numel(), rows.numel()
        # connected components over regions (two regions meet if a candidate may join both):
        # min-label propagation through the candidates, with pointer jumping
        label = torch.arange(R, device=dev)
        while True:
            via = torch.full((n,), R, dtype=torch.long, device=dev).scatter_reduce(
                0, row_of_edge, _take(label, e_reg), "amin")  # per row: the smallest label of its regions
            new = label.scatter_reduce(0, e_reg, _take(via, row_of_edge), "amin")
            new = _take(new, new)
            if torch.equal(new, label):
                break
            label = new
        root = label == torch.arange(R, device=dev)
        reg_block = _take(torch.cumsum(root, 0) - 1, label)
        row_block = torch.zeros(n, dtype=torch.long, device=dev).scatter_(0, row_of_edge, _take(reg_block, e_reg))
    return _Support(r_img, r_k, reg_cand, e_cand, e_reg, rows, row_of_edge, reg_block, row_block,
                    root.nonzero().squeeze(1))


class _Layout(NamedTuple):
    """Where the pieces of the problem sit in the cost tensor handed to the op, (S, NR, M): S problems,
    NR candidate positions (the op's rows) and M *slots* (regions and dustbins; the op's columns, whose
    marginals, the capacities, are met exactly when the op exits). Flat indices into S * NR * M of every
    allowed pair (``edge_at``, (E,)) and of every row's dustbin entry (``dust_at``, (n,)); flat indices
    into S * M of every region's slot (``reg_slot``, (R,)) and of every row's dustbin slot
    (``dust_slot``, (n,)); masks (S, NR) of the candidates and (S, M) of the slots.

    The op's rows are the candidates because Sinkhorn starts with the row update: from slot duals 0
    (or the previous alternation's) the first iterate is the row softmax, close to the solution;
    starting from the slots' side costs ~2x the iterations for the same accuracy."""

    shape: Tuple[int, int, int]
    edge_at: torch.Tensor
    dust_at: torch.Tensor
    reg_slot: torch.Tensor
    dust_slot: torch.Tensor
    cand_mask: torch.Tensor
    slot_mask: torch.Tensor


def _pack_blocks(nrows, nslots):
    """Pack blocks of ``nrows`` x ``nslots`` into problems of NR x M, the largest block's rows and
    slots: the largest block left opens a problem, the smallest ones fill it while they fit
    (block-diagonal, so they stay independent). Lists in; returns (problem, row offset, slot offset)
    per block as lists, and S, NR, M."""
    NR, M = max(nrows), max(nslots)
    order = sorted(range(len(nrows)), key=lambda i: (-nrows[i], -nslots[i]))
    prob, roff, soff = [0] * len(nrows), [0] * len(nrows), [0] * len(nrows)
    lo, hi, S = 0, len(order) - 1, 0
    while lo <= hi:
        i = order[lo]
        lo += 1
        prob[i], r, c = S, nrows[i], nslots[i]
        while lo <= hi and r + nrows[order[hi]] <= NR and c + nslots[order[hi]] <= M:
            j = order[hi]
            hi -= 1
            prob[j], roff[j], soff[j] = S, r, c
            r, c = r + nrows[j], c + nslots[j]
        S += 1
    return prob, roff, soff, S, NR, M


def _layout(sup: _Support, B: int, N: int, K: int, mode: str) -> _Layout:
    """"blocked": the blocks packed into few small problems (:func:`_pack_blocks`); in its problem a
    block's slots are its regions, then its dustbin. "dense": one problem per image, the slots are its
    K regions, then one dustbin slot per block (slot K + k for the block whose first region is k), the
    candidate positions are its N candidates."""
    dev = sup.rows.device
    with torch.no_grad():
        if mode == "blocked":
            NB = sup.block_root.numel()
            row_pos, nrows = _rank_in_group(sup.row_block, NB)
            reg_pos, nregs = _rank_in_group(sup.reg_block, NB)
            if NB:
                prob, roff, soff, S, NR, M = _pack_blocks(nrows.tolist(), (nregs + 1).tolist())
            else:
                prob, roff, soff, S, NR, M = [], [], [], 1, 1, 1
            prob, roff, soff = (torch.tensor(v, dtype=torch.long, device=dev) for v in (prob, roff, soff))
            row_prob = _take(prob, sup.row_block)
            cand_at = row_prob * NR + _take(roff, sup.row_block) + row_pos  # (n,) into S * NR
            reg_slot = _take(prob * M + soff, sup.reg_block) + reg_pos  # (R,) into S * M
            dust_slot = _take(prob * M + soff + nregs, sup.row_block)  # (n,) into S * M
        else:
            S, M, NR = B, 2 * K, N
            cand_at = sup.rows
            reg_slot = sup.reg_img * M + sup.reg_k
            dust_slot = _take(_take(reg_slot, sup.block_root) + K, sup.row_block)
        # entry (candidate position r, slot c) of problem s: (s * NR + r) * M + c
        cand_first = torch.div(cand_at, NR, rounding_mode="floor") * M  # (n,) slot 0 of its problem, into S * M
        edge_at = _take(cand_at * M - cand_first, sup.row_of_edge) + _take(reg_slot, sup.edge_reg)
        dust_at = cand_at * M - cand_first + dust_slot
        cand_mask = torch.zeros(S * NR, dtype=torch.bool, device=dev)
        cand_mask[cand_at] = True
        slot_mask = torch.zeros(S * M, dtype=torch.bool, device=dev)
        slot_mask[reg_slot] = True
        slot_mask[dust_slot] = True
    return _Layout((S, NR, M), edge_at, dust_at, reg_slot, dust_slot, cand_mask.view(S, NR), slot_mask.view(S, M))
