"""Convert the Tianchi defect releases (fabric 2019 round 2, aluminum 2018 round 2) to COCO JSON.

Pure Python (standard library + PIL to decode the images); no torch / Detectron2 code here. The
command-line front end is ``tools/convert_tianchi.py``; the output is read by
:func:`defect_det.data.datasets.load_tianchi_json`.

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
"""
import json
import math
import os
import random
from collections import OrderedDict

from .datasets.tianchi_categories import DATASET_CATEGORIES, name_to_category_id
from .image_io import check_decodes

__all__ = ["TianchiFormatError", "convert_fabric", "convert_aluminum", "format_report"]

CONVERTER_VERSION = "1.1"  # 1.1: optional "segmentation" masks
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
MAX_EXAMPLES = 5

# reason -> human-readable line of the report. Box reasons drop one annotation box each; image
# reasons drop one image; file reasons skip an annotation file; notes change nothing or fix geometry.
# Strict mode (the default) stops at the first problem: every box reason but image_dropped and
# duplicate, every image and file reason, defect_image_without_annotations and bad_mask; lenient
# mode counts them. FATAL_REASONS stop both modes. The other reasons are only counted.
BOX_REASONS = OrderedDict([
    ("not_an_object", "annotation entries that are not JSON objects"),
    ("missing_key", "annotation entries missing a required key"),
    ("bad_bbox", "annotation entries with a bbox that is not 4 finite numbers"),
    ("bad_points", "LabelMe shapes with < 2 points or non-numeric points"),
    ("unknown_class", "annotation entries with an unknown class name"),
    ("image_not_found", "annotation entries naming an image not found on disk"),
    ("annotation_on_normal_image", "annotation entries naming an image in a normal/ folder"),
    ("image_dropped", "boxes of images dropped for an image problem (see image reasons)"),
    ("degenerate", "degenerate boxes dropped (x2 <= x1 or y2 <= y1: zero or negative width/height)"),
    ("outside_image", "boxes dropped as entirely outside the image"),
    ("duplicate", "exact duplicate boxes dropped (same image, class and coordinates)"),
])
IMAGE_REASONS = OrderedDict([
    ("duplicate_image_name", "images dropped: same file name found twice (kept the first)"),
    ("missing_template", "images dropped: template_<prefix> image missing"),
    ("unreadable_image", "images dropped: image or template does not decode (missing, truncated, corrupt)"),
    ("template_size_mismatch", "images dropped: template size differs from the image"),
    ("missing_annotation", "images dropped: no LabelMe JSON and not in a normal folder"),
    ("bad_annotation_file", "images dropped: LabelMe JSON malformed / not a LabelMe object"),
])
FILE_REASONS = OrderedDict([
    ("annotation_file_empty", "annotation files holding an empty list (no box for any image)"),
])
# an annotation file that cannot be read would leave every image it labels without boxes: an error
# in both modes
FATAL_REASONS = OrderedDict([
    ("annotation_file_malformed", "annotation file unreadable or malformed JSON"),
    ("annotation_file_not_list", "annotation file whose top level is not a list"),
])
NOTE_REASONS = OrderedDict([
    ("clipped", "boxes clipped to the image (kept)"),
    ("mask_of_clipped_box", "masks of clipped boxes (kept unchanged)"),
    ("defect_image_without_annotations", "defect images without any annotation entry (kept, no boxes)"),
    ("defect_image_all_boxes_dropped", "defect images whose boxes were all dropped (kept, no boxes)"),
    ("annotated_image_in_normal_folder", "images in a normal folder with LabelMe shapes (kept as defect)"),
    ("labelme_size_mismatch", "LabelMe imageWidth/imageHeight differ from the image (image size used)"),
    ("unrelated_json_ignored", "JSON files without an image beside them that are not LabelMe (ignored)"),
])
# mask reasons drop one mask each (never its box)
MASK_REASONS = OrderedDict([
    ("bad_mask", "masks dropped as invalid (box kept): not RLE / polygons, wrong size, bad counts"),
    ("empty_mask", "masks dropped: no foreground pixel / zero-area polygons (box kept)"),
    ("mask_of_dropped_box", "masks dropped with their box (see box reasons)"),
])
ALL_REASONS = OrderedDict(
    list(BOX_REASONS.items()) + list(IMAGE_REASONS.items()) + list(FILE_REASONS.items())
    + list(MASK_REASONS.items()) + list(NOTE_REASONS.items())
)


class TianchiFormatError(ValueError):
    """
    Bad Tianchi input. ``str(e)`` is ``"<file>: entry <i> (<name>): <problem>"`` (the entry part only
    when the problem is one entry of a file). Attributes: ``file``, ``entry``, ``name``, ``problem``,
    ``reason`` (the report key it is counted under in lenient mode).
    """

    def __init__(self, file, problem, entry=None, name=None, reason=None):
        self.file, self.problem, self.entry, self.name, self.reason = file, problem, entry, name, reason
        super().__init__(_describe(file, problem, entry, name))


