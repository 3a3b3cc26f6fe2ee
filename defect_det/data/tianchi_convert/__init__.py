"""Convert the Tianchi defect releases (fabric 2019 round 2, aluminum 2018 round 2) to COCO JSON.

Pure Python (standard library + PIL to decode the images); no torch / Detectron2 code here. The
command-line front end is ``tools/convert_tianchi.py`` (its parser and ``main``: :mod:`.cli`); the
output is read by :func:`defect_det.data.datasets.load_tianchi_json`.

Public API:

- :func:`convert_fabric` (``defect/<stem>/<stem>.jpg`` + ``template_<prefix>.jpg``, ``normal/...``,
  ``Annotations/*.json`` lists of ``{"name", "defect_name", "bbox": [x0, y0, x1, y1]}``, optionally
  with a ``"segmentation"`` mask, see below),
- :func:`convert_aluminum` (images with a LabelMe ``X.json`` beside each ``X.jpg``; images without
  one are normal only inside a normal folder such as ``无瑕疵样本``),
- :class:`TianchiFormatError` (bad input; names the file, the entry index and its name),
- :func:`format_report` (the human-readable form of the report dict both converters return).

Output (``out_dir/<prefix>_train.json`` + ``<prefix>_test.json`` [+ ``<prefix>_val.json`` with
``val_size``, carved from the training part], or ``<prefix>.json`` without a split), one COCO file each:

- ``images``: ``id, file_name, height, width, is_normal`` (+ ``template_file_name`` for fabric);
  paths are relative to ``image_root`` (POSIX separators) so the dataset folder can move,
- ``annotations``: ``id, image_id, category_id, bbox`` (XYWH floats), ``area`` (w*h of the box, also
  when there is a mask), ``iscrowd`` 0, and ``segmentation`` when the input entry had a valid one,
- ``categories``: every class of the dataset in the paper's table order, ``{"id": i + 1, "name":
  english, "name_zh": chinese}``,
- ``info``: ``description, dataset, source_roots, annotation_files, split, seed, test_size, val_size,
  converter_version``.

Nothing is lost silently: every box read is either written or dropped for a counted reason
(``report["boxes_in"] == report["boxes_written"] + sum(report["boxes_dropped"].values())``), every
image found on disk is either written or dropped for a counted reason, and every geometric fix
(clipping) is counted. In strict mode (default) the first input problem raises
:class:`TianchiFormatError`; in lenient mode the offending entry/image is skipped and counted, with
the first few examples kept in ``report["examples"]``. Problems (strict: error; lenient: counted):
a bad entry (not an object, missing key, bbox not 4 finite numbers, unknown class, unknown image,
an image in normal/), a degenerate box (xmax <= xmin or ymax <= ymin) or one entirely outside its
image, an empty annotation list, a defect image without any annotation entry (or a LabelMe file
without shapes outside a normal folder), an image or template that does not decode in full
(missing, truncated, corrupt: every file is decoded with PIL, as training reads it), a template of
another size than its image, a missing template, a duplicate image name, an invalid mask. An
annotation file that cannot be read or whose top level is not a list is an error in both modes.

Outputs are all or nothing: they are written only after the whole input has been read, each to a
temporary file beside its target, and renamed over the targets only when all are written, so a
failure (bad input, full disk, an output path that is a directory) leaves the previous outputs as
they were and no temporary file. A ``<prefix>_val.json`` of an earlier run is removed when the new
split has no validation part (it would overlap the new training split).

Masks (fabric only; the real releases have none, the synthetic one has exact masks): an entry may
carry ``"segmentation"``, either COCO RLE ``{"size": [h, w], "counts": str | list[int]}`` with
``size`` equal to its image's (height, width) and counts that decode to exactly h*w pixels, or COCO
polygons ``[[x1, y1, x2, y2, ...], ...]`` (>= 6 numbers, an even count, per polygon). It is written
unchanged (RLE as ``{"size", "counts"}``, polygon coordinates as floats). ``null`` means no mask.
Masks are accounted like boxes: ``report["masks_in"] == report["masks_written"] +
sum(report["masks_dropped"].values())``. An invalid mask is a problem (strict: error naming file and
entry; lenient: the mask is dropped and counted, its box kept); a mask without foreground pixels (or
polygons of zero area) is dropped and counted, its box kept; a dropped box takes its mask with it; a
clipped box keeps its mask unchanged (an RLE mask is image-sized already, polygons are cut at the
image border when rasterised) and is counted.

Modules (this package re-exports the public API): :mod:`.fabric` and :mod:`.aluminum` (the two
readers), :mod:`.segmentation` (mask validation), :mod:`.common` (input helpers both readers share),
:mod:`.writer` (geometry, split, all-or-nothing COCO output), :mod:`.report` (reasons, counting,
:class:`TianchiFormatError`, :func:`format_report`), :mod:`.cli` (the command line; not re-exported).
"""
from .aluminum import convert_aluminum
from .fabric import convert_fabric
from .report import CONVERTER_VERSION, TianchiFormatError, format_report

__all__ = ["CONVERTER_VERSION", "TianchiFormatError", "convert_aluminum", "convert_fabric", "format_report"]
