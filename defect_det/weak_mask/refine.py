"""Uncertainty-aware, entropy-constrained refinement of mask probabilities.

Input: the mask probabilities p (R, 1, M, M) of the mask head and the pixel affinities
A (R, K, M, M) of :func:`~.affinity.pairwise_affinity`. Notation (projects/WeakMask/README.md):
l_i = logit of q_i, h(q) = -q log q - (1 - q) log(1 - q) the binary entropy (nats), c = CONF_THRESH.

- **Uncertainty.** Confidence max(p_i, 1 - p_i), a monotone function of the predictive entropy:
  max(p, 1 - p) >= c  <=>  h(p) <= h(c). Fixed set F = {i : max(p_i, 1 - p_i) >= c}; uncertain set
  U = the rest. Pixels in F are copied from the input at every step (never changed).
- **Edges.** E_ik = A_ik * [A_ik >= tau] (the pairwise loss's edges; tau = WEAK.TAU).
- **Step t -> t+1** (synchronous over all pixels and ROIs), for i in U::

      m_i = sum_k E_ik (2 q_j^t - 1)                  (affinity-weighted vote of the neighbours j)
      s_i = l_i^0 + lambda * m_i                       (mean-field update: head's unary + Potts pairwise)
      l_i^{t+1} = sgn(s_i) * max(|s_i|, |l_i^t| + eta)  (sgn(0) = +1)
      q_i^{t+1} = sigmoid(l_i^{t+1})

  The last two lines are the entropy constraint: q^{t+1}_i is the KL projection of the mean-field
  candidate sigmoid(s_i) onto the entropy sub-level set {q : h(q) <= h(sigmoid(|l_i^t| + eta))}
  (the set is |logit q| >= |l_i^t| + eta; KL(q || sigmoid(s)) is convex in q with its minimum at
  sigmoid(s), and of the two boundary points the one on the side of s is the closer one in KL).
  The affinities decide the label (the sign); the constraint only forbids moving towards 1/2.
- **Monotone entropy.** h(sigmoid(l)) is strictly decreasing in |l|, so for every i in U
  h(q_i^{t+1}) <= h(sigmoid(|l_i^t| + eta)) <= h(q_i^t), strictly if eta > 0; pixels in F are
  constant. Hence the total entropy H^t = sum_{i in U} h(q_i^t) of every ROI is non-increasing,
  and strictly decreasing while U is non-empty and eta > 0. :class:`EntropyConstrainedRefiner`
  returns H^0..H^T per ROI.
"""
from dataclasses import dataclass
from typing import List, Tuple

import torch
from detectron2.config import configurable
from torch import nn

from .affinity import neighbour_offsets, neighbour_sum

__all__ = ["EntropyConstrainedRefiner", "RefinementResult", "binary_entropy_from_logits"]

_EPS = 1e-6  # probabilities are clamped to [eps, 1 - eps] before taking logits


def binary_entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """h(sigmoid(l)) in nats, elementwise, computed stably from |l|; a function of |l| only."""
    a = logits.abs()
    return nn.functional.softplus(-a) + a * torch.sigmoid(-a)


@dataclass
class RefinementResult:
    """Output of :class:`EntropyConstrainedRefiner`.

    Attributes:
        probs: (R, 1, M, M) refined probabilities (equal to the input on the fixed set).
        uncertain: (R, 1, M, M) bool, the set U (confidence below CONF_THRESH).
        entropy: (R, T + 1) total binary entropy over U of each ROI after 0..T steps.
    """

    probs: torch.Tensor
    uncertain: torch.Tensor
    entropy: torch.Tensor


