"""``DefectPredictor``: a trained model on new images (issue 15), like Detectron2's ``DefaultPredictor``.

Works for every meta-architecture of defect_det: Detectron2's ``GeneralizedRCNN`` (with our heads),
``TemplateRCNN`` (every template mode, TR-Post included) and ``SegDecNet``. An image (and, for a template
model, its template) goes through exactly what the evaluation path does to a test image — the mapper that
:func:`~defect_det.data.build_defect_mapper` builds for the config at test time (the same test-time
resize for image and template, template alignment with ``INPUT.TEMPLATE.ALIGN``) — and the outputs are in
the original image's coordinates:

- R-CNNs: ``{"instances": Instances}`` with ``pred_boxes``, ``scores``, ``pred_classes`` (and
  ``pred_masks`` when the model has a mask head), as Detectron2's models return them;
- SegDecNet: ``{"sem_seg": (1, H, W) defect probability, "score": () image-level defect probability}``.

Inputs are file paths (read with the config's ``INPUT.FORMAT``; an unreadable file is an error naming it)
or arrays ``(H, W, C)`` uint8 in **BGR** order, as ``cv2.imread`` returns them and as Detectron2's
``DefaultPredictor`` takes them (grayscale ``(H, W)`` for grayscale models). One call may take a list of
images (one batched forward).
"""
import os
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from ..data.build import build_defect_mapper, needs_paired_mapper
from ..data.image_io import read_image

__all__ = ["DefectPredictor", "ImageLike"]

ImageLike = Union[str, np.ndarray]


def _as_format(image: ImageLike, fmt: str, what: str) -> np.ndarray:
    """A path or a BGR / grayscale array -> (H, W, C) array in ``fmt`` (Detectron2's INPUT.FORMAT)."""
    if isinstance(image, (str, os.PathLike)):
        return read_image(str(image), format=fmt, what=what)
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{what}: expected a file path or a numpy array, got {type(image).__name__}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(f"{what}: expected an (H, W), (H, W, 1) or (H, W, 3) array, got shape {image.shape}")
    if fmt == "L":
        if image.shape[2] == 3:  # BGR -> luma, as PIL's "L"
            image = (image[..., 2] * 0.299 + image[..., 1] * 0.587 + image[..., 0] * 0.114)[..., None]
        return np.ascontiguousarray(image.astype(np.uint8))
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    if fmt == "RGB":
        image = image[:, :, ::-1]
    return np.ascontiguousarray(image)


class DefectPredictor:
    """
    Build the model of ``cfg``, load ``cfg.MODEL.WEIGHTS``, and run it on images (module doc)::

        predictor = DefectPredictor(cfg)
        out = predictor("img.jpg", "template_img.jpg")          # one image (+ template)
        outs = predictor(["a.jpg", "b.jpg"], ["ta.jpg", "tb.jpg"])  # a batch: list of outputs
    """

    def __init__(self, cfg):
        self.cfg = cfg.clone()
        self.model = build_model(self.cfg)
        self.model.eval()
        if cfg.MODEL.WEIGHTS:
            DetectionCheckpointer(self.model).load(cfg.MODEL.WEIGHTS)
        self.input_format = cfg.INPUT.FORMAT
        self.mapper = build_defect_mapper(self.cfg, False, [])
        self.meta_architecture = cfg.MODEL.META_ARCHITECTURE
        self.uses_templates = needs_paired_mapper(cfg) and getattr(self.mapper, "template_usage", "unused") != "unused"

    def _input(self, image: ImageLike, template: Optional[ImageLike], index: int) -> Dict:
        name = str(image) if isinstance(image, (str, os.PathLike)) else f"image {index} (array)"
        pixels = _as_format(image, self.input_format, f"image {name}")
        d = {"file_name": name, "image_id": index, "height": pixels.shape[0], "width": pixels.shape[1]}
        if self.meta_architecture == "SegDecNet":
            return self.mapper.map_image(d, pixels)
        if needs_paired_mapper(self.cfg):
            tmpl, tname = None, None
            if template is not None and self.uses_templates:
                tname = str(template) if isinstance(template, (str, os.PathLike)) else f"template {index} (array)"
                tmpl = _as_format(template, self.input_format, f"template {tname} (of {name})")
            return self.mapper.map_images(d, pixels, tmpl, tname)
        # Detectron2's DatasetMapper at test time: its augmentations (the test-time resize), CHW tensor
        aug = self.mapper.augmentations
        from detectron2.data import transforms as T

        aug_input = T.AugInput(pixels)
        aug(aug_input)
        d["image"] = torch.as_tensor(np.ascontiguousarray(aug_input.image.transpose(2, 0, 1)))
        return d

    def inputs(self, images: Union[ImageLike, Sequence[ImageLike]],
               templates: Union[None, ImageLike, Sequence[Optional[ImageLike]]] = None) -> List[Dict]:
        """The model's input dicts for ``images`` (and ``templates``), as :meth:`__call__` builds them (e.g.
        the sample of ``tools/export_model.py --sample-image``)."""
        single = isinstance(images, (str, os.PathLike, np.ndarray))
        image_list: List[ImageLike] = [images] if single else list(images)
        if not image_list:
            raise ValueError("DefectPredictor: no image given")
        if templates is None:
            template_list: List[Optional[ImageLike]] = [None] * len(image_list)
        else:
            template_list = [templates] if single else list(templates)
            if len(template_list) != len(image_list):
                raise ValueError(f"DefectPredictor: {len(image_list)} images but {len(template_list)} templates")
        return [self._input(im, t, i) for i, (im, t) in enumerate(zip(image_list, template_list))]

    @torch.no_grad()
    def __call__(self, images: Union[ImageLike, Sequence[ImageLike]],
                 templates: Union[None, ImageLike, Sequence[Optional[ImageLike]]] = None):
        """
        Args:
            images: one image (path or array) or a list of them.
            templates: for template models, one template per image (path, array or None for an image
                without one: allowed for TR-Post / PTG, an error for TR-Pre / TR-Inter); ignored otherwise.
        Returns:
            one output dict (module doc) for one image, a list of them for a list.
        """
        single = isinstance(images, (str, os.PathLike, np.ndarray))
        outputs = self.model(self.inputs(images, templates))
        return outputs[0] if single else outputs
