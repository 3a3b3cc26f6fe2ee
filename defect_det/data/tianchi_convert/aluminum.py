"""Reader of the Tianchi 2018 aluminum (round 2) release: images with a LabelMe JSON beside each, normal
images in normal folders (``无瑕疵样本``); :func:`convert_aluminum`."""
import json
import os

from .common import _category_lookup, _is_image, _load_json, _prepare_roots, _try_size, _walk_files
from .report import _describe, _Log, _new_report
from .segmentation import _number
from .writer import _finish

__all__ = ["convert_aluminum"]


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