class EntropyConstrainedRefiner(nn.Module):
    """Mean-field refinement of uncertain mask pixels under an entropy constraint (module doc).
    No parameters; batched over ROIs (no Python loop over them)."""

    @configurable
    def __init__(self, *, iters: int = 5, conf_thresh: float = 0.9, pairwise_weight: float = 0.5,
                 margin_step: float = 0.25, edge_thresh: float = 0.3, dilation: int = 2):
        """
        Args:
            iters: T, number of steps (>= 0).
            conf_thresh: c in (0.5, 1]: pixels with max(p, 1 - p) >= c are fixed.
            pairwise_weight: lambda >= 0, logit added per unit of agreeing edge weight.
            margin_step: eta >= 0, the minimum growth of |logit| per step (the entropy constraint).
            edge_thresh: tau in [0, 1]; edges with affinity below it carry no vote.
            dilation: neighbour spacing D; must match the affinities' (K = 8 offsets).
        """
        super().__init__()
        if int(iters) != iters or iters < 0:
            raise ValueError(f"iters (MODEL.ROI_MASK_HEAD.REFINE.ITERS) must be an integer >= 0, got {iters!r}")
        if not 0.5 < conf_thresh <= 1.0:
            raise ValueError(
                f"conf_thresh (MODEL.ROI_MASK_HEAD.REFINE.CONF_THRESH) must be in (0.5, 1], got {conf_thresh}")
        if pairwise_weight < 0:
            raise ValueError(
                f"pairwise_weight (MODEL.ROI_MASK_HEAD.REFINE.PAIRWISE_WEIGHT) must be >= 0, got {pairwise_weight}")
        if margin_step < 0:
            raise ValueError(f"margin_step (MODEL.ROI_MASK_HEAD.REFINE.MARGIN_STEP) must be >= 0, got {margin_step}")
        if not 0.0 <= edge_thresh <= 1.0:
            raise ValueError(f"edge_thresh (MODEL.ROI_MASK_HEAD.WEAK.TAU) must be in [0, 1], got {edge_thresh}")
        self.iters = int(iters)
        self.conf_thresh = float(conf_thresh)
        self.pairwise_weight = float(pairwise_weight)
        self.margin_step = float(margin_step)
        self.edge_thresh = float(edge_thresh)
        self.offsets: List[Tuple[int, int]] = neighbour_offsets(dilation)

    @classmethod
    def from_config(cls, cfg):
        r, w = cfg.MODEL.ROI_MASK_HEAD.REFINE, cfg.MODEL.ROI_MASK_HEAD.WEAK
        return {"iters": r.ITERS, "conf_thresh": r.CONF_THRESH, "pairwise_weight": r.PAIRWISE_WEIGHT,
                "margin_step": r.MARGIN_STEP, "edge_thresh": w.TAU, "dilation": w.DILATION}

    def forward(self, probs: torch.Tensor, affinity: torch.Tensor) -> RefinementResult:
        """
        Args:
            probs: (R, 1, M, M) mask probabilities in [0, 1].
            affinity: (R, K, M, M) affinities in [0, 1] for this refiner's K = 8 offsets.
        Returns:
            :class:`RefinementResult`.
        """
        if probs.dim() != 4 or probs.shape[1] != 1:
            raise ValueError(f"probs must be (R, 1, M, M), got shape {tuple(probs.shape)}")
        k = len(self.offsets)
        if affinity.shape != (probs.shape[0], k, *probs.shape[2:]):
            raise ValueError(
                f"affinity must be (R, K={k}, M, M) = {(probs.shape[0], k, *probs.shape[2:])}, "
                f"got shape {tuple(affinity.shape)}"
            )
        uncertain = torch.maximum(probs, 1.0 - probs) < self.conf_thresh        # (R, 1, M, M)
        u = uncertain.to(probs.dtype)
        edges = (affinity * (affinity >= self.edge_thresh)).to(probs.dtype)      # (R, K, M, M)
        l0 = torch.logit(probs.clamp(_EPS, 1.0 - _EPS))                         # (R, 1, M, M)
        logits, q = l0, probs

        def total_entropy(lg):
            return (binary_entropy_from_logits(lg) * u).flatten(1).sum(1)        # (R,)

        entropy = [total_entropy(l0)]
        for _ in range(self.iters):
            m = neighbour_sum(2.0 * q - 1.0, edges, self.offsets)               # (R, 1, M, M)
            s = l0 + self.pairwise_weight * m
            sign = torch.where(s >= 0, torch.ones_like(s), -torch.ones_like(s))
            logits = torch.where(uncertain, sign * torch.maximum(s.abs(), logits.abs() + self.margin_step), l0)
            q = torch.where(uncertain, torch.sigmoid(logits), probs)
            entropy.append(total_entropy(logits))
        return RefinementResult(probs=q, uncertain=uncertain, entropy=torch.stack(entropy, dim=1))
