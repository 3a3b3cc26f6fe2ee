"""``PairedDatasetMapper``: Detectron2's ``DatasetMapper`` for an image and its template.

It reads the defect image I and its template T (``template_file_name`` of the dataset dict), and

1. optionally misaligns T (``INPUT.TEMPLATE.SHIFT_RANGE`` / ``MAX_ROTATION``; at test time only with
   ``SHIFT_AT_TEST``, then deterministically per image) to simulate the paper's "pixel gap";
2. optionally registers T back onto I (``INPUT.TEMPLATE.ALIGN``, phase correlation);
3. applies ONE draw of the geometric augmentations (``INPUT.DEFECT_CROP``'s crop at full resolution
   (:mod:`defect_det.data.defect_crop`), resize, flip, ...) to I and replays the
   returned transforms on T, so pixel (y, x) of both tensors shows the same fabric location;
4. optionally jitters brightness/contrast of I and T independently (``INPUT.TEMPLATE.PHOTOMETRIC``);
5. for PTG training, attaches a random defect-free image of the training set to each defect image
   (``normal_image``), augmented with its own draw (PTG learns from normal samples).

Output dict keys besides ``DatasetMapper``'s: ``template`` (3, H, W) uint8 tensor like ``image``
(absent when the image has no template and none is required) and ``normal_image`` (3, H', W').
Instance masks are handled by ``DatasetMapper``: with ``MODEL.MASK_ON`` the annotations'
``segmentation`` becomes ``instances.gt_masks`` (N masks of the augmented H x W image, in the order
of ``gt_boxes``), unless ``MODEL.ROI_MASK_HEAD.BOX_SUPERVISED`` (see :func:`mask_loading_args`).

Every read goes through :func:`defect_det.data.image_io.read_image`: a file that does not decode
raises :class:`~defect_det.data.image_io.UnreadableImageError` naming it.

Reusable from any Detectron2 project: ``PairedDatasetMapper(cfg, is_train)`` or the explicit
constructor arguments.
"""
import copy
import logging
import zlib

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from ..data.defect_crop import defect_crop_augmentation, gt_boxes_xyxy
from ..data.image_io import read_image
from ..data.template_ops import align_template, sample_misalignment, warp_template

__all__ = ["PairedDatasetMapper", "mask_loading_args", "template_usage"]

logger = logging.getLogger(__name__)

TEMPLATE_MODES = ("none", "pre", "inter", "ptg")


def template_usage(cfg, is_train):
    """
    What the model of ``cfg`` needs from the input pipeline.

    Returns:
        tuple(str, bool): (``"required"`` | ``"optional"`` | ``"unused"``, whether PTG normal
        images are needed). TR-Pre/TR-Inter need a template for every image; TR-Post uses one at
        inference where present (images without keep their scores), and so does the box-supervised
        mask head's template cue (training and refinement).
    """
    mode = cfg.MODEL.TEMPLATE.MODE
    if mode not in TEMPLATE_MODES:
        raise ValueError(f"MODEL.TEMPLATE.MODE must be one of {TEMPLATE_MODES}, got {mode!r}")
    if mode in ("pre", "inter"):
        usage = "required"
    elif (cfg.MODEL.TEMPLATE.POST and not is_train) or _mask_head_reads_templates(cfg, is_train):
        usage = "optional"
    else:
        usage = "unused"
    return usage, (mode == "ptg" and is_train)


def _mask_head_reads_templates(cfg, is_train) -> bool:
    """Whether BoxSupervisedMaskHead uses the image - template difference: in training for its
    pairwise and template-difference losses, at inference for the refinement (WEAK.USE_TEMPLATE); the
    template then loads where the image has one, in every TEMPLATE.MODE."""
    m = cfg.MODEL.ROI_MASK_HEAD
    if not (cfg.MODEL.MASK_ON and m.NAME == "BoxSupervisedMaskHead" and m.WEAK.USE_TEMPLATE):
        return False
    if is_train:
        return bool(m.BOX_SUPERVISED and (m.WEAK.PAIRWISE_WEIGHT > 0 or m.WEAK.TEMPLATE_WEIGHT > 0))
    return bool(m.REFINE.ENABLED)


