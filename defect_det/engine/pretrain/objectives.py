"""What backbone pre-training learns (``PretrainSettings.objective``): one class per objective, each owning its
network head, training batches, losses, statistics, validation metrics and sidecar description, so that
:func:`~.loop.run_pretraining` is the same loop for all of them.

- ``"labels"`` (:class:`ImageLabelObjective`): texture family (softmax) + which defect types are present
  (multi-label BCE), image-level labels of the generator's ``meta.json``; every image.
- ``"anomaly"`` (:class:`AnomalyObjective`): self-supervised; synthetic irregularities pasted into the
  defect-free images (normal images and templates), segmented per cell (:mod:`.anomaly`). No label read;
  the defect images only enter the validation metric (image level: defective or not).
"""
from collections import OrderedDict

import numpy as np
import torch

from detectron2.modeling import build_backbone

from ...data.synthetic.fabric import DEFECT_TYPES
from .anomaly import AnomalyPretrainNet, anomaly_loss, anomaly_stats, pixel_average_precision, pool_target, \
    synthesize_anomalies
from .data import ImageLevelRecord, IterationBatches, PretrainSample, build_labels, normalize_input
from .model import BackbonePretrainNet, average_precision, evaluate, prepare_pretrain_cfg, pretrain_losses
from .settings import IMAGE_LEVEL_KEYS

__all__ = ["OBJECTIVES", "AnomalyObjective", "ImageLabelObjective", "build_objective"]


class ImageLabelObjective:
    """Texture family + defect presence from image-level labels (:mod:`.model`)."""

    name = "labels"
    summary_keys = ("family_acc", "defect_map", "defect_f1", "any_defect_acc")

    def __init__(self, records, families, train_idx, val_idx, settings, pixel_mean, pixel_std, image_format):
        self.records, self.families = records, tuple(families)
        self.train_idx, self.val_idx = list(train_idx), list(val_idx)
        self.s, self.mean, self.std, self.fmt = settings, pixel_mean, pixel_std, image_format
        self.fam, self.defects = build_labels(records, self.families)

    @property
    def num_train(self):
        return len(self.train_idx)

    def build_net(self, cfg):
        return BackbonePretrainNet.from_config(cfg, len(self.families), len(DEFECT_TYPES), self.s.pool)

    def batches(self):
        """Item ``i`` = ``(x (B, 3, H, W), family (B,), defects (B, D))``."""
        return IterationBatches(self.records, self.fam, self.defects, self.train_idx, self.s, self.mean,
                                self.std, self.fmt)

    def losses(self, net, batch, device):
        x, ft, dt = batch
        fl, dl = net(x.to(device))
        losses = pretrain_losses(fl, dl, ft.to(device), dt.to(device), self.s.defect_weight)
        stats = {"family_acc": float((fl.argmax(1) == ft.to(device)).float().mean())}
        return losses, stats

    def evaluate(self, net, device):
        return evaluate(net, self.records, self.fam, self.defects, self.val_idx, PretrainSample(self.s, self.fmt),
                        self.s, self.mean, self.std, device)

    def describe(self):
        return OrderedDict([("objective", self.name), ("family", list(self.families)),
                            ("defect_types", list(DEFECT_TYPES)), ("uses_masks_or_boxes", False),
                            ("record_keys_read", list(IMAGE_LEVEL_KEYS))])


def defect_free_sources(records, indices):
    """The defect-free images among ``records[indices]``: every normal image, and the template of every
    piece (one record per template file, its ``file_name`` = the template), in a stable order."""
    out, seen = [], set()
    for i in indices:
        r = records[i]
        if r.is_normal and r.file_name not in seen:
            seen.add(r.file_name)
            out.append(r)
        if r.template_file_name not in seen:
            seen.add(r.template_file_name)
            out.append(ImageLevelRecord(file_name=r.template_file_name, template_file_name=r.template_file_name,
                                        piece=r.piece, family=r.family, defect_types=()))
    return out


class AnomalyBatches(torch.utils.data.Dataset):
    """
    Item ``i`` = the batch of iteration ``i`` as a pure function of ``(seed, i)`` (like
    :class:`~.data.IterationBatches`): ``(x (B, 3, H, W) normalised image with pasted irregularities,
    mask (B, H, W) float {0, 1})``. The "foreign" fill takes the next image of the same batch.
    """

    def __init__(self, sources, settings, pixel_mean, pixel_std, image_format="BGR"):
        if not sources:
            raise ValueError("no defect-free training images for the anomaly objective")
        self.sources, self.s = list(sources), settings
        self.sample = PretrainSample(settings, image_format)
        self.mean, self.std = pixel_mean, pixel_std
        self._order = IterationBatches(sources, None, None, range(len(sources)), settings, pixel_mean, pixel_std,
                                       image_format)

    def __len__(self):
        return self.s.iters

    def __getitem__(self, iteration):
        idx = self._order.batch_indices(iteration)
        imgs = []
        for j, i in enumerate(idx):
            rng = np.random.default_rng(np.random.SeedSequence([self.s.seed, 2, iteration, j]))
            image, _ = self.sample(self.sources[i], rng)
            imgs.append(image.numpy().transpose(1, 2, 0))
        xs, ms = [], []
        for j, img in enumerate(imgs):
            rng = np.random.default_rng(np.random.SeedSequence([self.s.seed, 3, iteration, j]))
            other = imgs[(j + 1) % len(imgs)] if len(imgs) > 1 else None
            if other is not None and other.shape != img.shape:
                other = None
            a, m = synthesize_anomalies(img, rng, other)
            xs.append(normalize_input(torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))), None, "image",
                                      self.mean, self.std))
            ms.append(torch.from_numpy(m))
        return torch.stack(xs), torch.stack(ms)


