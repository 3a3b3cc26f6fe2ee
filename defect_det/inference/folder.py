"""A folder of images through a trained model: what ``tools/predict.py`` runs (issue 15).

- :func:`find_images`: the images of paths / folders / glob patterns (``template_*`` files are templates,
  not images);
- :func:`pair_templates`: each image's template — from a CSV (``image,template`` per line), or by the
  Tianchi rule: ``template_<prefix>.<ext>`` beside the image (or in ``--templates DIR``), ``<prefix>`` the
  file name up to its first ``_``;
- :func:`predict_folder`: runs a :class:`~defect_det.inference.DefectPredictor` in batches and writes, to the
  output folder, ``predictions.json`` (COCO results with ``file_name``), ``decisions.csv`` (image, OK/NG, max
  score, top class, number of defects at the threshold), one PNG panel per image (image | template |
  |I - T|, detections drawn) under ``panels/``, and ``report.html`` (NG images first, sortable by score,
  thumbnails linking to the panels, the threshold, the model and config). An image is NG when a detection
  scores at least the threshold.
"""
import csv
import glob
import html
import json
import os
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np

from ..data.image_io import read_image

__all__ = ["IMAGE_EXTS", "find_images", "pair_templates", "predict_folder", "write_report"]

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


def _is_image(path: str) -> bool:
    return path.lower().endswith(IMAGE_EXTS) and not os.path.basename(path).startswith("template_")


def find_images(inputs: Sequence[str]) -> List[str]:
    """Image files of ``inputs`` (files, folders searched recursively, glob patterns), sorted, without
    duplicates and without ``template_*`` files. Raises ``FileNotFoundError`` naming an input that matches
    nothing, ``ValueError`` when no image is found at all."""
    found = []
    for item in inputs:
        if os.path.isdir(item):
            hits = [os.path.join(r, f) for r, _, fs in os.walk(item) for f in fs]
        elif os.path.isfile(item):
            hits = [item]
        else:
            hits = glob.glob(item, recursive=True)
            if not hits:
                raise FileNotFoundError(f"--input {item!r}: no such file, folder, or matching pattern")
        found += [h for h in hits if _is_image(h)]
    found = sorted(set(found))
    if not found:
        raise ValueError(f"--input {list(inputs)}: no image ({', '.join(IMAGE_EXTS)}; template_* files excluded)")
    return found


def _tianchi_template(image: str, folder: Optional[str]) -> Optional[str]:
    d, name = os.path.split(image)
    stem, ext = os.path.splitext(name)
    prefix = stem.split("_")[0]
    for e in [ext] + [x for x in IMAGE_EXTS if x != ext.lower()]:
        p = os.path.join(folder or d, f"template_{prefix}{e}")
        if os.path.isfile(p):
            return p
    return None


def pair_templates(images: Sequence[str], templates_dir: Optional[str] = None,
                   pairs_csv: Optional[str] = None) -> Dict[str, Optional[str]]:
    """``{image: template path or None}`` (module doc). A CSV names images as written in it or by base name;
    a template it names must exist (error naming the line)."""
    if pairs_csv is None:
        return {im: _tianchi_template(im, templates_dir) for im in images}
    table = {}
    with open(pairs_csv, newline="") as f:
        for n, row in enumerate(csv.reader(f), 1):
            if not row or row[0].startswith("#") or row[0] == "image":
                continue
            if len(row) < 2:
                raise ValueError(f"{pairs_csv}, line {n}: expected 'image,template', got {row}")
            image, template = row[0].strip(), row[1].strip()
            if not os.path.isfile(template):
                raise FileNotFoundError(f"{pairs_csv}, line {n}: template {template} does not exist")
            table[image] = template
    return {im: table.get(im, table.get(os.path.basename(im))) for im in images}


