"""Planning and writing of the synthetic fabric dataset: the per-release plan (family, image count and
primary defect type of every piece), the rendering of one piece (template + its images), and
:func:`generate_fabric_dataset`, which writes the Tianchi round-2 layout, ``meta.json`` and returns a
summary (:func:`format_summary` prints it)."""
import hashlib
import json
import math
import os
import shutil
import time
from collections import OrderedDict
from typing import Optional

import cv2
import numpy as np

from .capture import _capture, _photometric
from .config import (
    DEFECT_TYPES,
    GENERATOR_NAME,
    GENERATOR_VERSION,
    RELEASES,
    SyntheticFabricConfig,
    _applicable_types,
)
from .defects import _Ctx, _encode_mask, _paint_defects
from .textures import _render_texture

__all__ = ["format_summary", "generate_fabric_dataset"]

# ----------------------------------------------------------------------------------------------
# planning + generation
# ----------------------------------------------------------------------------------------------
_REL_ID = {"seen": 0, "unseen_texture": 1}
_KIND_ID = {"defect": 0, "normal": 1}


def _piece_prefix(seed, release, kind, index):
    key = f"synthetic-fabric/{seed}/{release}/{kind}/{index}".encode()
    return hashlib.sha1(key).hexdigest()[:16]


def _plan_release(cfg, release, families, n_pieces, n_normal):
    """Per-piece plan (family, number of images, primary defect type per image), balanced by cycling."""
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, _REL_ID[release], 1000]))
    lo, hi = cfg.images_per_piece

    def fam_cycle(n, fams):
        out = []
        while len(out) < n:
            out += [fams[i] for i in rng.permutation(len(fams))]
        return out[:n]

    plans = {"defect": [], "normal": []}
    # only families with an applicable defect type can carry defects
    dfams = [f for f in families if _applicable_types(f, cfg.defect_types)]
    counts = {t: 0 for t in cfg.defect_types}
    for fam in fam_cycle(n_pieces, dfams):
        n_img = int(rng.integers(lo, hi + 1))
        primaries = []
        for _ in range(n_img):
            app = _applicable_types(fam, cfg.defect_types)
            least = min(counts[t] for t in app)
            cands = [t for t in app if counts[t] == least]
            t = cands[int(rng.integers(len(cands)))]
            counts[t] += 1
            primaries.append(t)
        plans["defect"].append({"family": fam, "n_images": n_img, "primaries": primaries})
    for fam in fam_cycle(n_normal, list(families)):
        plans["normal"].append({"family": fam, "n_images": int(rng.integers(lo, hi + 1)), "primaries": None})
    return plans


def _make_piece(cfg, release, kind, index, plan):
    """
    Render one piece: template + its images.

    Returns:
        (prefix, template uint8 HxWx3, list of (stem, image uint8 HxWx3, record dict, masks)),
        ``masks`` = one HxW bool array per entry of ``record["boxes"]`` (see :func:`_paint_defects`).
    """
    W, H = cfg.width, cfg.height
    S = min(W, H)
    ks = S / 256.0
    base = [cfg.seed, _REL_ID[release], _KIND_ID[kind], index]
    rng = np.random.default_rng(np.random.SeedSequence(base + [0]))
    rot_margin = 0.5 * math.hypot(W, H) * math.sin(math.radians(cfg.max_rotation)) if cfg.max_rotation else 0
    pad = int(math.ceil(cfg.max_shift + rot_margin)) + 4
    family = plan["family"]
    tex = _render_texture(family, H + 2 * pad, W + 2 * pad, rng, ks)
    prefix = _piece_prefix(cfg.seed, release, kind, index)
    t_rng = np.random.default_rng(np.random.SeedSequence(base + [1]))
    template = _photometric(_capture(tex.image, pad, W, H, 0, 0, 0.0), t_rng, cfg)
    out = []
    for k in range(plan["n_images"]):
        r = np.random.default_rng(np.random.SeedSequence(base + [2 + k]))
        dx, dy = (float(v) for v in r.uniform(-cfg.max_shift, cfg.max_shift, 2))
        rot = float(r.uniform(-cfg.max_rotation, cfg.max_rotation))
        if cfg.subpixel_shift:
            dx, dy = round(dx, 2), round(dy, 2)
        else:
            dx, dy = float(round(dx)), float(round(dy))
        rot = round(rot, 3)
        dx, dy = dx + 0.0, dy + 0.0  # no negative zero in JSON
        img = _capture(tex.image, pad, W, H, dx, dy, rot)
        stem = f"{prefix}_{k}"
        boxes, masks = [], []
        if kind == "defect":
            layers = None
            if tex.ground is not None:
                layers = {name: _capture(getattr(tex, name), pad, W, H, dx, dy, rot)
                          for name in ("ground", "print_premul", "print_alpha")}
            ctx = _Ctx(H, W, tex.thread_angle, layers, tex.motif_period, cfg.contrast_scale)
            img, boxes, masks = _paint_defects(img, ctx, r, cfg, family, plan["primaries"][k])
        arr = _photometric(img, r, cfg)
        rec = OrderedDict([
            ("stem", stem), ("release", release), ("kind", kind), ("prefix", prefix), ("family", family),
            ("defect_types", [b["type"] for b in boxes]), ("shift_dx", dx), ("shift_dy", dy),
            ("rotation", rot), ("boxes", boxes), ("texture", tex.params),
        ])
        out.append((stem, arr, rec, masks))
    return prefix, template, out


