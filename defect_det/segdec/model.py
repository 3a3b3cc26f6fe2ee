"""``SegDecNet``: the two-stage segmentation / decision network for surface-defect detection, trained
end to end (Božič, Tabernik, Skočaj; details of the follow-up "Mixed supervision for surface-defect
detection"). Equations and defaults: projects/SegDecNet/README.md.

Network (``w`` = ``MODEL.SEGDEC.WIDTH``, every channel count ``c`` below is ``max(1, round(c * w))``;
every conv has no bias and is followed by a per-sample per-channel normalisation and ReLU; by default
the authors' released code: their normalisation, the logit map normalised too, Xavier-normal convs —
``MODEL.SEGDEC.NORM`` / ``SEG_LOGIT_NORM`` / ``INIT`` switch each to ours):

- segmentation subnet: 5x5 conv 32 -> max-pool 2 -> 3 x (5x5 conv 64) -> max-pool 2 ->
  4 x (5x5 conv 64) -> max-pool 2 -> 15x15 conv 1024 = features ``F`` (N, 1024w, H/8, W/8);
  a 1x1 conv gives the defect logit map ``S`` (N, 1, H/8, W/8).
- decision subnet: ``cat(F, S)`` -> max-pool 2 -> 5x5 conv 8 -> max-pool 2 -> 5x5 conv 16 ->
  max-pool 2 -> 5x5 conv 32 = ``D``; ``[gmax(D), gmean(D), gmax(S), gmean(S)]`` (N, 66) ->
  linear -> image-level defect logit (N,).

The normalisation is :class:`ChannelNorm`: each channel of each sample is normalised over its
spatial positions and then scaled/shifted per channel, identical at training and test time and
independent of the batch (the paper trains with batch 1): the authors' formula (divide by the square
root of the unbiased standard deviation) or ours (instance normalisation, what ``nn.GroupNorm(C, C)``
computes). It is written out because torch's group/instance norm refuse a 1x1 map in training mode,
which the decision subnet's last stage reaches on small inputs (there ChannelNorm outputs its bias).

Training extensions (``MODEL.SEGDEC.*``, each switchable):

- dynamic loss balancing (``DYN_BALANCED_LOSS``): ``loss_seg = (1 - e/E) L_seg`` and
  ``loss_cls = DELTA (e/E) L_cls`` with ``e/E = storage.iter / SOLVER.MAX_ITER``; off:
  ``loss_seg = L_seg``, ``loss_cls = DELTA L_cls``;
- gradient-flow adjustment (``GRADIENT_ADJUSTMENT``): ``F`` and ``S`` (hence also gmax/gmean of
  ``S``) enter the decision subnet detached, so ``L_cls`` never reaches the segmentation subnet;
- distance-transform weights and label dilation: computed by the mapper
  (:class:`~defect_det.segdec.mapper.SegDecDatasetMapper`) as ``seg_weight``;
- mixed supervision: images with ``use_pixel_labels`` False (weakly labelled defective images)
  contribute only to ``L_cls``.

``L_seg`` is the per-pixel binary cross-entropy between ``S`` and the soft target (the pixel label
averaged over 8x8 blocks), multiplied by the pixel weights and averaged over the pixels of the
images that use pixel labels; ``L_cls`` is the binary cross-entropy of the image logit against the
image label, averaged over the batch.
"""
from typing import Dict, List

import torch
import torch.nn.functional as F
from torch import nn

from detectron2.config import configurable
from detectron2.layers import Conv2d
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.utils.events import get_event_storage

__all__ = ["ChannelNorm", "SegDecNet", "SegmentationSubnet", "DecisionSubnet", "conv_norm_relu",
           "init_conv_weights", "INIT_MODES", "NORM_MODES", "SEGDEC_STRIDE"]

SEGDEC_STRIDE = 8
"""Output stride of the segmentation subnet (three 2x max-pools)."""


NORM_MODES = ("authors", "instance")
INIT_MODES = ("xavier", "torch")


