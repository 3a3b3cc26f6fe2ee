"""What both Tianchi readers do once the input is read: box geometry (dedupe, drop degenerate / outside
boxes, clip), ids, the train / val / test split, the COCO files (written all or nothing) and the
accounting of the report (:func:`_finish`)."""
import json
import os
import random
from collections import OrderedDict

from ..datasets.tianchi_categories import DATASET_CATEGORIES
from .common import _relpath
from .report import (
    ALL_REASONS,
    BOX_REASONS,
    CONVERTER_VERSION,
    IMAGE_REASONS,
    MASK_REASONS,
    TianchiFormatError,
    _where,
    format_report,
)

__all__ = []  # internal to the converter


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