def _imwrite(path, img, quality):
    ok = cv2.imwrite(path, img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise OSError(f"cv2.imwrite failed: {path}")


def _prepare_out(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    meta_path = os.path.join(out_dir, "meta.json")
    existing = [r for r in RELEASES if os.path.exists(os.path.join(out_dir, r))]
    if not existing:
        return
    ours = False
    if os.path.isfile(meta_path):
        try:
            with open(meta_path, encoding="utf-8") as f:
                ours = json.load(f).get("generator") == GENERATOR_NAME
        except (OSError, ValueError):
            ours = False
    if not ours:
        raise FileExistsError(f"{out_dir} already has {existing} not written by this generator "
                              f"(no matching meta.json); remove them or choose another --out")
    for r in existing:
        shutil.rmtree(os.path.join(out_dir, r))


def generate_fabric_dataset(out_dir, cfg: Optional[SyntheticFabricConfig] = None, verbose=False):
    """
    Generate the synthetic fabric dataset under ``out_dir`` (layout in the module docstring).

    An earlier output of this generator in ``out_dir`` (``seen/``, ``unseen_texture/``) is replaced;
    foreign folders of those names raise ``FileExistsError``. Other files in ``out_dir`` are kept.

    Args:
        out_dir (str): dataset root.
        cfg (SyntheticFabricConfig or None): parameters (default config if None); validated first
            (``ValueError`` naming the field).
        verbose (bool): print one progress line per release.

    Returns:
        dict: summary ``{"out_dir", "seconds", "releases": {release: {"pieces", "normal_pieces",
        "defect_images", "normal_images", "boxes", "boxes_per_class" (Chinese -> n),
        "boxes_per_type" (type -> n), "families" (list)}}, "boxes_per_class", "families"
        (release -> list), "box_areas" (type -> [min, median, max] px²)}``.
    """
    cfg = SyntheticFabricConfig() if cfg is None else cfg
    cfg.validate()
    t0 = time.perf_counter()
    _prepare_out(out_dir)
    releases = OrderedDict([
        ("seen", (cfg.seen_families(), cfg.seen_pieces, cfg.seen_normal_pieces)),
        ("unseen_texture", (tuple(cfg.unseen_families), cfg.unseen_pieces, cfg.unseen_normal_pieces)),
    ])
    records = []
    summary = {"out_dir": os.path.abspath(out_dir), "releases": OrderedDict(), "families": OrderedDict()}
    areas = {t: [] for t in DEFECT_TYPES}
    for release, (fams, n_def, n_norm) in releases.items():
        root = os.path.join(out_dir, release)
        os.makedirs(os.path.join(root, "Annotations"), exist_ok=True)
        os.makedirs(os.path.join(root, "defect"), exist_ok=True)
        os.makedirs(os.path.join(root, "normal"), exist_ok=True)
        plans = _plan_release(cfg, release, list(fams), n_def, n_norm) if fams else {"defect": [], "normal": []}
        annos = []
        rs = OrderedDict([("pieces", n_def), ("normal_pieces", n_norm), ("defect_images", 0),
                          ("normal_images", 0), ("boxes", 0), ("boxes_per_class", OrderedDict()),
                          ("boxes_per_type", OrderedDict()), ("families", sorted(fams))])
        for kind in ("defect", "normal"):
            for index, plan in enumerate(plans[kind]):
                prefix, template, items = _make_piece(cfg, release, kind, index, plan)
                for stem, arr, rec, masks in items:
                    d = os.path.join(root, kind, stem)
                    os.makedirs(d, exist_ok=True)
                    _imwrite(os.path.join(d, f"{stem}.jpg"), arr, cfg.jpeg_quality)
                    _imwrite(os.path.join(d, f"template_{prefix}.jpg"), template, cfg.jpeg_quality)
                    rs[f"{kind}_images"] += 1
                    for b, m in zip(rec["boxes"], masks):
                        annos.append(OrderedDict([("name", f"{stem}.jpg"), ("defect_name", b["defect_name"]),
                                                  ("bbox", [float(v) for v in b["bbox"]]),
                                                  ("segmentation", _encode_mask(m))]))
                        rs["boxes_per_class"][b["defect_name"]] = rs["boxes_per_class"].get(b["defect_name"], 0) + 1
                        rs["boxes_per_type"][b["type"]] = rs["boxes_per_type"].get(b["type"], 0) + 1
                        x0, y0, x1, y1 = b["bbox"]
                        areas[b["type"]].append((x1 - x0) * (y1 - y0))
                    records.append(rec)
        rs["boxes"] = len(annos)
        with open(os.path.join(root, "Annotations", "anno_train.json"), "w", encoding="utf-8") as f:
            json.dump(annos, f, ensure_ascii=False)
        summary["releases"][release] = rs
        summary["families"][release] = sorted(fams)
        if verbose:
            print(f"[synthetic fabric] {release}: {rs['defect_images']} defect + {rs['normal_images']} normal "
                  f"images, {rs['boxes']} boxes ({time.perf_counter() - t0:.1f}s)", flush=True)
    total = OrderedDict()
    for zh in DEFECT_TYPES.values():
        n = sum(r["boxes_per_class"].get(zh, 0) for r in summary["releases"].values())
        if n:
            total[zh] = n
    summary["boxes_per_class"] = total
    summary["box_areas"] = OrderedDict(
        (t, [int(min(a)), float(np.median(a)), int(max(a))]) for t, a in areas.items() if a)
    meta = OrderedDict([
        ("generator", GENERATOR_NAME), ("version", GENERATOR_VERSION), ("seed", cfg.seed),
        ("config", cfg.to_dict()), ("families", summary["families"]),
        ("defect_types", OrderedDict(DEFECT_TYPES)),
        ("shift_convention", "defect(x, y) = template rotated by `rotation` degrees about the image centre "
                             "(cv2.getRotationMatrix2D convention), then translated by (shift_dx, shift_dy) px"),
        ("images", records),
    ])
    with open(os.path.join(out_dir, "meta.json"), "w", encoding="utf-8") as f:
        json.dump(meta, f, ensure_ascii=False, indent=1)
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    return summary


def format_summary(summary):
    """Human-readable multi-line text of a :func:`generate_fabric_dataset` summary."""
    lines = [f"synthetic fabric dataset in {summary['out_dir']} ({summary.get('seconds', 0):.1f}s)"]
    for rel, r in summary["releases"].items():
        lines.append(f"  {rel}: {r['defect_images']} defect images ({r['pieces']} pieces), "
                     f"{r['normal_images']} normal images ({r['normal_pieces']} pieces), {r['boxes']} boxes")
        lines.append(f"    families: {', '.join(r['families'])}")
    lines.append("  boxes per class (all releases): type / class: n  [min / median / max area px²]")
    inv = {zh: t for t, zh in DEFECT_TYPES.items()}
    for zh, n in summary["boxes_per_class"].items():
        t = inv[zh]
        a = summary["box_areas"].get(t)
        lines.append(f"    {t:22s} {zh}: {n:4d}  [{a[0]} / {a[1]:.0f} / {a[2]}]")
    return "\n".join(lines)
