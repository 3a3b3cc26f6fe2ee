"""``BoxSupervisedMaskHead``: a Mask R-CNN mask head trainable from box labels only.

Detectron2's ``MaskRCNNConvUpsampleHead`` (same layers, same inference) whose training loss, with
``MODEL.ROI_MASK_HEAD.BOX_SUPERVISED``, needs only the ``gt_boxes`` the ROI heads match to each
positive proposal (no ``gt_masks``); without it the head trains with Detectron2's
``mask_rcnn_loss``. Equations and defaults in projects/WeakMask/README.md. Per positive ROI r with
mask logits x (M x M, M = 2 x POOLER_RESOLUTION, the class channel of its GT class) and
probabilities p = sigmoid(x):

- **Box target** (:func:`box_grid_targets`): the matched GT box rasterised into the ROI's grid:
  along each axis, grid cell [u, u+1) is "in" if it overlaps the box's extent [a, b) (grid units)
  by at least min(1, b - a) / 2 (so interior cells, boundary cells whose centre is inside, and for
  a box thinner than a cell the cell holding most of it). Target B = in_y (outer) in_x.
- **Projection loss** (:func:`projection_loss`, BoxInst-style): with P_x = max over rows of p,
  P_y = max over columns, and the box's projections in_x, in_y,
  ``L_proj = mean_r [dice(P_x, in_x) + dice(P_y, in_y)]``, dice(a, b) = 1 - 2 sum(a b) /
  (sum a^2 + sum b^2 + eps). A mask equal to B gives at most eps / 2 per term.
- **Pairwise loss** (:func:`pairwise_loss`): with the affinities w_ik of
  :func:`~.affinity.pairwise_affinity` (colour of the image in [0, 1] and, where a template
  exists, the magnitude of the image - template difference, pooled into the same grid), over the
  edges E = {(i, k): w_ik >= tau, i inside B, neighbour inside the grid}:
  ``L_pair = -1/|E| sum_E log(p_i p_j + (1 - p_i)(1 - p_j))`` (in log space from the logits).
  It is ramped in linearly over ``WEAK.WARMUP_ITERS`` iterations (factor min(1, (iter+1)/W)).
- **Template-difference loss** (:func:`template_difference_loss`, ours; only where the image has a
  template): with d the image - template difference magnitude pooled into the grid, the cells of
  B with d_i >= kappa max_B d are pseudo-foreground, the other cells of B pseudo-background:
  ``L_tmpl = mean over those cells of BCE(x_i, [d_i >= kappa max_B d])``, over the ROIs whose
  max_B d >= ``TEMPLATE_MIN_DIFF``. The filled box minimises both losses above (every edge inside
  B agrees); this is the term that says which part of the box is the defect.

The images reach the head as arguments of its forward (``images``, ``templates``, ``template_valid``):
defect_det's ROI heads pass them (``defect_det.modeling.roi_heads.ImageInputsMixin``) — with
``TemplateRCNN`` the images and templates it puts in the features dict, with Detectron2's
``GeneralizedRCNN`` the images recovered from the network input and no template (colour affinity
only). At inference, with
``MODEL.ROI_MASK_HEAD.REFINE.ENABLED``, the probabilities of ``mask_rcnn_inference`` are refined
by :class:`~.refine.EntropyConstrainedRefiner` with the same affinities (at ``pred_boxes``).
"""
from typing import Dict, List, Optional

import torch
from detectron2.config import configurable
from detectron2.modeling.roi_heads.mask_head import (
    ROI_MASK_HEAD_REGISTRY,
    MaskRCNNConvUpsampleHead,
    mask_rcnn_inference,
    mask_rcnn_loss,
)
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import get_event_storage
from torch.nn import functional as F

from .affinity import image_cues, neighbour_offsets, pairwise_affinity, pool_cues, shift_to_neighbours
from .refine import EntropyConstrainedRefiner

PIXEL_RANGE = 255.0  # input images are uint8; the colour cue is pixel value / PIXEL_RANGE

__all__ = [
    "BoxSupervisedMaskHead",
    "box_grid_targets",
    "pairwise_loss",
    "projection_loss",
    "template_difference_loss",
]


def _axis_inside(a: torch.Tensor, b: torch.Tensor, m: int) -> torch.Tensor:
    """(R,) extents [a, b) in grid units -> (R, m) bool: cells overlapping by >= min(1, b-a)/2."""
    cells = torch.arange(m, device=a.device, dtype=a.dtype)
    overlap = (torch.minimum(b[:, None], cells + 1) - torch.maximum(a[:, None], cells)).clamp(min=0)
    need = 0.5 * (b - a).clamp(min=0, max=1)[:, None]
    return (overlap >= need) & (overlap > 0)