def _where(file, entry=None, name=None):
    where = str(file)
    if entry is not None:
        where += f": entry {entry}"
    if name is not None:
        where += f" ({name})"
    return where


def _describe(file, problem, entry=None, name=None):
    return f"{_where(file, entry, name)}: {problem}"


class _Log:
    """Counts reasons; raises on problems in strict mode."""

    def __init__(self, strict):
        self.strict = strict
        self.counts = OrderedDict()
        self.examples = OrderedDict()

    def count(self, reason, message=None, n=1):
        assert reason in ALL_REASONS, reason
        self.counts[reason] = self.counts.get(reason, 0) + n
        if message is not None:
            ex = self.examples.setdefault(reason, [])
            if len(ex) < MAX_EXAMPLES:
                ex.append(message)

    def problem(self, reason, file, problem, entry=None, name=None):
        """Bad input: raise (strict) or count under ``reason`` and carry on (lenient)."""
        if self.strict:
            raise TianchiFormatError(file, problem, entry, name, reason)
        self.count(reason, _describe(file, problem, entry, name))


# ----------------------------------------------------------------------------------------------
# small helpers


def _try_size(path, log, what="image", cache=None):
    """(width, height) of ``path`` after decoding it fully (a truncated / corrupt file is a problem,
    counted under ``unreadable_image``); ``cache`` (dict) remembers results of shared templates."""
    if cache is not None and path in cache:
        size, error = cache[path]
    else:
        try:
            size, error = check_decodes(path), None
        except Exception as e:  # noqa: BLE001  (PIL raises many kinds)
            size, error = None, f"{type(e).__name__}: {e}"
        if cache is not None:
            cache[path] = (size, error)
    if error is not None:
        log.problem("unreadable_image", path, f"unreadable {what}, it does not decode ({error}); replace the "
                    "file, or --lenient drops the image")
    return size


def _is_image(fname):
    return os.path.splitext(fname)[1].lower() in IMAGE_EXTENSIONS


def _walk_files(top, skip=()):
    """All files under ``top``, sorted, skipping directories in ``skip`` (absolute paths)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = sorted(d for d in dirnames if os.path.abspath(os.path.join(dirpath, d)) not in skip)
        out.extend(os.path.join(dirpath, f) for f in filenames)
    return sorted(out)


def _number(v):
    """float(v) for a finite int/float (not bool), else None."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _int(v):
    """v for an int (not bool), else None."""
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _rle_string_counts(s):
    """
    Run lengths of a COCO compressed RLE ``counts`` string, or None if it is not one. Format: each
    count is written in 5-bit groups, least significant first, as characters ``chr(48 + group)``
    with 0x20 set on every group but the last and 0x10 of the last group the sign; from the 4th count
    on, the value stored is the difference to the count two places before.
    """
    counts, p, n = [], 0, len(s)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            if p >= n:
                return None  # the last count is cut off
            c = ord(s[p]) - 48
            if not 0 <= c < 64:
                return None
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def _check_segmentation(segm, width, height):
    """
    Validate a COCO ``segmentation`` of an image of ``height`` x ``width`` pixels (pure Python).

    Returns:
        (mask, problem, area): ``(segm to write, None, foreground pixels or polygon area)`` if
        valid, ``(None, "<what is wrong>", 0)`` if not.
    """
    if isinstance(segm, dict):
        if set(segm) != {"size", "counts"}:
            return None, f"segmentation RLE must have exactly the keys 'size' and 'counts', got {sorted(segm)}", 0
        size = segm["size"]
        if not isinstance(size, (list, tuple)) or len(size) != 2 or any(_int(v) is None for v in size):
            return None, f"segmentation RLE size must be [height, width] ints, got {size!r}", 0
        if list(size) != [height, width]:
            return None, (f"segmentation RLE size [h, w] = {list(size)} differs from the image size "
                          f"[{height}, {width}]"), 0
        counts = segm["counts"]
        if isinstance(counts, str):
            runs = _rle_string_counts(counts)
            if runs is None:
                return None, f"segmentation RLE counts {counts[:40]!r} is not a COCO compressed RLE string", 0
        elif isinstance(counts, list) and all(_int(v) is not None for v in counts):
            runs = counts
        else:
            return None, "segmentation RLE counts must be a compressed string or a list of ints", 0
        if any(v < 0 for v in runs) or sum(runs) != height * width:
            return None, (f"segmentation RLE counts decode to {sum(runs)} pixels with "
                          f"{sum(1 for v in runs if v < 0)} negative runs, expected {height * width} "
                          f"({height}x{width}) and none"), 0
        return {"size": [height, width], "counts": counts}, None, sum(runs[1::2])
    if isinstance(segm, list) and segm:
        out, area = [], 0.0
        for j, poly in enumerate(segm):
            xy = [_number(v) for v in poly] if isinstance(poly, list) else None
            if xy is None or len(xy) < 6 or len(xy) % 2 or None in xy:
                return None, (f"segmentation polygon {j} must be a list of >= 6 numbers (x1, y1, x2, y2, "
                              f"...; an even count), got {str(poly)[:80]}"), 0
            xs, ys = xy[0::2], xy[1::2]
            area += abs(sum(xs[k] * ys[k - 1] - xs[k - 1] * ys[k] for k in range(len(xs)))) / 2
            out.append(xy)
        return out, None, area
    return None, (f"segmentation must be an RLE dict {{'size', 'counts'}} or a non-empty list of polygons, "
                  f"got {str(segm)[:80]}"), 0


