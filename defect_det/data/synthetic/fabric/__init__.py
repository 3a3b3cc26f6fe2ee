"""Synthetic Tianchi-fabric (2019 Guangdong, round 2) generator.

Writes procedurally generated fabric images in *exactly* the on-disk layout of the real round-2
release, so the converter (:func:`defect_det.data.tianchi_convert.convert_fabric`), the loaders and
the trainers are exercised end to end without downloading anything::

    <out>/
      seen/                                   # texture families used for training (+ its test split)
        defect/<stem>/<stem>.jpg              # defect image, HxWx3 uint8 BGR JPEG
        defect/<stem>/template_<prefix>.jpg   # its template, prefix = stem.split('_')[0]
        normal/<stem>/<stem>.jpg              # defect-free image
        normal/<stem>/template_<prefix>.jpg
        Annotations/anno_train.json           # [{"name": "<stem>.jpg", "defect_name": <Chinese>,
                                              #   "bbox": [xmin, ymin, xmax, ymax],
                                              #   "segmentation": {"size": [H, W], "counts": <str>}},
                                              #  ...] one per box; "segmentation" is an extra key of
                                              #  the synthetic data (the real release has no masks)
      unseen_texture/                         # same layout, only the held-out texture families
      meta.json                               # generator version, config, per-image records

Model of the data
-----------------
* A *piece* is one texture instance (one family, with randomised colours, thread scale/period,
  rotation, yarn irregularity and noise), rendered once on a canvas a little larger than the image.
  Its template is the centre crop; its 1..3 defect (or normal) images are crops of the same canvas
  translated by ``(dx, dy)`` (uniform in ``[-max_shift, max_shift]`` per axis, sub-pixel by default)
  and rotated by up to ``max_rotation`` degrees, each with its own defects, illumination change and
  sensor noise. All images of a piece share the 16-hex-digit prefix ``<prefix>_<k>``. ``meta.json``
  records ``shift_dx``, ``shift_dy`` (``cv2.phaseCorrelate(template, image)`` measures about these)
  and ``rotation``; :func:`misalign_template` applies them to a template.
* Defects are painted on the aligned clean crop (float32 BGR in [0, 1]); each box is the tight
  bounding box of the pixels the defect visibly changed (difference > 25 % of the defect's own peak
  change), so boxes are tight, inside the image and non-degenerate. Those pixels are also the
  defect's exact mask, written as COCO compressed RLE (``pycocotools.mask.encode`` of the HxW uint8
  mask, ``counts`` as str): the mask's tight box is exactly ``bbox``. A mask is the set of pixels the
  defect changed when it was painted; a later defect of the same image may paint over part of it
  (boxes overlap by IoU <= 0.3), and the earlier mask is left as it was.
* Determinism: every random number comes from ``numpy.random.default_rng(SeedSequence([seed,
  release, kind, piece, ...]))``; the per-release plan (family, image count and primary defect type of
  every piece) comes from a release-level stream. Output bytes depend only on the config.

Texture families (:data:`TEXTURE_FAMILIES`): plain weave, twill, satin, herringbone, denim, knit,
yarn-dyed stripes, plaid, floral print, geometric print. Defect types (:data:`DEFECT_TYPES`, type ->
Chinese class of :data:`~defect_det.data.datasets.tianchi_categories.FABRIC_CATEGORIES`): 14 of the 15
fabric classes (all but 其他 "others"); ``misprinting`` and ``broken_figures`` need a printed family.

Public API: :class:`SyntheticFabricConfig`, :func:`generate_fabric_dataset`, :func:`make_preview`,
:func:`format_summary`, :func:`misalign_template`, :data:`TEXTURE_FAMILIES`, :data:`PRINTED_FAMILIES`,
:data:`DEFECT_TYPES`.
Only numpy, OpenCV and pycocotools (the RLE encoding) are needed.

Modules (this package re-exports the public API):

* :mod:`.config` -- texture families, defect types, releases, :class:`SyntheticFabricConfig`.
* :mod:`.textures` -- the procedural texture families.
* :mod:`.defects` -- the 14 defect painters, the box / mask of a painted defect.
* :mod:`.capture` -- template misalignment and the photometry of each capture.
* :mod:`.generate` -- per-release planning, rendering of one piece, writing the dataset.
* :mod:`.preview` -- contact sheet of a generated set.
"""

from .capture import misalign_template
from .config import (
    DEFECT_TYPES,
    GENERATOR_NAME,
    GENERATOR_VERSION,
    PRINT_ONLY_DEFECTS,
    PRINTED_FAMILIES,
    RELEASES,
    TEXTURE_FAMILIES,
    SyntheticFabricConfig,
)
from .defects import _diff_region  # noqa: F401  (tests check the box / mask measurement directly)
from .generate import format_summary, generate_fabric_dataset
from .preview import make_preview

__all__ = [
    "DEFECT_TYPES",
    "GENERATOR_NAME",
    "GENERATOR_VERSION",
    "PRINTED_FAMILIES",
    "PRINT_ONLY_DEFECTS",
    "RELEASES",
    "TEXTURE_FAMILIES",
    "SyntheticFabricConfig",
    "format_summary",
    "generate_fabric_dataset",
    "make_preview",
    "misalign_template",
]