def mask_loading_args(cfg):
    """
    ``DatasetMapper`` arguments that switch mask loading off for box-supervised mask training.

    Returns:
        dict: ``{}`` when masks are loaded as Detectron2 does (``MODEL.MASK_ON`` and not
        ``MODEL.ROI_MASK_HEAD.BOX_SUPERVISED``, or no mask head at all), else
        ``{"use_instance_mask": False, "recompute_boxes": False}``: ``segmentation`` is dropped from
        every annotation before the instances are built, so ``instances`` has no ``gt_masks`` (and
        boxes are not recomputed from masks after a crop).
    """
    if cfg.MODEL.MASK_ON and cfg.MODEL.ROI_MASK_HEAD.BOX_SUPERVISED:
        return {"use_instance_mask": False, "recompute_boxes": False}
    return {}


def _photometric(image, rng, strength):
    """Brightness and contrast factors uniform in 1 +- strength, about the image mean."""
    if strength <= 0:
        return image
    b, c = rng.uniform(1 - strength, 1 + strength, size=2)
    x = image.astype(np.float32)
    m = x.mean()
    return np.clip((x - m) * c + m * b, 0, 255).astype(image.dtype)


def _to_tensor(image):
    return torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))


class PairedDatasetMapper(DatasetMapper):
    """``DatasetMapper`` that also maps the template (and PTG normal images); see module doc."""

    @configurable
    def __init__(
        self,
        is_train: bool,
        *,
        template_usage: str = "optional",
        shift_range=(0.0, 0.0),
        max_rotation: float = 0.0,
        shift_at_test: bool = False,
        align: bool = False,
        photometric: float = 0.0,
        normal_pool=None,
        **kwargs,
    ):
        """
        Args (besides ``DatasetMapper``'s):
            template_usage: "required" (error if an image has no template), "optional" (load when
                present) or "unused" (never read templates).
            shift_range: (min, max) px of the random template translation; (0, 0) = none.
            max_rotation: degrees of the random template rotation.
            shift_at_test: misalign at test time too (seeded by the file name: reproducible).
            align: register the template onto the image (after any misalignment).
            photometric: independent brightness/contrast jitter strength for image and template.
            normal_pool (list[str] or None): defect-free image files; if given (PTG training), each
                image that is not itself normal gets ``normal_image`` drawn from it.
        """
        super().__init__(is_train, **kwargs)
        if template_usage not in ("required", "optional", "unused"):
            raise ValueError(f"template_usage must be required|optional|unused, got {template_usage!r}")
        sample_misalignment(np.random.default_rng(0), shift_range, max_rotation)  # validates
        self.template_usage = template_usage
        self.shift_range = tuple(float(s) for s in shift_range)
        self.max_rotation = float(max_rotation)
        self.shift_at_test = shift_at_test
        self.align = align
        self.photometric = float(photometric)
        self.normal_pool = list(normal_pool) if normal_pool else []

    @classmethod
    def from_config(cls, cfg, is_train: bool = True, normal_pool=None):
        ret = super().from_config(cfg, is_train)
        usage, _ = template_usage(cfg, is_train)
        t = cfg.INPUT.TEMPLATE
        ret.update(
            template_usage=usage,
            shift_range=tuple(t.SHIFT_RANGE),
            max_rotation=t.MAX_ROTATION,
            shift_at_test=t.SHIFT_AT_TEST,
            align=t.ALIGN,
            photometric=t.PHOTOMETRIC,
            normal_pool=normal_pool,
        )
        crop = defect_crop_augmentation(cfg, is_train)
        if crop is not None:  # at full resolution, before the resize; masks: boxes recomputed after the crop
            ret["augmentations"].insert(0, crop)
            ret["recompute_boxes"] = cfg.MODEL.MASK_ON
        ret.update(mask_loading_args(cfg))
        return ret

    # ------------------------------------------------------------------ template
    def _misalign(self, dataset_dict, template):
        if self.shift_range[1] <= 0 and self.max_rotation <= 0:
            return template
        if self.is_train:
            rng = np.random  # seeded per dataloader worker by Detectron2
        elif self.shift_at_test:
            rng = np.random.default_rng(zlib.crc32(dataset_dict["file_name"].encode("utf-8")))
        else:
            return template
        dx, dy, angle = sample_misalignment(rng, self.shift_range, self.max_rotation)
        return warp_template(template, dx, dy, angle)

    def _read_template(self, dataset_dict, image):
        """The template file of ``dataset_dict`` (HWC array), None when the model does not use it or it has none."""
        if self.template_usage == "unused":
            return None
        path = dataset_dict.get("template_file_name")
        if not path:
            return None
        return read_image(path, format=self.image_format, what=f"template (of {dataset_dict['file_name']})")

    def _prepare_template(self, dataset_dict, image, template, name, missing):
        """Check ``template`` (HWC array or None) against ``image``, misalign (augmentation) and align it;
        ``missing``: what to say when a required template is None."""
        if self.template_usage == "unused":
            return None
        if template is None:
            if self.template_usage == "required":
                raise ValueError(
                    f"{dataset_dict.get('file_name', '<an image>')}: {missing}, but "
                    "MODEL.TEMPLATE.MODE needs a template for every image (pre / inter)"
                )
            return None
        if template.shape != image.shape:  # checked for the whole dataset at loader construction (build.py)
            raise ValueError(
                f"template {name} has shape {template.shape} but its image "
                f"{dataset_dict.get('file_name', '<an image>')} has {image.shape}: templates must match their image"
            )
        template = self._misalign(dataset_dict, template)
        if self.align:
            template, _ = align_template(image, template)
        return template

    def _read_normal(self):
        path = self.normal_pool[np.random.randint(len(self.normal_pool))]
        normal = read_image(path, format=self.image_format, what="defect-free image (PTG)")
        aug_input = T.AugInput(normal)
        self.augmentations(aug_input)  # its own random draw
        return _to_tensor(aug_input.image)

    # ------------------------------------------------------------------ main
    def __call__(self, dataset_dict):
        """
        Args:
            dataset_dict (dict): a Detectron2 dataset dict (``file_name``, optional
                ``template_file_name``, ``is_normal``, ``annotations``).
        Returns:
            dict: ``DatasetMapper``'s output plus ``template`` / ``normal_image`` (see module doc).
        """
        dataset_dict = copy.deepcopy(dataset_dict)
        image = read_image(dataset_dict["file_name"], format=self.image_format)
        utils.check_image_size(dataset_dict, image)
        template = self._read_template(dataset_dict, image)
        return self.map_images(dataset_dict, image, template, dataset_dict.get("template_file_name"),
                               missing="no 'template_file_name' in its dataset dict")

    def map_images(self, dataset_dict, image, template=None, template_name="the template",
                   missing="no template given"):
        """
        What ``__call__`` does after reading the files: ``image`` and ``template`` (H, W, C arrays in
        ``INPUT.FORMAT``; the template may be None) become the model input of ``dataset_dict`` (modified in
        place). Used by :class:`~defect_det.inference.DefectPredictor` on arrays.
        """
        template = self._prepare_template(dataset_dict, image, template, template_name, missing)
        # the ground-truth boxes go with the image so that INPUT.DEFECT_CROP can place its crop on a defect
        aug_input = T.AugInput(image, boxes=gt_boxes_xyxy(dataset_dict) if self.is_train else None)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        if template is not None:
            template = transforms.apply_image(template)
            if template.shape[:2] != image.shape[:2]:  # a transform that is not replayable
                raise RuntimeError(f"augmentations {transforms} did not map the template like the image")

        if self.is_train and self.photometric > 0:
            image = _photometric(image, np.random, self.photometric)
            if template is not None:
                template = _photometric(template, np.random, self.photometric)
        image_shape = image.shape[:2]
        dataset_dict["image"] = _to_tensor(image)
        if template is not None:
            dataset_dict["template"] = _to_tensor(template)
        if self.is_train and self.normal_pool and not dataset_dict.get("is_normal", False):
            dataset_dict["normal_image"] = self._read_normal()

        if self.proposal_topk is not None:
            utils.transform_proposals(dataset_dict, image_shape, transforms, proposal_topk=self.proposal_topk)
        if not self.is_train:
            dataset_dict.pop("annotations", None)
            return dataset_dict
        if "annotations" in dataset_dict:
            self._transform_annotations(dataset_dict, transforms, image_shape)
        return dataset_dict
