"""RDDN's TR-Post (paper section IV-A3, eqs. 10-11): at inference the box-head features F^I and F^T of
every proposal on the image and on its template give ``cos(F^I, F^T)``, and the foreground class
probabilities are multiplied by ``1 - cos``. Needs no retraining.

The template's backbone features reach the ROI heads in the features dict under ``"template:<name>"``
(plus ``"template:valid"``, (N,) bool), put there by ``TemplateRCNN`` with ``MODEL.TEMPLATE.POST``
(:func:`split_template_features` reads them back). ``ROI_HEADS.SCORE_THRESH_TEST`` keeps its meaning, a
bound on the classifier's own probability: entries at or below it become 0 *before* rescoring, and the
rescored values are then ranked, not cut, by the post-processing (which gets threshold 0) — the product
would otherwise fall below the threshold wherever cos is near 1.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch

__all__ = ["TEMPLATE_PREFIX", "TEMPLATE_VALID_KEY", "region_similarity", "rescore_by_template",
           "split_template_features"]

TEMPLATE_PREFIX = "template:"
TEMPLATE_VALID_KEY = "template:valid"  # (N,) bool: which images of the batch have a template


def region_similarity(f_image: torch.Tensor, f_template: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """
    cos(F^I, F^T) per row of (R, D) features (eq. 11). Two all-zero rows (nothing fires on either
    image) count as identical (1); one all-zero row against a non-zero one as 0.
    Returns (R,) in [-1, 1] ([0, 1] for the ReLU features of the box head).
    """
    ni, nt = f_image.norm(dim=1), f_template.norm(dim=1)
    cos = (f_image * f_template).sum(dim=1) / (ni * nt).clamp_min(eps)
    both_zero = (ni <= eps) & (nt <= eps)
    return torch.where(both_zero, torch.ones_like(cos), cos)


def split_template_features(features: Dict[str, torch.Tensor], in_features: List[str]
                            ) -> Tuple[Optional[List[torch.Tensor]], Optional[torch.Tensor]]:
    """(template feature list for ``in_features`` or None, (N,) validity mask or None)."""
    keys = [TEMPLATE_PREFIX + f for f in in_features]
    if not all(k in features for k in keys):
        return None, None
    return [features[k] for k in keys], features.get(TEMPLATE_VALID_KEY)


def rescore_by_template(probs: Sequence[torch.Tensor], similarity: Sequence[torch.Tensor],
                        score_thresh: float) -> Tuple[torch.Tensor, ...]:
    """
    Eq. 10 with the threshold semantics of the module doc.

    Args:
        probs: per image (R_i, K + 1) class probabilities, background last.
        similarity: per image (R_i,) template similarity (0 where the image has no template: unchanged).
        score_thresh: the classifier's probability threshold.
    Returns:
        per image (R_i, K + 1): foreground entries ``p * (1 - sim)`` where ``p > score_thresh``, else 0;
        the background column unchanged. Post-process them with threshold 0.
    """
    out = []
    for p, sim in zip(probs, similarity):
        factor = (1.0 - sim).clamp(0.0, 1.0).to(p.dtype)
        fg = p[:, :-1]
        fg = torch.where(fg > score_thresh, fg * factor[:, None], torch.zeros_like(fg))
        out.append(torch.cat([fg, p[:, -1:]], dim=1))
    return tuple(out)