class ChannelNorm(nn.Module):
    """
    Per-sample per-channel normalisation of (N, C, H, W) over (H, W), then ``* weight (+ bias)`` per
    channel (C,). ``mode``:

    - ``"authors"`` (the authors' released code, ``FeatureNorm``): ``(x - mean) / sqrt(std + eps)`` with
      ``std`` the unbiased (Bessel-corrected) standard deviation — the square root of a standard deviation,
      not of a variance; a 1 x 1 map has std 0 here (torch's unbiased std of one value is NaN);
    - ``"instance"`` (ours, the usual instance norm; what ``nn.GroupNorm(C, C, eps)`` computes):
      ``(x - mean) / sqrt(var + eps)`` with the biased variance, also defined for a 1 x 1 map.

    ``bias=False``: no shift (the authors' norm after the 1x1 segmentation conv).
    """

    def __init__(self, num_channels: int, eps: float = 1e-3, mode: str = "authors", bias: bool = True):
        super().__init__()
        if mode not in NORM_MODES:
            raise ValueError(f"MODEL.SEGDEC.NORM must be one of {NORM_MODES}, got {mode!r}")
        self.eps = eps
        self.mode = mode
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels)) if bias else None

    def forward(self, x):
        mean = x.mean(dim=(2, 3), keepdim=True)
        if self.mode == "instance":
            scale = torch.rsqrt(x.var(dim=(2, 3), keepdim=True, unbiased=False) + self.eps)
        elif torch.jit.is_tracing():
            scale = self._authors_scale_traced(x, mean)
        elif x.shape[2] * x.shape[3] > 1:
            scale = torch.rsqrt(x.std(dim=(2, 3), keepdim=True, unbiased=True) + self.eps)
        else:
            scale = x.new_full(mean.shape, self.eps ** -0.5)
        x = (x - mean) * scale * self.weight.view(1, -1, 1, 1)
        return x if self.bias is None else x + self.bias.view(1, -1, 1, 1)

    def _authors_scale_traced(self, x, mean):
        """The ``"authors"`` scale (N, C, 1, 1) without a Python branch on the map size, so that a traced
        model (tools/export_model.py) picks the 1 x 1 case per input, not once at the tracing size: the
        unbiased standard deviation written out (equal to ``x.std`` up to float rounding)."""
        n = x.new_ones(x.shape[2:]).sum()                            # H * W, a traced value
        var = (x - mean).square().sum(dim=(2, 3), keepdim=True) / (n - 1).clamp(min=1)
        return torch.where(n > 1, torch.rsqrt(var.sqrt() + self.eps), torch.full_like(var, self.eps ** -0.5))


def conv_norm_relu(in_channels: int, out_channels: int, kernel_size: int, norm: str = "authors") -> Conv2d:
    """``kernel_size`` conv ("same" padding, no bias) + per-sample per-channel norm + ReLU (an ``nn.ReLU``
    module, not ``F.relu``: TorchScript compiles Detectron2's ``Conv2d`` only with a module activation;
    it holds no state, so checkpoints are unchanged)."""
    return Conv2d(
        in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False,
        norm=ChannelNorm(out_channels, mode=norm), activation=nn.ReLU(),
    )


def init_conv_weights(module: nn.Module, init: str = "xavier") -> None:
    """``"xavier"``: every conv weight in ``module`` Xavier-normal (the authors' ``Conv2d_init``);
    ``"torch"``: left at PyTorch's default (Kaiming-uniform)."""
    if init not in INIT_MODES:
        raise ValueError(f"MODEL.SEGDEC.INIT must be one of {INIT_MODES}, got {init!r}")
    if init == "xavier":
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_normal_(m.weight)


def _ch(c: int, width: float) -> int:
    return max(1, int(round(c * width)))