def _panel(image_bgr: np.ndarray, template_bgr: Optional[np.ndarray], boxes, labels, color=(0, 0, 255)):
    """image | template | |I - T| (x3 for visibility), detections drawn on every part."""
    parts = [image_bgr]
    if template_bgr is not None and template_bgr.shape == image_bgr.shape:
        diff = np.clip(np.abs(image_bgr.astype(np.int16) - template_bgr.astype(np.int16)) * 3, 0, 255).astype(np.uint8)
        parts += [template_bgr, diff]
    drawn = []
    for part in parts:
        p = part.copy()
        for (x0, y0, x1, y1), text in zip(boxes, labels):
            cv2.rectangle(p, (int(x0), int(y0)), (int(x1), int(y1)), color, 1)
            cv2.putText(p, text, (int(x0), max(10, int(y0) - 2)), cv2.FONT_HERSHEY_SIMPLEX, 0.35, color, 1)
        drawn.append(p)
    return np.concatenate(drawn, axis=1)


def predict_folder(predictor, images: Sequence[str], templates: Dict[str, Optional[str]], out_dir: str,
                   class_names: Sequence[str], score_thresh: float = 0.5, batch_size: int = 4,
                   config_file: str = "", weights: str = "", progress: bool = True,
                   class_thresh: Optional[Dict[str, Optional[float]]] = None) -> List[dict]:
    """Run ``predictor`` on ``images`` and write the outputs of the module doc to ``out_dir``. With
    ``class_thresh`` (``tools/calibrate.py``'s per-class thresholds), a detection counts as a defect when it
    reaches its class's threshold (``score_thresh`` for a class without one), and an image is NG when it has
    a defect or its best score reaches ``score_thresh``.

    Returns:
        one row per image: ``{"image", "template", "decision" (OK / NG), "max_score", "top_class",
        "defects" (detections >= score_thresh), "panel"}``, NG first then by decreasing max score.
    """
    os.makedirs(os.path.join(out_dir, "panels"), exist_ok=True)
    results, rows = [], []
    batches = [images[i:i + batch_size] for i in range(0, len(images), batch_size)]
    try:
        from tqdm import tqdm
        batches_it = tqdm(batches, desc="predict", unit="batch", disable=not progress)
    except ImportError:  # tqdm is a Detectron2 dependency; a bare environment still works
        batches_it = batches
    image_id = 0
    for batch in batches_it:
        tmpls = [templates.get(im) for im in batch]
        outputs = predictor(list(batch), tmpls if any(t is not None for t in tmpls) else None)
        for im, t, out in zip(batch, tmpls, outputs):
            image_id += 1
            if "instances" not in out:  # SegDecNet: an image-level score and a defect map
                rows.append(_segdec_row(out, im, image_id, out_dir, score_thresh))
                continue
            inst = out["instances"].to("cpu")
            boxes, scores = inst.pred_boxes.tensor.numpy(), inst.scores.numpy()
            classes = inst.pred_classes.numpy()
            for b, s, c in zip(boxes, scores, classes):
                results.append({"image_id": image_id, "file_name": im, "category_id": int(c),
                                "category": class_names[int(c)] if int(c) < len(class_names) else str(int(c)),
                                "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
                                "score": float(s)})
            if class_thresh:
                cut = np.array([class_thresh.get(class_names[int(c)] if int(c) < len(class_names) else str(c))
                                or score_thresh for c in classes], float)
                keep = scores >= cut
            else:
                keep = scores >= score_thresh
            top = int(np.argmax(scores)) if len(scores) else -1
            image_bgr = read_image(im, format="BGR")
            template_bgr = read_image(t, format="BGR", what="template") if t else None
            labels = [f"{class_names[int(c)] if int(c) < len(class_names) else c} {s:.2f}"
                      for c, s in zip(classes[keep], scores[keep])]
            panel = os.path.join("panels", f"{image_id:05d}_{os.path.splitext(os.path.basename(im))[0]}.png")
            cv2.imwrite(os.path.join(out_dir, panel), _panel(image_bgr, template_bgr, boxes[keep], labels))
            ng = keep.any() or (len(scores) > 0 and float(scores.max()) >= score_thresh)
            rows.append({"image": im, "template": t or "", "decision": "NG" if ng else "OK",
                         "max_score": float(scores[top]) if top >= 0 else 0.0,
                         "top_class": (class_names[int(classes[top])] if top >= 0 and int(classes[top]) < len(class_names)
                                       else ""), "defects": int(keep.sum()), "panel": panel})
    rows.sort(key=lambda r: (r["decision"] != "NG", -r["max_score"]))
    with open(os.path.join(out_dir, "predictions.json"), "w") as f:
        json.dump(results, f)
    with open(os.path.join(out_dir, "decisions.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["image", "decision", "max_score", "top_class", "defects", "template"])
        w.writeheader()
        for r in rows:
            w.writerow({k: r[k] for k in w.fieldnames})
    write_report(out_dir, rows, score_thresh, config_file, weights)
    return rows


def _segdec_row(out: dict, image: str, image_id: int, out_dir: str, score_thresh: float) -> dict:
    """Decision and panel (image | defect probability map) of a SegDecNet output."""
    score = float(out["score"])
    prob = out["sem_seg"].detach().cpu().numpy()[0]
    image_bgr = read_image(image, format="BGR")
    heat = cv2.applyColorMap(np.clip(prob * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)
    panel = os.path.join("panels", f"{image_id:05d}_{os.path.splitext(os.path.basename(image))[0]}.png")
    cv2.imwrite(os.path.join(out_dir, panel), np.concatenate([image_bgr, heat], axis=1))
    return {"image": image, "template": "", "decision": "NG" if score >= score_thresh else "OK", "max_score": score,
            "top_class": "defect", "defects": int(score >= score_thresh), "panel": panel}


def write_report(out_dir: str, rows: List[dict], score_thresh: float, config_file: str, weights: str) -> str:
    """``report.html``: one table row per image (NG first), a click on a column header sorts by it, each
    thumbnail links to its panel; the threshold, config and weights at the top. Returns its path."""
    ng = sum(r["decision"] == "NG" for r in rows)
    body = []
    for r in rows:
        body.append(
            f'<tr class="{r["decision"]}"><td>{html.escape(r["decision"])}</td>'
            f'<td data-v="{r["max_score"]:.6f}">{r["max_score"]:.3f}</td><td>{html.escape(r["top_class"])}</td>'
            f'<td data-v="{r["defects"]}">{r["defects"]}</td><td>{html.escape(r["image"])}</td>'
            f'<td><a href="{html.escape(r["panel"])}"><img src="{html.escape(r["panel"])}" height="96"></a></td></tr>')
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>defect_det inspection report</title>
<style>body{{font-family:sans-serif}} table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:4px}}
tr.NG td:first-child{{color:#fff;background:#c00;font-weight:bold}} tr.OK td:first-child{{background:#6c6}}
th{{cursor:pointer;background:#eee}}</style></head><body>
<h1>Inspection report</h1>
<p>{len(rows)} images: <b>{ng} NG</b>, {len(rows) - ng} OK. NG: a detection scored &ge; {score_thresh:.3f}.</p>
<p>config: <code>{html.escape(config_file)}</code><br>weights: <code>{html.escape(weights)}</code></p>
<table id="t"><thead><tr><th>decision</th><th>max score</th><th>top class</th><th>defects</th><th>image</th>
<th>panel (image | template | |I-T|)</th></tr></thead><tbody>
{chr(10).join(body)}
</tbody></table>
<script>
document.querySelectorAll("#t th").forEach((th, i) => th.onclick = () => {{
  const tb = document.querySelector("#t tbody"), rows = Array.from(tb.rows);
  const key = r => {{ const c = r.cells[i]; return c.dataset.v !== undefined ? parseFloat(c.dataset.v) : c.textContent; }};
  const dir = th.dataset.dir = th.dataset.dir === "desc" ? "asc" : "desc";
  rows.sort((a, b) => (key(a) > key(b) ? 1 : key(a) < key(b) ? -1 : 0) * (dir === "desc" ? -1 : 1));
  rows.forEach(r => tb.appendChild(r));
}});
</script></body></html>
"""
    path = os.path.join(out_dir, "report.html")
    with open(path, "w") as f:
        f.write(page)
    return path