class AnomalyObjective:
    """Self-supervised segmentation of pasted irregularities (:mod:`.anomaly`); image input only."""

    name = "anomaly"
    summary_keys = ("pixel_ap", "defect_image_ap", "defect_image_auroc")

    def __init__(self, records, families, train_idx, val_idx, settings, pixel_mean, pixel_std, image_format):
        if settings.input_mode != "image":
            raise ValueError("pretrain setting objective 'anomaly' needs input 'image' (the template difference "
                             "already shows the defect: use the 'labels' objective for --input difference)")
        self.records, self.families = records, tuple(families)
        self.train_idx, self.val_idx = list(train_idx), list(val_idx)
        self.s, self.mean, self.std, self.fmt = settings, pixel_mean, pixel_std, image_format
        self.train_sources = defect_free_sources(records, self.train_idx)
        self.val_sources = defect_free_sources(records, self.val_idx)

    @property
    def num_train(self):
        return len(self.train_sources)

    def build_net(self, cfg):
        cfg = prepare_pretrain_cfg(cfg)
        backbone = build_backbone(cfg)
        if hasattr(backbone, "bottom_up"):
            return AnomalyPretrainNet(backbone.bottom_up, "backbone.bottom_up.")
        return AnomalyPretrainNet(backbone, "backbone.")

    def batches(self):
        return AnomalyBatches(self.train_sources, self.s, self.mean, self.std, self.fmt)

    def losses(self, net, batch, device):
        x, m = batch
        logits = net(x.to(device))
        m = m.to(device)
        return anomaly_loss(logits, m), anomaly_stats(logits, m)

    @torch.no_grad()
    def evaluate(self, net, device):
        """
        Held-out metrics on full images: ``pixel_ap`` / ``loss_anomaly`` on the validation pieces'
        defect-free images with irregularities pasted (fixed draws), and, on the validation pieces'
        *generated defect* images vs their normal images, ``defect_image_ap`` / ``defect_image_auroc`` of
        the image score = max cell probability (does the pretext find real defects? image level only).
        """
        if not self.val_idx:
            return {"n": 0}
        was = net.training
        net.eval()
        sample = PretrainSample(self.s, self.fmt)
        try:
            scores, targets, losses = [], [], []
            for k, r in enumerate(self.val_sources):
                img = sample(r, None)[0].numpy().transpose(1, 2, 0)
                rng = np.random.default_rng(np.random.SeedSequence([self.s.seed, 4, k]))
                a, m = synthesize_anomalies(img, rng, None, p_clean=0.0)
                x = normalize_input(torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))), None, "image",
                                    self.mean, self.std)[None].to(device)
                logits = net(x)
                mt = torch.from_numpy(m)[None].to(device)
                losses.append(float(anomaly_loss(logits, mt)["loss_anomaly"]))
                scores.append(torch.sigmoid(logits).cpu().numpy().ravel())
                targets.append(pool_target(mt, logits.shape[2:]).cpu().numpy().ravel())
            img_scores, img_labels = [], []
            for i in self.val_idx:
                r = self.records[i]
                x = normalize_input(sample(r, None)[0], None, "image", self.mean, self.std)[None].to(device)
                img_scores.append(float(torch.sigmoid(net(x)).max()))
                img_labels.append(0 if r.is_normal else 1)
        finally:
            net.train(was)
        img_scores, img_labels = np.asarray(img_scores), np.asarray(img_labels)
        return OrderedDict([
            ("n", len(self.val_sources)),
            ("loss", float(np.mean(losses))),
            ("loss_anomaly", float(np.mean(losses))),
            ("pixel_ap", pixel_average_precision(np.concatenate(scores), np.concatenate(targets))),
            ("defect_images", int(img_labels.sum())),
            ("normal_images", int((1 - img_labels).sum())),
            ("defect_image_ap", average_precision(img_scores, img_labels)),
            ("defect_image_auroc", _auroc(img_scores, img_labels)),
        ])

    def describe(self):
        return OrderedDict([("objective", self.name), ("family", list(self.families)), ("defect_types", []),
                            ("uses_masks_or_boxes", False),
                            ("training_images", "defect-free only (normal images and templates)"),
                            ("record_keys_read", list(IMAGE_LEVEL_KEYS))])


def _auroc(scores, labels):
    """Area under the ROC curve (ties count one half); NaN without both classes."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels) > 0
    pos, neg = scores[labels], scores[~labels]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


OBJECTIVES = OrderedDict([(c.name, c) for c in (ImageLabelObjective, AnomalyObjective)])


def build_objective(records, families, train_idx, val_idx, settings, pixel_mean, pixel_std, image_format):
    """The objective named by ``settings.objective`` (:data:`OBJECTIVES`)."""
    return OBJECTIVES[settings.objective](records, families, train_idx, val_idx, settings, pixel_mean, pixel_std,
                                          image_format)