class SegmentationSubnet(nn.Module):
    """Maps images (N, C, H, W) to features (N, 1024w, H/8, W/8) and a logit map (N, 1, H/8, W/8)."""

    def __init__(self, in_channels: int, width: float = 1.0, norm: str = "authors", seg_logit_norm: bool = True):
        super().__init__()
        c32, c64, c1024 = _ch(32, width), _ch(64, width), _ch(1024, width)
        pool = lambda: nn.MaxPool2d(2)  # noqa: E731

        def block(i, o, k):
            return conv_norm_relu(i, o, k, norm)

        self.volume = nn.Sequential(
            block(in_channels, c32, 5), pool(),
            block(c32, c64, 5), block(c64, c64, 5), block(c64, c64, 5),
            pool(),
            block(c64, c64, 5), block(c64, c64, 5), block(c64, c64, 5), block(c64, c64, 5),
            pool(),
            block(c64, c1024, 15),
        )
        self.seg_logits = nn.Conv2d(c1024, 1, kernel_size=1, bias=False)
        # the authors' code normalises the logit map too (scale only, no shift)
        self.seg_logits_norm = ChannelNorm(1, mode=norm, bias=False) if seg_logit_norm else None
        self.out_channels = c1024

    def forward(self, x):
        features = self.volume(x)
        logits = self.seg_logits(features)
        return features, logits if self.seg_logits_norm is None else self.seg_logits_norm(logits)


class DecisionSubnet(nn.Module):
    """Maps features (N, 1024w, h, w) and the logit map (N, 1, h, w) to image logits (N,)."""

    def __init__(self, in_channels: int, width: float = 1.0, norm: str = "authors"):
        super().__init__()
        c8, c16, c32 = _ch(8, width), _ch(16, width), _ch(32, width)
        self.extractor = nn.Sequential(
            nn.MaxPool2d(2), conv_norm_relu(in_channels + 1, c8, 5, norm),
            nn.MaxPool2d(2), conv_norm_relu(c8, c16, 5, norm),
            nn.MaxPool2d(2), conv_norm_relu(c16, c32, 5, norm),
        )
        self.fc = nn.Linear(2 * c32 + 2, 1)

    def forward(self, features, seg_logits):
        d = self.extractor(torch.cat([features, seg_logits], dim=1))
        pooled = [d.amax(dim=(2, 3)), d.mean(dim=(2, 3)),
                  seg_logits.amax(dim=(2, 3)), seg_logits.mean(dim=(2, 3))]
        return self.fc(torch.cat(pooled, dim=1)).squeeze(1)


