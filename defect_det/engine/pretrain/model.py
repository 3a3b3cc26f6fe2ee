"""Model of backbone pre-training: the config it builds the backbone from, :class:`BackbonePretrainNet`
(bottom-up network + family / defect heads), the losses, the learning-rate schedule and the validation
metrics (:func:`average_precision`, :func:`evaluate`)."""
import math
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from detectron2.modeling import build_backbone

from ...data.synthetic.fabric import DEFECT_TYPES
from .data import PretrainSample, normalize_input
from .settings import PretrainSettings

__all__ = [
    "BackbonePretrainNet",
    "average_precision",
    "evaluate",
    "lr_factor",
    "prepare_pretrain_cfg",
    "pretrain_losses",
]


# ----------------------------------------------------------------------------------------------
# model, losses, schedule, metrics
# ----------------------------------------------------------------------------------------------
def prepare_pretrain_cfg(cfg):
    """
    A copy of a detector config made fit for pre-training its bottom-up network: ``FREEZE_AT`` 0
    (every stage trains), SyncBN -> BN (one process; same parameter names). ``FrozenBN`` is refused
    (it never normalises: nothing to learn from scratch); pre-train with ``MODEL.RESNETS.NORM BN`` and
    load the result into a FrozenBN detector if wanted.
    """
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    norm = cfg.MODEL.RESNETS.NORM
    if norm == "FrozenBN":
        raise ValueError("MODEL.RESNETS.NORM is 'FrozenBN': a frozen backbone cannot be pre-trained from "
                         "scratch; pass MODEL.RESNETS.NORM BN (the weights load into a FrozenBN model too)")
    if norm in ("SyncBN", "naiveSyncBN", "nnSyncBN"):
        cfg.MODEL.RESNETS.NORM = "BN"
    return cfg


class BackbonePretrainNet(nn.Module):
    """
    Bottom-up network + global pooling of its last (largest-stride) stage + two linear heads.

    ``forward(x (N, 3, H, W))`` -> ``(family logits (N, F), defect logits (N, D))``.
    """

    def __init__(self, bottom_up: nn.Module, key_prefix: str, num_families: int, num_defects: int,
                 pool: str = "avg", defect_prior: float = 0.1):
        """
        Args:
            bottom_up: a Detectron2 ``Backbone`` (e.g. ``ResNet``) with ``output_shape()``.
            key_prefix: where its parameters live in the detector (``"backbone.bottom_up."``).
            defect_prior: initial presence probability of every defect type (bias = logit of it).
        """
        super().__init__()
        self.bottom_up = bottom_up
        self.key_prefix = key_prefix
        shapes = bottom_up.output_shape()
        self.feature = max(shapes, key=lambda k: shapes[k].stride)
        self.pool = pool
        c = shapes[self.feature].channels * (2 if pool == "avgmax" else 1)
        self.family_head = nn.Linear(c, num_families)
        self.defect_head = nn.Linear(c, num_defects)
        for head in (self.family_head, self.defect_head):
            nn.init.normal_(head.weight, std=0.01)
            nn.init.zeros_(head.bias)
        nn.init.constant_(self.defect_head.bias, math.log(defect_prior / (1 - defect_prior)))

    @classmethod
    def from_config(cls, cfg, num_families, num_defects=len(DEFECT_TYPES), pool="avg"):
        """Build the bottom-up network of ``cfg``'s backbone (``build_backbone``; FPN: its ``bottom_up``)."""
        cfg = prepare_pretrain_cfg(cfg)
        backbone = build_backbone(cfg)
        if hasattr(backbone, "bottom_up"):
            return cls(backbone.bottom_up, "backbone.bottom_up.", num_families, num_defects, pool)
        return cls(backbone, "backbone.", num_families, num_defects, pool)

    def forward(self, x):
        f = self.bottom_up(x)[self.feature]  # (N, C, H/s, W/s)
        if self.pool == "avg":
            z = f.mean(dim=(2, 3))
        elif self.pool == "max":
            z = f.amax(dim=(2, 3))
        else:
            z = torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], dim=1)
        return self.family_head(z), self.defect_head(z)


