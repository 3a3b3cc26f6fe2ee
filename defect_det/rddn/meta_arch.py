"""``TemplateRCNN``: Detectron2's ``GeneralizedRCNN`` with RDDN's template reference.

``MODEL.TEMPLATE.MODE`` (paper section IV-A/B; equations in projects/RDDN/README.md):

- ``"none"``  the baseline R-CNN.
- ``"pre"``   TR-Pre: the backbone sees ``(I - T) / (2 * PIXEL_STD)`` instead of
  ``(I - PIXEL_MEAN) / PIXEL_STD`` (eq. 7).
- ``"inter"`` TR-Inter: images and templates go through the shared bottom-up network as ONE
  batch [I_1..I_N, T_1..T_N]; FPN is built on ``C_i^I - C_i^T`` (eq. 9).
- ``"ptg"``   PTG: FPN on ``C_i - G_i(C_i)`` (eq. 14), with the generators trained jointly by MSE
  on defect-free images (eq. 13): the batch's own normal images (``is_normal``) and the
  ``normal_image`` the :class:`~defect_det.data.PairedDatasetMapper` attaches to defect images.

The differences are applied by a forward hook on the FPN's ``bottom_up``, so the parameter names of
the model equal the baseline's (baseline / model-zoo checkpoints load unchanged) and Detectron2's
FPN is used as is. ``MODEL.TEMPLATE.POST`` (TR-Post, eq. 10) runs the backbone on
[images; templates] at inference and lets the RDDN ROI heads rescore every proposal.

A mask head that reads the input images (``needs_images``, e.g. ``BoxSupervisedMaskHead``'s
affinity loss and refinement, projects/WeakMask/README.md) gets the images in their pixel values
(TR-Pre too: the image itself, not the difference the backbone sees) and the templates where
present (:meth:`TemplateRCNN.pixel_inputs`): they travel to the ROI heads in the features dict
(``defect_det.modeling.roi_heads.PIXELS_KEY`` ...), which pass them to the mask head as arguments.

Inputs (dicts from :class:`~defect_det.data.PairedDatasetMapper`): ``image`` (3, H, W),
``template`` (3, H, W) (pre / inter; optional for POST), ``normal_image`` (3, H', W') and
``is_normal`` (PTG training), plus the usual ``instances`` / ``height`` / ``width``.
"""
import contextlib
from typing import Dict, List, Optional

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from detectron2.structures import ImageList, Instances
from detectron2.utils.events import get_event_storage

from ..modeling.roi_heads.heads import PIXELS_KEY, TEMPLATE_PIXELS_KEY, TEMPLATE_PIXELS_VALID_KEY
from .pseudo_template import PseudoTemplateGenerator
from .template_post import TEMPLATE_PREFIX, TEMPLATE_VALID_KEY

__all__ = ["TemplateRCNN", "TEMPLATE_MODES"]

TEMPLATE_MODES = ("none", "pre", "inter", "ptg")