@META_ARCH_REGISTRY.register()
class SegDecNet(nn.Module):
    """
    Inputs: a list of dicts (from :class:`~defect_det.segdec.mapper.SegDecDatasetMapper`), each:

    - ``image``: (C, H, W) tensor, C = ``MODEL.SEGDEC.IN_CHANNELS``, H and W multiples of 8, the same
      for every image of the batch; normalised as ``(image - PIXEL_MEAN) / PIXEL_STD``.
    - training: ``label`` (0/1, image level); ``use_pixel_labels`` (bool: whether this image's pixel
      labels enter ``L_seg``; default: True for ``label`` 0, else whether a mask is given);
      ``seg_target`` (H/8, W/8) soft target in [0, 1] and ``seg_weight`` (H/8, W/8) pixel weights,
      or instead ``sem_seg`` (H, W) in {0, 1} (then target = 8x8 block average, weights 1); a
      negative image without any of them gets an all-zero target.
    - inference: optional ``height`` / ``width`` (output size, default the input size).

    Returns:
        training: ``{"loss_seg": (1 - e/E) L_seg, "loss_cls": DELTA (e/E) L_cls}`` (see module doc).
        inference: one dict per image, ``{"sem_seg": (1, height, width) defect probability map
        (sigmoid of the logit map, bilinearly upsampled), "score": () image-level defect
        probability (sigmoid of the decision logit)}``.
    """

    @configurable
    def __init__(
        self,
        *,
        in_channels: int = 1,
        width: float = 1.0,
        pixel_mean=(0.0,),
        pixel_std=(255.0,),
        dyn_balanced_loss: bool = True,
        delta: float = 1.0,
        gradient_adjustment: bool = True,
        max_iter: int = 1,
        norm: str = "authors",
        seg_logit_norm: bool = True,
        init: str = "xavier",
    ):
        """
        Args:
            in_channels: image channels C.
            width: channel multiplier of both subnets.
            pixel_mean, pixel_std: C values each.
            dyn_balanced_loss, delta, gradient_adjustment: the training extensions (module doc).
            max_iter: E of the dynamic balancing, in iterations.
            norm, seg_logit_norm, init: the network's normalisation (:class:`ChannelNorm` mode), whether
                the logit map is normalised, and the conv initialisation ("xavier" | "torch"); the
                defaults are the authors' released code (projects/SegDecNet/README.md, "Fidelity").
        """
        super().__init__()
        if len(pixel_mean) != in_channels or len(pixel_std) != in_channels:
            raise ValueError(
                f"SegDecNet: MODEL.PIXEL_MEAN ({list(pixel_mean)}) and MODEL.PIXEL_STD "
                f"({list(pixel_std)}) need MODEL.SEGDEC.IN_CHANNELS={in_channels} values each"
            )
        if max_iter < 1:
            raise ValueError(f"SegDecNet: SOLVER.MAX_ITER must be >= 1, got {max_iter}")
        self.in_channels = in_channels
        self.segmentation = SegmentationSubnet(in_channels, width, norm, seg_logit_norm)
        self.decision = DecisionSubnet(self.segmentation.out_channels, width, norm)
        init_conv_weights(self, init)
        self.dyn_balanced_loss = dyn_balanced_loss
        self.delta = float(delta)
        self.gradient_adjustment = gradient_adjustment
        self.max_iter = int(max_iter)
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False)

    @classmethod
    def from_config(cls, cfg):
        c = cfg.MODEL.SEGDEC
        return {
            "in_channels": c.IN_CHANNELS,
            "width": c.WIDTH,
            "pixel_mean": tuple(cfg.MODEL.PIXEL_MEAN),
            "pixel_std": tuple(cfg.MODEL.PIXEL_STD),
            "dyn_balanced_loss": c.DYN_BALANCED_LOSS,
            "delta": c.DELTA,
            "gradient_adjustment": c.GRADIENT_ADJUSTMENT,
            "max_iter": cfg.SOLVER.MAX_ITER,
            "norm": c.NORM,
            "seg_logit_norm": c.SEG_LOGIT_NORM,
            "init": c.INIT,
        }

    @property
    def device(self):
        return self.pixel_mean.device

    def preprocess_image(self, batched_inputs: List[Dict]) -> torch.Tensor:
        """Stack and normalise the images: (N, C, H, W) float."""
        images = [x["image"].to(self.device) for x in batched_inputs]
        shape = tuple(images[0].shape)
        for i, im in enumerate(images):
            if im.dim() != 3 or im.shape[0] != self.in_channels:
                raise ValueError(f"SegDecNet: input {i} has image shape {tuple(im.shape)}, expected "
                                 f"({self.in_channels}, H, W) (MODEL.SEGDEC.IN_CHANNELS)")
            if tuple(im.shape) != shape:
                raise ValueError(f"SegDecNet: all images of a batch must have one size; input 0 is "
                                 f"{shape}, input {i} is {tuple(im.shape)} (set MODEL.SEGDEC.INPUT_SIZE)")
        if shape[1] % SEGDEC_STRIDE or shape[2] % SEGDEC_STRIDE:
            raise ValueError(f"SegDecNet: image size {shape[1:]} must be a multiple of {SEGDEC_STRIDE}")
        x = torch.stack(images).float()
        return (x - self.pixel_mean) / self.pixel_std

    def forward(self, batched_inputs: List[Dict]):
        if not self.training:
            return self.inference(batched_inputs)
        x = self.preprocess_image(batched_inputs)
        features, seg_logits = self.segmentation(x)
        if self.gradient_adjustment:
            dec_logits = self.decision(features.detach(), seg_logits.detach())
        else:
            dec_logits = self.decision(features, seg_logits)
        return self.losses(batched_inputs, seg_logits, dec_logits)

    def inference(self, batched_inputs: List[Dict], do_postprocess: bool = True):
        """
        Args:
            batched_inputs: as :meth:`forward` at inference.
            do_postprocess: upsample the defect map to each image's output size (class doc).
        Returns:
            ``do_postprocess``: the per-image dicts of the class doc; otherwise per image
            ``{"seg_probs": (1, H/8, W/8) defect probabilities at the network's stride, "score": ()}``
            (what ``tools/export_model.py`` also returns, so that a deployed model can be resized to
            any output size exactly as here).
        """
        x = self.preprocess_image(batched_inputs)
        features, seg_logits = self.segmentation(x)
        probs, scores = torch.sigmoid(seg_logits), torch.sigmoid(self.decision(features, seg_logits))
        if do_postprocess:
            return self.postprocess(batched_inputs, probs, scores, x.shape[-2:])
        return [{"seg_probs": probs[i], "score": scores[i]} for i in range(len(batched_inputs))]

    def _targets(self, batched_inputs, map_size):
        """Per image: (use_pixel_labels, target (h, w), weight (h, w)) on the model's device."""
        out = []
        for i, d in enumerate(batched_inputs):
            label = int(d["label"])
            if "seg_target" in d:
                target = d["seg_target"].to(self.device).float()
                weight = d.get("seg_weight")
                weight = torch.ones_like(target) if weight is None else weight.to(self.device).float()
            elif "sem_seg" in d:
                mask = d["sem_seg"].to(self.device).float()[None, None]
                target = F.avg_pool2d(mask, SEGDEC_STRIDE)[0, 0]
                weight = torch.ones_like(target)
            elif label == 0:
                target = torch.zeros(map_size, device=self.device)
                weight = torch.ones_like(target)
            else:
                target = weight = None
            use = bool(d.get("use_pixel_labels", target is not None))
            if use and target is None:
                raise ValueError(f"SegDecNet: input {i} has use_pixel_labels=True but neither "
                                 "seg_target nor sem_seg")
            if use and tuple(target.shape) != tuple(map_size):
                raise ValueError(f"SegDecNet: input {i} has a segmentation target of shape "
                                 f"{tuple(target.shape)}, the logit map is {tuple(map_size)} (1/8 of the image)")
            out.append((use, target, weight))
        return out

    def balance_weight(self) -> float:
        """e/E = current iteration / SOLVER.MAX_ITER in [0, 1] (from the EventStorage)."""
        return min(max(get_event_storage().iter / self.max_iter, 0.0), 1.0)

    def losses(self, batched_inputs, seg_logits, dec_logits):
        labels = torch.tensor([float(d["label"]) for d in batched_inputs], device=self.device)
        if not ((labels == 0) | (labels == 1)).all():
            raise ValueError(f"SegDecNet: image labels must be 0 or 1, got {labels.tolist()}")
        targets = self._targets(batched_inputs, seg_logits.shape[-2:])
        used = [i for i, (use, _, _) in enumerate(targets) if use]
        if used:
            target = torch.stack([targets[i][1] for i in used])
            weight = torch.stack([targets[i][2] for i in used])
            per_pixel = F.binary_cross_entropy_with_logits(seg_logits[used, 0], target, reduction="none")
            l_seg = (per_pixel * weight).mean()
        else:  # only weakly labelled images: keep the graph (DDP) with a zero loss
            l_seg = seg_logits.sum() * 0.0
        l_cls = F.binary_cross_entropy_with_logits(dec_logits, labels)
        if self.dyn_balanced_loss:
            r = self.balance_weight()
            w_seg, w_cls = 1.0 - r, self.delta * r
        else:
            w_seg, w_cls = 1.0, self.delta
        storage = get_event_storage()
        storage.put_scalar("segdec/L_seg", float(l_seg.detach()))
        storage.put_scalar("segdec/L_cls", float(l_cls.detach()))
        storage.put_scalar("segdec/cls_weight", w_cls)
        return {"loss_seg": w_seg * l_seg, "loss_cls": w_cls * l_cls}

    def postprocess(self, batched_inputs, probs, scores, input_size):
        """``probs``: (N, 1, H/8, W/8) defect probabilities, ``scores``: (N,) image-level defect
        probabilities; returns the per-image output dicts (class doc)."""
        results = []
        for i, d in enumerate(batched_inputs):
            if "height" in d or "width" in d:
                size = (int(d.get("height", input_size[0])), int(d.get("width", input_size[1])))
            else:  # no int(): a traced model (tools/export_model.py) follows its input's size
                size = (input_size[0], input_size[1])
            prob = F.interpolate(probs[i : i + 1], size=size, mode="bilinear", align_corners=False)[0]
            results.append({"sem_seg": prob, "score": scores[i]})
        return results