def box_grid_targets(gt_boxes: torch.Tensor, rois: torch.Tensor, size: int):
    """
    Rasterise boxes into the M x M grid of their ROIs (module doc).

    Args:
        gt_boxes: (R, 4) XYXY boxes (the matched GT box of each ROI), input-image pixels.
        rois: (R, 4) XYXY ROI boxes whose grid is used.
        size: M.
    Returns:
        (in_x, in_y): (R, M) bool each; the target mask is ``in_y[:, :, None] & in_x[:, None, :]``.
    """
    if gt_boxes.shape != rois.shape or gt_boxes.dim() != 2 or gt_boxes.shape[1] != 4:
        raise ValueError(f"gt_boxes {tuple(gt_boxes.shape)} and rois {tuple(rois.shape)} must both be (R, 4)")
    w = (rois[:, 2] - rois[:, 0]).clamp(min=1e-6)
    h = (rois[:, 3] - rois[:, 1]).clamp(min=1e-6)
    in_x = _axis_inside((gt_boxes[:, 0] - rois[:, 0]) / w * size, (gt_boxes[:, 2] - rois[:, 0]) / w * size, size)
    in_y = _axis_inside((gt_boxes[:, 1] - rois[:, 1]) / h * size, (gt_boxes[:, 3] - rois[:, 1]) / h * size, size)
    return in_x, in_y


def _dice(a: torch.Tensor, b: torch.Tensor, eps: float) -> torch.Tensor:
    """(R, L) x (R, L) -> (R,) dice loss."""
    return 1.0 - 2.0 * (a * b).sum(1) / ((a * a).sum(1) + (b * b).sum(1) + eps)