def _load_json(path):
    with open(path, "r", encoding="utf-8-sig") as f:
        return json.load(f)


def _category_lookup(dataset):
    table = name_to_category_id(dataset)

    def lookup(name):
        if not isinstance(name, str):
            return None
        name = name.strip()
        return table.get(name, table.get(name.lower()))

    return lookup


def _relpath(path, image_root):
    rel = os.path.relpath(os.path.abspath(path), image_root)
    if rel == os.pardir or rel.startswith(os.pardir + os.sep) or os.path.isabs(rel):
        raise TianchiFormatError(path, f"not under the image root {image_root} (set image_root)")
    return rel.replace(os.sep, "/")


def _prepare_roots(roots, image_root):
    if isinstance(roots, (str, os.PathLike)):
        roots = [roots]
    roots = sorted({os.path.abspath(os.fspath(r)) for r in roots})
    if not roots:
        raise ValueError("no dataset root given")
    for r in roots:
        if not os.path.isdir(r):
            raise TianchiFormatError(r, "dataset root is not a directory")
    image_root = os.path.abspath(os.fspath(image_root)) if image_root else os.path.commonpath(roots)
    return roots, image_root


# ----------------------------------------------------------------------------------------------
# geometry and output (shared)


def _finalize_boxes(img, log):
    """
    Dedupe, drop degenerate/outside boxes (problems: strict raises naming the annotation file and
    entry), clip the rest; returns the kept (cat, x0, y0, x1, y1, mask) with ``mask`` None or the
    validated ``segmentation`` (unchanged, also when clipped).
    """
    w, h = img["width"], img["height"]
    kept, seen = [], set()
    for cat, x0, y0, x1, y1, src, mask in img["raw_boxes"]:
        key = (cat, x0, y0, x1, y1)
        box = f"[{x0:g}, {y0:g}, {x1:g}, {y1:g}]"
        desc = f"{_where(*src)}: {box} in {w}x{h} image {img['path']}"
        reason = None
        if key in seen:
            reason = "duplicate"
        elif x1 <= x0 or y1 <= y0:
            reason = "degenerate"
            problem = (f"degenerate box {box} (xmax <= xmin or ymax <= ymin: the bbox must be [xmin, ymin, "
                       f"xmax, ymax] with a positive width and height) for image {img['path']}")
        elif x0 >= w or y0 >= h or x1 <= 0 or y1 <= 0:
            reason = "outside_image"
            problem = f"box {box} lies entirely outside its {w}x{h} (WxH) image {img['path']}"
        seen.add(key)
        if reason is not None:
            if reason == "duplicate":
                log.count(reason, desc)
            else:
                afile, entry, name = src
                log.problem(reason, afile, f"{problem}; --lenient drops the box", entry, name)
            if mask is not None:
                log.count("mask_of_dropped_box", f"{desc} ({reason})")
            continue
        c = (max(0.0, x0), max(0.0, y0), min(float(w), x1), min(float(h), y1))
        if c != (x0, y0, x1, y1):
            log.count("clipped", desc)
            if mask is not None:
                log.count("mask_of_clipped_box", desc)
        kept.append((cat,) + c + (mask,))
    return sorted(kept, key=lambda b: (b[1], b[2], b[3], b[4], b[0]))


def _dump_json(obj, f):
    json.dump(obj, f, ensure_ascii=False)


def _remove_quietly(path):
    try:
        os.remove(path)
    except OSError:
        pass