def pretrain_losses(family_logits, defect_logits, family, defects, defect_weight=1.0):
    """
    Args:
        family_logits (N, F), defect_logits (N, D), family (N,) int64, defects (N, D) float {0, 1}.
    Returns:
        dict: ``loss_family`` (cross-entropy), ``loss_defect`` (BCE, mean over N x D, times
        ``defect_weight``).
    """
    return {
        "loss_family": F.cross_entropy(family_logits, family),
        "loss_defect": defect_weight * F.binary_cross_entropy_with_logits(defect_logits, defects),
    }


def lr_factor(iteration, settings: PretrainSettings):
    """Learning-rate multiplier at ``iteration`` (0-based): linear warm-up from 0.001, then cosine to
    0 at ``iters`` or x0.1 at each ``steps`` fraction."""
    s = settings
    if s.schedule == "cosine":
        f = 0.5 * (1.0 + math.cos(math.pi * iteration / s.iters))
    else:
        f = 0.1 ** sum(iteration >= int(round(st * s.iters)) for st in s.steps)
    if iteration < s.warmup_iters:
        a = iteration / s.warmup_iters
        f *= 0.001 * (1 - a) + a
    return f


def average_precision(scores, labels):
    """
    Non-interpolated average precision (mean precision at each positive, ranked by score).

    Args:
        scores (N,) float, labels (N,) {0, 1}.
    Returns:
        float, or NaN without positives.
    """
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels) > 0.5
    n_pos = int(labels.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    hits = labels[order]
    prec = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(prec[hits].sum() / n_pos)


@torch.no_grad()
def evaluate(net, records, fam, defects, indices, sample: PretrainSample, settings: PretrainSettings,
             pixel_mean, pixel_std, device="cpu"):
    """
    Held-out metrics on full (un-augmented) images.

    Returns:
        dict: ``n``, ``loss``, ``loss_family``, ``loss_defect``, ``family_acc``, ``defect_map``
        (mean AP over the types with a positive), ``defect_ap`` (type -> AP), ``defect_f1`` (micro F1
        at probability 0.5), ``any_defect_acc`` (defective vs normal: max probability > 0.5), or
        ``{"n": 0}`` with no validation images.
    """
    if not indices:
        return {"n": 0}
    was_training = net.training
    net.eval()
    fl, dl = [], []
    try:
        bs = settings.batch_size
        for k in range(0, len(indices), bs):
            xs = []
            for i in indices[k:k + bs]:
                image, template = sample(records[i], None)
                xs.append(normalize_input(image, template, settings.input_mode, pixel_mean, pixel_std))
            groups = [torch.stack(xs)] if len({x.shape for x in xs}) == 1 else [x[None] for x in xs]
            for g in groups:
                a, b = net(g.to(device))
                fl.append(a.cpu())
                dl.append(b.cpu())
    finally:
        net.train(was_training)
    fl, dl = torch.cat(fl), torch.cat(dl)
    ft, dt = fam[indices], defects[indices]
    losses = pretrain_losses(fl, dl, ft, dt, settings.defect_weight)
    prob = torch.sigmoid(dl).numpy()
    tgt = dt.numpy()
    aps = OrderedDict()
    for j, t in enumerate(DEFECT_TYPES):
        ap = average_precision(prob[:, j], tgt[:, j])
        if not math.isnan(ap):
            aps[t] = round(ap, 4)
    pred = prob > 0.5
    tp = float((pred & (tgt > 0.5)).sum())
    denom = float(pred.sum() + (tgt > 0.5).sum())
    return OrderedDict([
        ("n", len(indices)),
        ("loss", float(sum(losses.values()))),
        ("loss_family", float(losses["loss_family"])),
        ("loss_defect", float(losses["loss_defect"])),
        ("family_acc", float((fl.argmax(1) == ft).float().mean())),
        ("defect_map", float(np.mean(list(aps.values()))) if aps else float("nan")),
        ("defect_f1", 2 * tp / denom if denom else float("nan")),
        ("any_defect_acc", float(((prob.max(1) > 0.5) == (tgt.max(1) > 0.5)).mean())),
        ("defect_ap", aps),
    ])