@META_ARCH_REGISTRY.register()
class TemplateRCNN(GeneralizedRCNN):
    """Template-aware R-CNN (see module doc)."""

    @configurable
    def __init__(
        self,
        *,
        template_mode: str = "none",
        template_post: bool = False,
        ptg_hidden_dim: int = 256,
        ptg_loss_weight: float = 1.0,
        ptg_detach_features: bool = True,
        **kwargs,
    ):
        """
        Args (besides GeneralizedRCNN's):
            template_mode: "none" | "pre" | "inter" | "ptg".
            template_post: TR-Post rescoring at inference (mode "none" or "ptg" only).
            ptg_hidden_dim, ptg_loss_weight, ptg_detach_features: PTG generator width, weight of
                its reconstruction loss, and whether that loss stops at the generator.
        """
        super().__init__(**kwargs)
        if template_mode not in TEMPLATE_MODES:
            raise ValueError(f"MODEL.TEMPLATE.MODE must be one of {TEMPLATE_MODES}, got {template_mode!r}")
        if template_post and template_mode not in ("none", "ptg"):
            raise ValueError(
                f"MODEL.TEMPLATE.POST needs MODE 'none' or 'ptg' (got {template_mode!r}): with 'pre' or "
                "'inter' the features of a template alone are undefined"
            )
        if template_post and not getattr(self.roi_heads, "supports_template_post", False):
            raise ValueError(
                f"MODEL.TEMPLATE.POST needs ROI heads that rescore by template similarity "
                f"(RDDNStandardROIHeads / RDDNCascadeROIHeads), got {type(self.roi_heads).__name__}"
            )
        self.template_mode = template_mode
        self.template_post = template_post
        self.ptg_loss_weight = ptg_loss_weight
        self.ptg_detach_features = ptg_detach_features
        self._reference_on = True
        self.ptg = None
        if template_mode in ("inter", "ptg"):
            bottom_up = getattr(self.backbone, "bottom_up", None)
            if bottom_up is None:
                raise ValueError(
                    f"MODEL.TEMPLATE.MODE={template_mode!r} needs an FPN backbone with a bottom_up "
                    f"network (e.g. build_resnet_fpn_backbone), got {type(self.backbone).__name__}"
                )
            if template_mode == "ptg":
                shapes = bottom_up.output_shape()
                stages = [f for f in self.backbone.in_features if f in shapes]
                self.ptg = PseudoTemplateGenerator({f: shapes[f].channels for f in stages}, ptg_hidden_dim)
            bottom_up.register_forward_hook(self._reference_hook)

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        t = cfg.MODEL.TEMPLATE
        ret.update(
            template_mode=t.MODE,
            template_post=t.POST,
            ptg_hidden_dim=t.PTG.HIDDEN_DIM,
            ptg_loss_weight=t.PTG.LOSS_WEIGHT,
            ptg_detach_features=t.PTG.DETACH_FEATURES,
        )
        return ret

    # ------------------------------------------------------------------ backbone
    def _reference_hook(self, module, inputs, outputs: Dict[str, torch.Tensor]):
        """Forward hook of ``backbone.bottom_up``: {stage: (B, C, H, W)} -> reference features."""
        if not self._reference_on:
            return None
        if self.template_mode == "inter":  # batch = [images; templates]
            return {k: v[: v.shape[0] // 2] - v[v.shape[0] // 2 :] for k, v in outputs.items()}
        return self.ptg.residual(outputs)

    @contextlib.contextmanager
    def plain_bottom_up(self):
        """Within the block ``backbone.bottom_up`` returns its own features (no differences)."""
        previous, self._reference_on = self._reference_on, False
        try:
            yield
        finally:
            self._reference_on = previous

    def _normalize(self, tensors: List[torch.Tensor]) -> ImageList:
        tensors = [(self._move_to_current_device(x) - self.pixel_mean) / self.pixel_std for x in tensors]
        return self._pad(tensors)

    def _pad(self, tensors: List[torch.Tensor]) -> ImageList:
        return ImageList.from_tensors(
            tensors, self.backbone.size_divisibility, padding_constraints=self.backbone.padding_constraints
        )

    @staticmethod
    def _template(x: Dict, required: bool = True) -> Optional[torch.Tensor]:
        t = x.get("template")
        if t is None and required:
            name = x.get("file_name", "<an input without file_name>")
            raise ValueError(
                f"{name}: no 'template' in the model input; MODEL.TEMPLATE.MODE pre/inter needs one "
                "per image (build inputs with defect_det.data.PairedDatasetMapper)"
            )
        return t

    def preprocess_image(self, batched_inputs: List[Dict[str, torch.Tensor]]) -> ImageList:
        """Normalised, padded images; TR-Pre: ``(I - T) / (2 * pixel_std)`` (eq. 7)."""
        if self.template_mode != "pre":
            return super().preprocess_image(batched_inputs)
        diffs = []
        for x in batched_inputs:
            image = self._move_to_current_device(x["image"]).float()
            template = self._move_to_current_device(self._template(x)).float()
            diffs.append((image - template) / (2.0 * self.pixel_std))
        return self._pad(diffs)

    def _templates_like(self, images: ImageList, batched_inputs, required=True):
        """Normalised templates padded to ``images.tensor``'s size (images without one: their own
        image, flagged invalid). Returns ((N, 3, H, W) tensor, (N,) bool validity)."""
        tensors, valid = [], []
        for x in batched_inputs:
            t = self._template(x, required)
            valid.append(t is not None)
            tensors.append(t if t is not None else x["image"])
        t = self._normalize(tensors).tensor
        if t.shape != images.tensor.shape:  # templates match their images, so only padding differs
            raise ValueError(f"templates batch {tuple(t.shape)} != images batch {tuple(images.tensor.shape)}")
        return t, torch.tensor(valid, device=t.device)

    def extract_features(self, images: ImageList, batched_inputs) -> Dict[str, torch.Tensor]:
        """Backbone (FPN) features of the batch, with the template reference of the mode."""
        if self.template_mode == "inter":
            templates, _ = self._templates_like(images, batched_inputs)
            return self.backbone(torch.cat([images.tensor, templates], dim=0))
        return self.backbone(images.tensor)

    def _features_for_post(self, images: ImageList, batched_inputs) -> Dict[str, torch.Tensor]:
        """Features of images and templates from one backbone call; template entries are keyed
        ``"template:<name>"`` plus ``"template:valid"`` (N,) for the ROI heads."""
        templates, valid = self._templates_like(images, batched_inputs, required=False)
        n = images.tensor.shape[0]
        both = self.backbone(torch.cat([images.tensor, templates], dim=0))
        features = {k: v[:n] for k, v in both.items()}
        features.update({TEMPLATE_PREFIX + k: v[n:] for k, v in both.items()})
        features[TEMPLATE_VALID_KEY] = valid
        return features

    # ------------------------------------------------------------------ mask head
    def pixel_inputs(self, images: ImageList, batched_inputs, with_templates: bool = True):
        """
        The batch's images, and templates, in their input pixel values (0..255, not normalised;
        TR-Pre too: the image itself, not the difference the backbone sees), padded like ``images``.

        Returns:
            (images (N, C, H, W) float, templates (N, C, H, W) float or None, validity (N,) bool or
            None): templates only if ``with_templates`` and some input has one; an input without
            one gets its own image there, flagged invalid.
        """
        def pad(tensors):
            return self._pad([self._move_to_current_device(t).float() for t in tensors]).tensor

        pixels = pad([x["image"] for x in batched_inputs])
        if pixels.shape[-2:] != images.tensor.shape[-2:]:
            raise ValueError(f"padded images {tuple(pixels.shape)} != network input {tuple(images.tensor.shape)}")
        if not with_templates or all(x.get("template") is None for x in batched_inputs):
            return pixels, None, None
        valid = torch.tensor([x.get("template") is not None for x in batched_inputs], device=pixels.device)
        templates = pad([x["template"] if x.get("template") is not None else x["image"] for x in batched_inputs])
        if templates.shape != pixels.shape:  # templates match their images, so only padding could differ
            raise ValueError(f"templates batch {tuple(templates.shape)} != images batch {tuple(pixels.shape)}")
        return pixels, templates, valid

    def _with_pixel_inputs(self, features: Dict[str, torch.Tensor], images: ImageList, batched_inputs):
        """``features`` plus :meth:`pixel_inputs` under the keys the ROI heads hand to a mask head that
        reads images (module doc); ``features`` itself if the mask head does not read them."""
        head = getattr(self.roi_heads, "mask_head", None) if getattr(self.roi_heads, "mask_on", False) else None
        if head is None or not getattr(head, "needs_images", False):
            return features
        pixels, templates, valid = self.pixel_inputs(images, batched_inputs, getattr(head, "needs_templates", False))
        features = dict(features)
        features[PIXELS_KEY] = pixels
        if templates is not None:
            features[TEMPLATE_PIXELS_KEY], features[TEMPLATE_PIXELS_VALID_KEY] = templates, valid
        return features

    # ------------------------------------------------------------------ PTG
    def ptg_loss(self, batched_inputs) -> torch.Tensor:
        """Reconstruction loss of the generators on the normal images of the batch (0 if none)."""
        normals = [x["image"] for x in batched_inputs if x.get("is_normal", False)]
        normals += [x["normal_image"] for x in batched_inputs if "normal_image" in x]
        if not normals:  # keeps every generator parameter in the graph (DDP)
            return sum(p.sum() for p in self.ptg.parameters()) * 0.0
        images = self._normalize(normals)
        grad = torch.enable_grad() if not self.ptg_detach_features else torch.no_grad()
        with self.plain_bottom_up(), grad:
            features = self.backbone.bottom_up(images.tensor)
        return self.ptg.reconstruction_loss(features, detach=self.ptg_detach_features)

    # ------------------------------------------------------------------ forward
    def forward(self, batched_inputs: List[Dict[str, torch.Tensor]]):
        """Training: dict of losses (+ ``loss_ptg`` in PTG mode); inference: see :meth:`inference`."""
        if not self.training:
            return self.inference(batched_inputs)
        images = self.preprocess_image(batched_inputs)
        gt_instances = None
        if "instances" in batched_inputs[0]:
            gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        features = self.extract_features(images, batched_inputs)
        if self.proposal_generator is not None:
            proposals, proposal_losses = self.proposal_generator(images, features, gt_instances)
        else:
            proposals = [x["proposals"].to(self.device) for x in batched_inputs]
            proposal_losses = {}
        _, detector_losses = self.roi_heads(images, self._with_pixel_inputs(features, images, batched_inputs),
                                            proposals, gt_instances)
        if self.vis_period > 0 and get_event_storage().iter % self.vis_period == 0:
            self.visualize_training(batched_inputs, proposals)
        losses = dict(detector_losses)
        losses.update(proposal_losses)
        if self.ptg is not None:
            losses["loss_ptg"] = self.ptg_loss_weight * self.ptg_loss(batched_inputs)
        return losses

    def inference(
        self,
        batched_inputs: List[Dict[str, torch.Tensor]],
        detected_instances: Optional[List[Instances]] = None,
        do_postprocess: bool = True,
    ):
        """Same contract as ``GeneralizedRCNN.inference``."""
        assert not self.training
        images = self.preprocess_image(batched_inputs)
        if self.template_post:
            features = self._features_for_post(images, batched_inputs)
        else:
            features = self.extract_features(images, batched_inputs)
        if detected_instances is None:
            if self.proposal_generator is not None:
                proposals, _ = self.proposal_generator(images, features, None)
            else:
                proposals = [x["proposals"].to(self.device) for x in batched_inputs]
            results, _ = self.roi_heads(images, self._with_pixel_inputs(features, images, batched_inputs),
                                        proposals, None)
        else:
            detected_instances = [x.to(self.device) for x in detected_instances]
            results = self.roi_heads.forward_with_given_boxes(
                self._with_pixel_inputs(features, images, batched_inputs), detected_instances)
        if do_postprocess:
            return GeneralizedRCNN._postprocess(results, batched_inputs, images.image_sizes)
        return results
