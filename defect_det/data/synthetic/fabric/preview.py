"""Contact sheet of a generated synthetic fabric set: defect images with their boxes, their templates, and
the difference to the template warped by the recorded misalignment."""
import json
import os

import cv2
import numpy as np

from .capture import misalign_template
from .config import DEFECT_TYPES

__all__ = ["make_preview"]

_PREVIEW_COLORS = [(0, 0, 255), (0, 200, 0), (255, 0, 0), (0, 200, 255), (255, 0, 255), (255, 255, 0),
                   (0, 128, 255), (128, 0, 255), (255, 128, 0), (0, 255, 128), (128, 255, 0),
                   (255, 0, 128), (60, 60, 200), (200, 60, 60)]


def make_preview(out_dir, path, n=8):
    """
    Write a contact sheet PNG: ``n`` defect images (chosen to cover many defect types, both releases)
    with their boxes and type names | their templates | ``3 * |defect - aligned template|`` (the
    template warped by the recorded shift / rotation, see :func:`~.capture.misalign_template`).

    Returns:
        HxWx3 uint8 BGR array of the sheet (also written to ``path``).
    """
    with open(os.path.join(out_dir, "meta.json"), encoding="utf-8") as f:
        meta = json.load(f)
    defects = [r for r in meta["images"] if r["kind"] == "defect"]
    chosen, seen_types = [], set()
    for want_unseen in (False, True):
        pool = [r for r in defects if (r["release"] == "unseen_texture") == want_unseen]
        quota = n - n // 3 if not want_unseen else n
        for r in pool:
            if len(chosen) >= quota:
                break
            new = set(r["defect_types"]) - seen_types
            if new:
                chosen.append(r)
                seen_types |= new
        for r in pool:  # fill up
            if len(chosen) >= quota:
                break
            if r not in chosen:
                chosen.append(r)
    type_ids = {t: i for i, t in enumerate(DEFECT_TYPES)}
    rows = []
    for r in chosen[:n]:
        d = os.path.join(out_dir, r["release"], "defect", r["stem"])
        img = cv2.imread(os.path.join(d, r["stem"] + ".jpg"))
        tpl = cv2.imread(os.path.join(d, f"template_{r['prefix']}.jpg"))
        aligned = misalign_template(tpl, r["shift_dx"], r["shift_dy"], r["rotation"])
        diff = np.clip(3.0 * np.abs(img.astype(np.float32) - aligned.astype(np.float32)), 0, 255).astype(np.uint8)
        vis = img.copy()
        for b in r["boxes"]:
            x0, y0, x1, y1 = b["bbox"]
            col = _PREVIEW_COLORS[type_ids[b["type"]] % len(_PREVIEW_COLORS)]
            cv2.rectangle(vis, (x0, y0), (x1 - 1, y1 - 1), col, 1)
            cv2.putText(vis, b["type"], (x0 + 1, max(9, y0 - 2)), cv2.FONT_HERSHEY_SIMPLEX, 0.33, (0, 0, 0), 2,
                        cv2.LINE_AA)
            cv2.putText(vis, b["type"], (x0 + 1, max(9, y0 - 2)), cv2.FONT_HERSHEY_SIMPLEX, 0.33, col, 1,
                        cv2.LINE_AA)
        head = np.full((14, img.shape[1] * 3 + 8, 3), 255, np.uint8)
        cv2.putText(head, f"{r['release']} / {r['family']} / {r['stem']}  shift=({r['shift_dx']}, {r['shift_dy']})"
                    f" rot={r['rotation']}", (2, 10), cv2.FONT_HERSHEY_SIMPLEX, 0.33, (0, 0, 0), 1, cv2.LINE_AA)
        sep = np.full((img.shape[0], 4, 3), 255, np.uint8)
        rows.append(np.vstack([head, np.hstack([vis, sep, tpl, sep, diff])]))
    if not rows:
        raise ValueError(f"{out_dir}: no defect images to preview")
    sheet = np.vstack(rows)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    cv2.imwrite(path, sheet)
    return sheet