def projection_loss(probs: torch.Tensor, in_x: torch.Tensor, in_y: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """
    Box projection consistency (module doc).

    Args:
        probs: (R, M, M) mask probabilities (rows = y, columns = x).
        in_x, in_y: (R, M) projections of the box target (:func:`box_grid_targets`).
    Returns:
        scalar: mean over ROIs of dice(max_y p, in_x) + dice(max_x p, in_y); 0-dim 0 if R = 0.
    """
    if probs.dim() != 3:
        raise ValueError(f"probs must be (R, M, M), got shape {tuple(probs.shape)}")
    if probs.shape[0] == 0:
        return probs.sum() * 0.0
    px = probs.max(dim=1).values  # (R, M): max over rows -> projection onto x
    py = probs.max(dim=2).values  # (R, M): max over columns -> projection onto y
    return (_dice(px, in_x.to(probs.dtype), eps) + _dice(py, in_y.to(probs.dtype), eps)).mean()


def pairwise_loss(
    logits: torch.Tensor, affinity: torch.Tensor, inside: torch.Tensor, offsets, tau: float
) -> torch.Tensor:
    """
    Affinity loss between neighbouring cells (module doc).

    Args:
        logits: (R, M, M) mask logits.
        affinity: (R, K, M, M) affinities for ``offsets``.
        inside: (R, M, M) bool, the cells i the loss uses (inside the box target).
        offsets: the K neighbour offsets.
        tau: edge threshold on the affinity.
    Returns:
        scalar: -mean over edges of log P(same label); 0 (with a graph) if there is no edge.
    """
    x = logits[:, None]                                            # (R, 1, M, M)
    log_fg, log_bg = F.logsigmoid(x), F.logsigmoid(-x)
    nb_fg = shift_to_neighbours(log_fg, offsets)[:, :, 0]          # (R, K, M, M)
    nb_bg = shift_to_neighbours(log_bg, offsets)[:, :, 0]
    log_same = torch.logaddexp(log_fg + nb_fg, log_bg + nb_bg)     # (R, K, M, M)
    grid = shift_to_neighbours(torch.ones_like(x[:1]), offsets)[:, :, 0] > 0  # (1, K, M, M)
    edges = (affinity >= tau) & grid & inside[:, None]
    n = edges.sum()
    return (-log_same * edges).sum() / n.clamp(min=1)


def template_difference_loss(
    logits: torch.Tensor, diff: torch.Tensor, inside: torch.Tensor, thresh: float, min_diff: float
) -> torch.Tensor:
    """
    Template-difference loss (module doc).

    Args:
        logits: (R, M, M) mask logits.
        diff: (R, M, M) image - template difference magnitude pooled into each ROI's grid.
        inside: (R, M, M) bool, the box target B of each ROI.
        thresh: kappa in (0, 1]: cells of B with d >= kappa * max_B d are pseudo-foreground.
        min_diff: ROIs whose max_B d is below this are left out.
    Returns:
        scalar: mean BCE over the cells of B of the ROIs used; 0 (with a graph) if there is none.
    """
    d = diff.masked_fill(~inside, 0.0)
    peak = d.flatten(1).max(dim=1).values                               # (R,)
    used = inside & (peak >= min_diff)[:, None, None]
    target = (d >= thresh * peak[:, None, None]).to(logits.dtype)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (bce * used).sum() / used.sum().clamp(min=1)


@ROI_MASK_HEAD_REGISTRY.register()
class BoxSupervisedMaskHead(MaskRCNNConvUpsampleHead):
    """``MaskRCNNConvUpsampleHead`` with box-only losses and entropy-constrained refinement (module
    doc). Input: pooled ROI features (R, C, S, S); logits (R, num_classes, 2S, 2S)."""

    # children that are not layers of the (nn.Sequential) mask head
    _NOT_LAYERS = ("refiner",)

    @configurable
    def __init__(
        self,
        input_shape,
        *,
        box_supervised: bool = False,
        projection_weight: float = 1.0,
        pairwise_weight: float = 1.0,
        theta: float = 0.05,
        theta_template: float = 0.1,
        tau: float = 0.3,
        dilation: int = 2,
        warmup_iters: int = 1000,
        use_template: bool = True,
        template_weight: float = 1.0,
        template_thresh: float = 0.4,
        template_min_diff: float = 0.05,
        refiner: Optional[EntropyConstrainedRefiner] = None,
        **kwargs,
    ):
        """
        Args (besides MaskRCNNConvUpsampleHead's):
            box_supervised: train with the projection + pairwise losses (gt_boxes only) instead of
                Detectron2's mask loss (gt_masks).
            projection_weight, pairwise_weight: loss weights (>= 0).
            theta, theta_template: affinity scales of colour and of the template difference (> 0).
            tau: edge threshold on the affinity, in [0, 1].
            dilation: neighbour spacing (>= 1).
            warmup_iters: iterations over which the pairwise loss ramps in (0 = none).
            use_template: use the image - template difference where the image has a template.
            template_weight: weight of the template-difference loss (>= 0; needs use_template).
            template_thresh: kappa of that loss, in (0, 1].
            template_min_diff: ROIs with a smaller peak difference in the box are left out (>= 0).
            refiner: refinement applied at inference, or None.
        """
        super().__init__(input_shape, **kwargs)
        for name, v in (("projection_weight (WEAK.PROJECTION_WEIGHT)", projection_weight),
                        ("pairwise_weight (WEAK.PAIRWISE_WEIGHT)", pairwise_weight),
                        ("warmup_iters (WEAK.WARMUP_ITERS)", warmup_iters),
                        ("template_weight (WEAK.TEMPLATE_WEIGHT)", template_weight),
                        ("template_min_diff (WEAK.TEMPLATE_MIN_DIFF)", template_min_diff)):
            if v < 0:
                raise ValueError(f"{name} must be >= 0, got {v}")
        if theta <= 0 or theta_template <= 0:
            raise ValueError(f"theta (WEAK.THETA) and theta_template (WEAK.THETA_TEMPLATE) must be > 0, "
                             f"got {theta}, {theta_template}")
        if not 0.0 <= tau <= 1.0:
            raise ValueError(f"tau (WEAK.TAU) must be in [0, 1], got {tau}")
        if not 0.0 < template_thresh <= 1.0:
            raise ValueError(f"template_thresh (WEAK.TEMPLATE_THRESH) must be in (0, 1], got {template_thresh}")
        self.offsets = neighbour_offsets(dilation)
        if refiner is not None and refiner.offsets != self.offsets:
            raise ValueError("refiner and head must use the same dilation (MODEL.ROI_MASK_HEAD.WEAK.DILATION)")
        self.box_supervised = box_supervised
        self.projection_weight = float(projection_weight)
        self.pairwise_weight = float(pairwise_weight)
        self.theta = float(theta)
        self.theta_template = float(theta_template)
        self.tau = float(tau)
        self.warmup_iters = int(warmup_iters)
        self.use_template = use_template
        self.template_weight = float(template_weight) if use_template else 0.0
        self.template_thresh = float(template_thresh)
        self.template_min_diff = float(template_min_diff)
        self.refiner = refiner

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        c = cfg.MODEL.ROI_MASK_HEAD
        w = c.WEAK
        refiner = EntropyConstrainedRefiner(cfg) if c.REFINE.ENABLED else None
        ret.update(
            box_supervised=c.BOX_SUPERVISED,
            projection_weight=w.PROJECTION_WEIGHT,
            pairwise_weight=w.PAIRWISE_WEIGHT,
            theta=w.THETA,
            theta_template=w.THETA_TEMPLATE,
            tau=w.TAU,
            dilation=w.DILATION,
            warmup_iters=w.WARMUP_ITERS,
            use_template=w.USE_TEMPLATE,
            template_weight=w.TEMPLATE_WEIGHT,
            template_thresh=w.TEMPLATE_THRESH,
            template_min_diff=w.TEMPLATE_MIN_DIFF,
            refiner=refiner,
        )
        return ret

    # ------------------------------------------------------------------ images
    @property
    def needs_images(self) -> bool:
        """Whether the head reads the input images in its current mode: the pairwise and
        template-difference losses in training, the refinement at inference."""
        if self.training:
            return self.box_supervised and (self.pairwise_weight > 0 or self.template_weight > 0)
        return self.refiner is not None

    @property
    def needs_templates(self) -> bool:
        return self.needs_images and self.use_template

    def cues(self, images: Optional[torch.Tensor], templates: Optional[torch.Tensor] = None,
             template_valid: Optional[torch.Tensor] = None):
        """
        The image cues of a batch, or None if the head does not read images in its current mode.

        Args:
            images: (N, C, H, W) padded input images in pixel values 0..255, not normalised (the
                boxes are in their pixels); the cues are these / 255, so THETA is in [0, 1] units.
            templates: (N, C, H, W) templates likewise, or None.
            template_valid: (N,) bool, images that really have a template.
        Returns:
            None, or ((N, C + 1, H, W) colour + template difference, (N,) bool validity).
        """
        if not self.needs_images:
            return None
        if images is None:
            raise ValueError(
                "BoxSupervisedMaskHead reads the input images (pairwise/template losses, refinement) but got "
                "none: call it from defect_det's ROI heads (MODEL.ROI_HEADS.NAME Defect*/RDDN*ROIHeads), which "
                "pass them")
        scale = 1.0 / PIXEL_RANGE
        t = templates.detach() * scale if (templates is not None and self.use_template) else None
        return image_cues(images.detach() * scale, t, template_valid)

    def _pooled_cues(self, cues, box_lists: List[Boxes], size):
        """The cues pooled into the ROIs' M x M grids: colour (R, C, M, M), and the template
        difference (R, 1, M, M) with its validity (R,) per ROI, or None, None without templates."""
        maps, cue_valid = cues
        pooled = pool_cues(maps, box_lists, tuple(size))           # (R, C + 1, M, M)
        diff, valid = None, None
        if self.use_template and bool(cue_valid.any()):
            # sized from the boxes themselves (not len()), so a traced model follows the box count
            image_index = torch.cat([torch.full_like(b.tensor[:, 0], i, dtype=torch.long, device=pooled.device)
                                     for i, b in enumerate(box_lists)])
            diff, valid = pooled[:, -1:], cue_valid[image_index]
        return pooled[:, :-1], diff, valid

    def affinities(self, cues, box_lists: List[Boxes], size, pooled=None) -> torch.Tensor:
        """(R, K, M, M) affinities of the ROIs ``box_lists`` (one Boxes per image) on an M x M grid, from
        the batch's :meth:`cues`; ``pooled``: their :meth:`_pooled_cues` if already computed."""
        colour, diff, valid = pooled if pooled is not None else self._pooled_cues(cues, box_lists, size)
        return pairwise_affinity(colour, self.offsets, self.theta, diff, valid, self.theta_template)

    # ------------------------------------------------------------------ network
    def layers(self, x):
        for name, layer in self.named_children():
            if name not in self._NOT_LAYERS:
                x = layer(x)
        return x

    def forward(self, x, instances: List[Instances], images: Optional[torch.Tensor] = None,
                templates: Optional[torch.Tensor] = None, template_valid: Optional[torch.Tensor] = None):
        """
        Args:
            x: (R, C, S, S) pooled features of the ROIs of ``instances``.
            instances: training: positive proposals with ``proposal_boxes``, ``gt_classes``,
                ``gt_boxes`` (and ``gt_masks`` unless box-supervised); inference: detections.
            images, templates, template_valid: the batch's input images (see :meth:`cues`); needed
                when :attr:`needs_images`.
        Returns:
            training: dict of losses; inference: ``instances`` with ``pred_masks`` (R_i, 1, M, M).
        """
        x = self.layers(x)
        if self.training:
            if not self.box_supervised:
                return {"loss_mask": mask_rcnn_loss(x, instances, self.vis_period) * self.loss_weight}
            return self.box_supervised_losses(x, instances, self.cues(images, templates, template_valid))
        mask_rcnn_inference(x, instances)
        if self.refiner is not None:
            self.refine(instances, self.cues(images, templates, template_valid))
        return instances

    def _class_logits(self, logits: torch.Tensor, instances: List[Instances]) -> torch.Tensor:
        """(R, C, M, M) -> (R, M, M), the channel of each ROI's GT class (C = 1: class-agnostic)."""
        if logits.shape[1] == 1:
            return logits[:, 0]
        classes = torch.cat([i.gt_classes for i in instances if len(i)])
        return logits[torch.arange(logits.shape[0], device=logits.device), classes]

    def box_supervised_losses(self, logits: torch.Tensor, instances: List[Instances], cues=None
                              ) -> Dict[str, torch.Tensor]:
        """
        Args:
            logits: (R, C, M, M) mask logits of the positive proposals ``instances``.
            cues: the batch's :meth:`cues` (needed for the pairwise and template losses).
        Returns:
            {"loss_mask_projection", "loss_mask_pairwise"[, "loss_mask_template"]} (weighted;
            pairwise with its warm-up; template only with WEAK.TEMPLATE_WEIGHT > 0).
        """
        if logits.shape[0] == 0:
            zero = logits.sum() * 0.0
            keys = ["loss_mask_projection", "loss_mask_pairwise"] + (["loss_mask_template"] if self.template_weight > 0 else [])
            return {k: zero for k in keys}
        m = logits.shape[-1]
        x = self._class_logits(logits, instances)                       # (R, M, M)
        # images without any GT box keep an empty entry without gt_* fields (Detectron2's
        # label_and_sample_proposals); they contribute no ROI
        rois = torch.cat([i.proposal_boxes.tensor for i in instances if len(i)])
        gt = torch.cat([i.gt_boxes.tensor for i in instances if len(i)])
        in_x, in_y = box_grid_targets(gt, rois, m)
        losses = {"loss_mask_projection": self.projection_weight * projection_loss(x.sigmoid(), in_x, in_y)}
        inside = in_y[:, :, None] & in_x[:, None, :]
        boxes = [i.proposal_boxes for i in instances]
        # the image cues are pooled into the ROIs once, for both losses that read them
        pooled = self._pooled_cues(cues, boxes, logits.shape[-2:]) if self.needs_images else None
        if self.template_weight > 0:
            _, diff, valid = pooled
            if diff is None:  # no image of the batch has a template
                losses["loss_mask_template"] = x.sum() * 0.0
            else:
                losses["loss_mask_template"] = self.template_weight * template_difference_loss(
                    x, diff[:, 0], inside & valid[:, None, None], self.template_thresh, self.template_min_diff)
        if self.pairwise_weight > 0:
            affinity = self.affinities(cues, boxes, logits.shape[-2:], pooled)
            warm = 1.0
            if self.warmup_iters > 0:
                warm = min(1.0, (get_event_storage().iter + 1) / self.warmup_iters)
            losses["loss_mask_pairwise"] = (self.pairwise_weight * warm) * pairwise_loss(
                x, affinity, inside, self.offsets, self.tau)
        else:
            losses["loss_mask_pairwise"] = x.sum() * 0.0
        return losses

    def refine(self, instances: List[Instances], cues):
        """Refine ``pred_masks`` (R_i, 1, M, M) of the detections in place (at ``pred_boxes``), with the
        batch's :meth:`cues`."""
        # traced (tools/export_model.py): no shortcut frozen on the example's detection count
        if not torch.jit.is_tracing() and sum(len(i) for i in instances) == 0:
            return
        probs = torch.cat([i.pred_masks for i in instances])
        affinity = self.affinities(cues, [i.pred_boxes for i in instances], probs.shape[-2:])
        refined = self.refiner(probs, affinity).probs
        parts = [refined] if len(instances) == 1 else refined.split([len(i) for i in instances])
        for inst, p in zip(instances, parts):
            inst.pred_masks = p