def _prepare_out_dir(out_dir, paths):
    """Create ``out_dir``; every output path must be a file or absent (errors name the path)."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise TianchiFormatError(out_dir, "the output directory (--out-dir) exists and is not a directory")
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise TianchiFormatError(out_dir, f"cannot create the output directory (--out-dir): {e.strerror or e}; "
                                 "choose a writable one") from None
    for path in paths:
        if os.path.isdir(path):
            raise TianchiFormatError(path, "an output file of the conversion is a directory here; remove it or "
                                     "choose another --out-dir / --prefix")


def _write_outputs(files, stale=()):
    """
    Write ``files`` [(path, obj)] all or nothing: every file goes to a temporary file beside its
    target first; only when all are written (and flushed to disk) are they renamed over the targets,
    and ``stale`` files (earlier outputs this conversion replaces by nothing) removed. A failure
    while writing removes the temporary files and leaves the previous outputs as they were; a failure
    while renaming (rare: the directory became unwritable) restores the files already replaced.
    """
    import tempfile

    temps = []
    try:
        for path, obj in files:
            d, name = os.path.split(path)
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=d)
            temps.append(tmp)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                _dump_json(obj, f)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
    except OSError as e:
        for tmp in temps:
            _remove_quietly(tmp)
        raise TianchiFormatError(path, f"cannot write the output ({e.strerror or e}); nothing was written, the "
                                 "previous outputs are unchanged") from None
    # keep the previous outputs (as backups) until every new one is in place
    backups, done = {}, []
    try:
        for path in [p for p, _ in files] + list(stale):
            if os.path.isfile(path):
                backup = f"{path}.{os.getpid()}.bak"
                os.replace(path, backup)
                backups[path] = backup
        for (path, _), tmp in zip(files, temps):
            os.replace(tmp, path)
            done.append(path)
    except OSError as e:
        for new in done:
            _remove_quietly(new)
        for old, backup in backups.items():
            try:
                os.replace(backup, old)
            except OSError:
                pass
        for tmp in temps:
            _remove_quietly(tmp)
        raise TianchiFormatError(path, f"cannot replace the output ({e.strerror or e}); the previous outputs "
                                 "were restored") from None
    for backup in backups.values():
        _remove_quietly(backup)
    return [p for p in stale if p in backups]


def _finish(dataset, images, log, report, *, roots, anno_files, out_dir, prefix, test_size, split,
            seed, image_root, verbose, val_size=0):
    """Geometry, ids, split, write; fills and returns ``report``."""
    categories = DATASET_CATEGORIES[dataset]
    for img in images:
        img["file_name"] = _relpath(img["path"], image_root)
        if img.get("template") is not None:
            img["template_file_name"] = _relpath(img["template"], image_root)
    images.sort(key=lambda im: im["file_name"])  # listing-order independent

    per_class = [0] * len(categories)
    for img in images:
        img["boxes"] = _finalize_boxes(img, log)
        for b in img["boxes"]:
            per_class[b[0] - 1] += 1
        if not img["is_normal"] and not img["boxes"]:
            if img["n_entries"]:
                log.count("defect_image_all_boxes_dropped", img["path"])
            elif img.get("annotation"):  # aluminum: a LabelMe file without shapes
                log.problem("defect_image_without_annotations", img["annotation"],
                            f"LabelMe file without shapes for image {img['path']}, which is not in a normal "
                            "folder: it would train as defect-free. Label it, move it to a normal folder "
                            "(无瑕疵样本), or --lenient keeps it without boxes")
            else:
                log.problem("defect_image_without_annotations", img["path"],
                            f"defect image without any annotation entry in {len(anno_files)} annotation "
                            "file(s): it would train as defect-free. Add its boxes (or pass the file that "
                            "has them with --anno), move it to normal/, or --lenient keeps it without boxes")

    n = len(images)
    if split:
        if not isinstance(test_size, int) or isinstance(test_size, bool) or test_size < 1:
            raise ValueError(f"test_size must be a positive integer, got {test_size!r}")
        if test_size >= n:
            raise ValueError(
                f"test_size {test_size} >= number of images {n}: nothing would be left for training "
                "(lower --test-size or use --no-split)"
            )
        if not isinstance(val_size, int) or isinstance(val_size, bool) or val_size < 0:
            raise ValueError(f"val_size must be a non-negative integer, got {val_size!r}")
        if test_size + val_size >= n:
            raise ValueError(
                f"test_size {test_size} + val_size {val_size} >= number of images {n}: nothing would "
                "be left for training (lower --test-size / --val-size)"
            )
        # the test split depends on (seed, test_size) only: adding a validation split never moves a
        # test image; validation images are carved from what would otherwise be training images
        test_idx = set(random.Random(seed).sample(range(n), test_size))
        rest = [i for i in range(n) if i not in test_idx]
        val_idx = set(random.Random(seed + 1).sample(rest, val_size)) if val_size else set()
        parts = OrderedDict([("train", [i for i in rest if i not in val_idx])])
        if val_size:
            parts["val"] = sorted(val_idx)
        parts["test"] = sorted(test_idx)
    else:
        if n == 0:
            raise ValueError("no images to write")
        parts = OrderedDict([("all", list(range(n)))])

    cats = [{"id": i + 1, "name": en, "name_zh": zh} for i, (en, zh) in enumerate(categories)]
    outputs, images_written, normal_written, boxes_split = OrderedDict(), OrderedDict(), OrderedDict(), OrderedDict()
    masks_split = OrderedDict()
    ann_id = 0
    coco_files = []
    for part, idxs in parts.items():
        coco_images, coco_anns = [], []
        for i in idxs:
            img = images[i]
            entry = {"id": i + 1, "file_name": img["file_name"], "height": img["height"],
                     "width": img["width"]}
            if "template_file_name" in img:
                entry["template_file_name"] = img["template_file_name"]
            entry["is_normal"] = bool(img["is_normal"])
            coco_images.append(entry)
            for cat, x0, y0, x1, y1, mask in img["boxes"]:
                ann_id += 1
                bw, bh = x1 - x0, y1 - y0
                ann = {"id": ann_id, "image_id": i + 1, "category_id": cat,
                       "bbox": [x0, y0, bw, bh], "area": bw * bh, "iscrowd": 0}
                if mask is not None:
                    ann["segmentation"] = mask
                coco_anns.append(ann)
        name = f"{prefix}_{part}.json" if split else f"{prefix}.json"
        path = os.path.join(out_dir, name)
        info = {
            "description": f"Tianchi {dataset} defect dataset, COCO export by defect_det",
            "dataset": dataset,
            "source_roots": roots,
            "annotation_files": anno_files,
            "split": part,
            "seed": seed if split else None,
            "test_size": test_size if split else None,
            "val_size": val_size if split else None,
            "converter_version": CONVERTER_VERSION,
        }
        coco_files.append((path, {"info": info, "images": coco_images, "annotations": coco_anns,
                                  "categories": cats}))
        outputs[part] = path
        images_written[part] = len(coco_images)
        normal_written[part] = sum(1 for e in coco_images if e["is_normal"])
        boxes_split[part] = len(coco_anns)
        masks_split[part] = sum(1 for a in coco_anns if "segmentation" in a)
    # a validation split of an earlier run that this one does not make would overlap the new training split
    stale = [os.path.join(out_dir, f"{prefix}_val.json")] if split and not val_size else []
    _prepare_out_dir(out_dir, [p for p, _ in coco_files])
    report["stale_outputs_removed"] = _write_outputs(coco_files, stale)

    boxes_dropped = OrderedDict((r, log.counts[r]) for r in BOX_REASONS if log.counts.get(r))
    masks_dropped = OrderedDict((r, log.counts[r]) for r in MASK_REASONS if log.counts.get(r))
    report.update({
        "boxes_written": sum(per_class),
        "boxes_per_class": OrderedDict((en, per_class[i]) for i, (en, _) in enumerate(categories)),
        "boxes_clipped": log.counts.get("clipped", 0),
        "boxes_dropped": boxes_dropped,
        "images_dropped": OrderedDict((r, log.counts[r]) for r in IMAGE_REASONS if log.counts.get(r)),
        "images_written": images_written,
        "normal_images_written": normal_written,
        "boxes_written_per_split": boxes_split,
        "masks_written": sum(masks_split.values()),
        "masks_dropped": masks_dropped,
        "masks_written_per_split": masks_split,
        "issues": OrderedDict((r, log.counts[r]) for r in ALL_REASONS if log.counts.get(r)),
        "examples": OrderedDict((r, list(log.examples[r])) for r in ALL_REASONS if r in log.examples),
        "outputs": outputs,
        "annotation_files": anno_files,
    })
    # the accounting identities this module promises
    assert report["boxes_in"] == report["boxes_written"] + sum(boxes_dropped.values()), report
    assert report["masks_in"] == report["masks_written"] + sum(masks_dropped.values()), report
    found = report["images_found"]["defect"] + report["images_found"]["normal"]
    assert found == n + sum(report["images_dropped"].values()), report
    if verbose:
        print(format_report(report))
    return report


def _new_report(dataset, strict, roots, image_root):
    return OrderedDict([
        ("dataset", dataset), ("mode", "strict" if strict else "lenient"), ("roots", roots),
        ("image_root", image_root), ("images_found", OrderedDict([("defect", 0), ("normal", 0)])),
        ("annotation_files", []), ("boxes_in", 0), ("masks_in", 0),
    ])


def format_report(report):
    """The report dict of :func:`convert_fabric` / :func:`convert_aluminum` as text, one reason a line."""
    r = report
    found = r["images_found"]
    lines = [
        f"tianchi {r['dataset']} ({r['mode']}): roots {', '.join(r['roots'])}",
        f"  images found: {found['defect'] + found['normal']} "
        f"(defect {found['defect']}, normal {found['normal']})",
        f"  annotation files read: {len(r['annotation_files'])}; boxes in: {r['boxes_in']}",
        f"  boxes written: {r['boxes_written']} = boxes in {r['boxes_in']} - dropped "
        f"{sum(r['boxes_dropped'].values())}",
        "  boxes per class: " + ", ".join(f"{k} {v}" for k, v in r["boxes_per_class"].items()),
        f"  masks in: {r['masks_in']}; annotations written with a mask: {r['masks_written']} of "
        f"{r['boxes_written']} (= masks in {r['masks_in']} - dropped {sum(r['masks_dropped'].values())})",
        "  images written: " + ", ".join(
            f"{p} {n} (normal {r['normal_images_written'][p]}, boxes {r['boxes_written_per_split'][p]}) "
            f"-> {r['outputs'][p]}" for p, n in r["images_written"].items()),
    ]
    if r["issues"]:
        lines.append("  changed / dropped / skipped, by reason:")
        for reason, n in r["issues"].items():
            lines.append(f"    {n:6d}  {ALL_REASONS[reason]} [{reason}]")
            for ex in r["examples"].get(reason, [])[:3]:
                lines.append(f"            e.g. {ex}")
    else:
        lines.append("  nothing changed or dropped")
    for path in r.get("stale_outputs_removed", []):
        lines.append(f"  removed {path}: a validation split of an earlier run, which this split (no --val-size) "
                     "would overlap")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# fabric


def _fabric_template(img_path):
    d, fname = os.path.split(img_path)
    stem, ext = os.path.splitext(fname)
    prefix = stem.split("_")[0]
    for e in [ext] + [x for x in (".jpg", ".jpeg", ".png", ".bmp", ".JPG", ".JPEG", ".PNG") if x != ext]:
        p = os.path.join(d, f"template_{prefix}{e}")
        if os.path.isfile(p):
            return p
    return None


def _read_fabric_entry(entry, i, afile, index, stems, roots, lookup, log):
    """
    Validate entry ``i`` of annotation file ``afile`` and add its box (and mask) to its image's
    ``raw_boxes``. Returns True if added, False if the box was dropped (counted; raises if strict).
    """
    if not isinstance(entry, dict):
        log.problem("not_an_object", afile, f"expected an object, got {type(entry).__name__}", i)
        return False
    name = entry.get("name")
    missing = [k for k in ("name", "defect_name", "bbox") if k not in entry]
    if missing:
        log.problem("missing_key", afile, f"missing key(s) {missing}", i, name)
        return False
    bbox = entry["bbox"]
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        n = len(bbox) if isinstance(bbox, (list, tuple)) else type(bbox).__name__
        log.problem("bad_bbox", afile, f"bbox must be 4 numbers [xmin, ymin, xmax, ymax], got {n}: {bbox!r}", i, name)
        return False
    coords = [_number(v) for v in bbox]
    if any(c is None for c in coords):
        log.problem("bad_bbox", afile, f"bbox has non-numeric / non-finite values: {bbox!r}", i, name)
        return False
    cat = lookup(entry["defect_name"])
    if cat is None:
        log.problem("unknown_class", afile, f"unknown class {entry['defect_name']!r}", i, name)
        return False
    img = index.get(os.path.basename(name)) if isinstance(name, str) else None
    if img is None and isinstance(name, str):
        img = stems.get(os.path.splitext(os.path.basename(name))[0])
    if img is None:
        log.problem("image_not_found", afile,
                    f"image not found under defect/ or normal/ of {', '.join(roots)}", i, name)
        return False
    if img["is_normal"]:
        log.problem("annotation_on_normal_image", afile,
                    f"annotates an image in a normal/ folder: {img['path']}", i, name)
        return False
    img["n_entries"] += 1
    if not img["ok"]:
        log.count("image_dropped", _describe(afile, f"its image {img['path']} was dropped", i, name))
        return False
    mask = None
    if entry.get("segmentation") is not None:
        mask, problem, area = _check_segmentation(entry["segmentation"], img["width"], img["height"])
        if problem is not None:
            log.problem("bad_mask", afile, f"{problem} (image {img['path']}); the box is kept in --lenient", i, name)
        elif area == 0:
            log.count("empty_mask", _describe(afile, "mask has no foreground pixel (box kept)", i, name))
            mask = None
    img["raw_boxes"].append((cat, *coords, (afile, i, name), mask))
    return True


def convert_fabric(roots, out_dir, *, anno_files=None, prefix="fabric", test_size=500, val_size=0, split=True,
                   seed=0, image_root=None, strict=True, verbose=True):
    """
    Convert a Tianchi 2019 fabric (round 2) release to COCO JSON.

    Args:
        roots (str or list[str]): release roots; images are found under ``<root>/defect/`` and
            ``<root>/normal/`` (``<stem>/<stem>.jpg`` + ``<stem>/template_<prefix>.jpg``). Annotation
            names are resolved against the images of *all* roots.
        out_dir (str): where ``<prefix>_train.json`` / ``<prefix>_test.json`` (or ``<prefix>.json``) go.
        anno_files (list[str] or None): annotation JSON lists; default every ``<root>/Annotations/*.json``.
        prefix (str): output file prefix.
        test_size (int): number of images (defect and normal) in the test split.
        val_size (int): number of images carved from the training part into ``<prefix>_val.json``
            (0: none). The test split is the same with or without it.
        split (bool): False writes everything to ``<prefix>.json``.
        seed (int): seed of the split (over images sorted by file name, so listing order is irrelevant).
        image_root (str or None): ``file_name`` / ``template_file_name`` are relative to it; default the
            common parent of ``roots``.
        strict (bool): raise :class:`TianchiFormatError` on the first bad input; False skips and counts.
        verbose (bool): print the report.

    Returns:
        dict: the report (see :func:`format_report`; ``boxes_in == boxes_written + sum(boxes_dropped)``).
    """
    roots, image_root = _prepare_roots(roots, image_root)
    log = _Log(strict)
    report = _new_report("fabric", strict, roots, image_root)
    lookup = _category_lookup("fabric")

    # 1. images (both kinds, all roots), indexed by file name; every image and template is decoded
    index, images, template_sizes = {}, [], {}
    for root in roots:
        has_images = False
        for kind in ("defect", "normal"):
            top = os.path.join(root, kind)
            if not os.path.isdir(top):
                continue
            has_images = True
            for path in _walk_files(top):
                fname = os.path.basename(path)
                if not _is_image(fname) or fname.startswith("template_"):
                    continue
                report["images_found"][kind] += 1
                if fname in index:
                    log.problem("duplicate_image_name", path,
                                f"image file name also found at {index[fname]['path']}")
                    continue
                img = {"path": path, "is_normal": kind == "normal", "raw_boxes": [], "n_entries": 0,
                       "ok": False}
                index[fname] = img
                template = _fabric_template(path)
                if template is None:
                    stem = os.path.splitext(fname)[0]
                    log.problem("missing_template", path,
                                f"template image template_{stem.split('_')[0]}.jpg missing beside it")
                    continue
                size = _try_size(path, log)
                if size is None:
                    continue
                tsize = _try_size(template, log, "template", cache=template_sizes)
                if tsize is None:
                    continue
                if tsize != size:
                    log.problem("template_size_mismatch", path,
                                f"template {template} is {tsize[0]}x{tsize[1]} but the image is "
                                f"{size[0]}x{size[1]} (WxH); the template methods need them equal. Replace "
                                "the template, or --lenient drops the image")
                    continue
                img.update(ok=True, template=template, width=size[0], height=size[1])
                images.append(img)
        if not has_images and not os.path.isdir(os.path.join(root, "Annotations")):
            raise TianchiFormatError(root, "no defect/, normal/ or Annotations/ folder: not a fabric release root")
    stems = {os.path.splitext(k)[0]: v for k, v in index.items()}

    # 2. annotation files
    if anno_files is None:
        anno_files = []
        for root in roots:
            adir = os.path.join(root, "Annotations")
            if os.path.isdir(adir):
                anno_files += [os.path.join(adir, f) for f in os.listdir(adir) if f.lower().endswith(".json")]
        if not anno_files:
            raise TianchiFormatError(", ".join(roots), "no Annotations/*.json found (pass anno_files)")
    anno_files = sorted({os.path.abspath(os.fspath(a)) for a in anno_files})
    report["annotation_files"] = anno_files
    for afile in anno_files:
        # a file that cannot be read would leave every image it labels without boxes: fatal
        try:
            data = _load_json(afile)
        except json.JSONDecodeError as e:
            raise TianchiFormatError(afile, f"malformed JSON: {e.msg} at line {e.lineno} column {e.colno} "
                                     f"(char {e.pos}); an error also with --lenient",
                                     reason="annotation_file_malformed") from None
        except (OSError, UnicodeDecodeError) as e:
            raise TianchiFormatError(afile, f"cannot read the annotation file ({e}); an error also with "
                                     "--lenient", reason="annotation_file_malformed") from None
        if not isinstance(data, list):
            raise TianchiFormatError(afile, f"top level is a JSON {type(data).__name__}, expected a list of "
                                     "{name, defect_name, bbox} objects; an error also with --lenient",
                                     reason="annotation_file_not_list")
        if not data:
            log.problem("annotation_file_empty", afile, "the annotation file holds an empty list: no box for any "
                        "image (remove the file, pass the right one with --anno, or --lenient to skip it)")
        for i, entry in enumerate(data):
            report["boxes_in"] += 1
            has_mask = isinstance(entry, dict) and entry.get("segmentation") is not None
            report["masks_in"] += int(has_mask)
            if not _read_fabric_entry(entry, i, afile, index, stems, roots, lookup, log) and has_mask:
                log.count("mask_of_dropped_box", _describe(afile, "its box was dropped", i, entry.get("name")))

    return _finish("fabric", images, log, report, roots=roots, anno_files=anno_files, out_dir=out_dir,
                   prefix=prefix, test_size=test_size, val_size=val_size, split=split, seed=seed, image_root=image_root,
                   verbose=verbose)


# ----------------------------------------------------------------------------------------------
# aluminum


def _is_normal_folder(name):
    low = name.lower()
    return name == "无瑕疵样本" or "无瑕疵" in name or ("normal" in low and "abnormal" not in low)


def _labelme_shapes(jpath, data, lookup, log, report):
    """Validated (cat, x0, y0, x1, y1, src) boxes of a LabelMe object; counts shapes in boxes_in."""
    boxes = []
    for i, shape in enumerate(data["shapes"]):
        report["boxes_in"] += 1
        if not isinstance(shape, dict):
            log.problem("not_an_object", jpath, f"shape is not an object: {shape!r}", i)
            continue
        label = shape.get("label")
        missing = [k for k in ("label", "points") if k not in shape]
        if missing:
            log.problem("missing_key", jpath, f"shape missing key(s) {missing}", i, label)
            continue
        pts = shape["points"]
        ok = isinstance(pts, list) and len(pts) >= 2 and all(
            isinstance(p, (list, tuple)) and len(p) == 2 and None not in (_number(p[0]), _number(p[1]))
            for p in pts)
        if not ok:
            n = len(pts) if isinstance(pts, list) else type(pts).__name__
            log.problem("bad_points", jpath, f"shape needs >= 2 numeric [x, y] points, got {n}: {pts!r}"[:300], i, label)
            continue
        cat = lookup(label)
        if cat is None:
            log.problem("unknown_class", jpath, f"unknown class {label!r}", i, label)
            continue
        xs, ys = [float(p[0]) for p in pts], [float(p[1]) for p in pts]
        boxes.append((cat, min(xs), min(ys), max(xs), max(ys), (jpath, i, label), None))
    return boxes


def convert_aluminum(roots, out_dir, *, prefix="aluminum", test_size=500, val_size=0, split=True, seed=0,
                     image_root=None, strict=True, verbose=True):
    """
    Convert a Tianchi 2018 aluminum (round 2) release to COCO JSON.

    Roots are walked recursively; every image ``X.jpg`` needs a LabelMe ``X.json`` beside it (box =
    min/max over each shape's points), unless a folder on its path (below the root, or the root
    itself) is a normal folder (``无瑕疵样本``, or a name containing ``normal``): such images without
    JSON are normal images. ``out_dir`` is skipped if it lies inside a root. Other arguments and the
    returned report are as in :func:`convert_fabric` (no templates, no annotation files).
    """
    roots, image_root = _prepare_roots(roots, image_root)
    log = _Log(strict)
    report = _new_report("aluminum", strict, roots, image_root)
    lookup = _category_lookup("aluminum")
    skip = {os.path.abspath(os.fspath(out_dir))}

    images, json_files = [], []
    for root in roots:
        files = _walk_files(root, skip)
        fileset = set(files)
        image_stems = {os.path.splitext(p)[0] for p in files if _is_image(p)}
        for path in files:
            if path.lower().endswith(".json") and os.path.splitext(path)[0] not in image_stems:
                # a JSON with no image beside it: a LabelMe file whose image is missing is an error
                try:
                    data = _load_json(path)
                except (OSError, ValueError):
                    data = None
                if isinstance(data, dict) and isinstance(data.get("shapes"), list):
                    json_files.append(path)
                    report["boxes_in"] += len(data["shapes"])
                    stem = os.path.splitext(os.path.basename(path))[0]
                    if strict:
                        log.problem("image_not_found", path, f"LabelMe file without its image {stem}.jpg beside it")
                    log.count("image_not_found", _describe(path, "LabelMe file without its image"),
                              n=len(data["shapes"]))
                else:
                    log.count("unrelated_json_ignored", path)
                continue
            if not _is_image(path):
                continue
            rel_dirs = os.path.relpath(os.path.dirname(path), root).split(os.sep)
            in_normal = any(_is_normal_folder(d) for d in rel_dirs + [os.path.basename(root)] if d not in ("", "."))
            jpath = os.path.splitext(path)[0] + ".json"
            if jpath not in fileset:
                jpath = next((os.path.splitext(path)[0] + e for e in (".JSON", ".Json")
                              if os.path.splitext(path)[0] + e in fileset), None)
            boxes, n_shapes = [], 0
            if jpath is None:
                if not in_normal:
                    report["images_found"]["defect"] += 1
                    log.problem("missing_annotation", path,
                                "no LabelMe JSON beside the image and not in a normal folder (无瑕疵样本 / *normal*)")
                    continue
                is_normal = True
            else:
                json_files.append(jpath)
                try:
                    data = _load_json(jpath)
                except json.JSONDecodeError as e:
                    report["images_found"]["normal" if in_normal else "defect"] += 1
                    log.problem("bad_annotation_file", jpath,
                                f"malformed JSON: {e.msg} at line {e.lineno} column {e.colno} (char {e.pos})")
                    continue
                except (OSError, UnicodeDecodeError) as e:
                    report["images_found"]["normal" if in_normal else "defect"] += 1
                    log.problem("bad_annotation_file", jpath, f"cannot read ({e})")
                    continue
                if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
                    report["images_found"]["normal" if in_normal else "defect"] += 1
                    log.problem("bad_annotation_file", jpath, "not a LabelMe object (no 'shapes' list)")
                    continue
                n_shapes = len(data["shapes"])
                is_normal = in_normal and not n_shapes
                if in_normal and n_shapes:
                    log.count("annotated_image_in_normal_folder", path)
                report["images_found"]["normal" if is_normal else "defect"] += 1
                boxes = _labelme_shapes(jpath, data, lookup, log, report)
            if jpath is None:
                report["images_found"]["normal"] += 1
            size = _try_size(path, log)
            if size is None:
                if boxes:
                    log.count("image_dropped", f"{path}: image dropped", n=len(boxes))
                continue
            if jpath is not None:
                jw, jh = data.get("imageWidth"), data.get("imageHeight")
                if isinstance(jw, int) and isinstance(jh, int) and (jw, jh) != size:
                    log.count("labelme_size_mismatch", f"{jpath}: {jw}x{jh} vs image {size[0]}x{size[1]}")
            images.append({"path": path, "is_normal": is_normal, "raw_boxes": boxes, "width": size[0],
                           "height": size[1], "template": None, "n_entries": n_shapes, "annotation": jpath})

    return _finish("aluminum", images, log, report, roots=roots, anno_files=sorted(json_files),
                   out_dir=out_dir, prefix=prefix, test_size=test_size, val_size=val_size, split=split, seed=seed,
                   image_root=image_root, verbose=verbose)
