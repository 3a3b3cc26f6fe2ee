"""Tests of the synthetic Tianchi-fabric generator (defect_det/data/synthetic/fabric/ + its CLI)."""
import json
import os
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from defect_det.data.datasets.tianchi_categories import FABRIC_CATEGORIES
from defect_det.data.synthetic.fabric import (
    DEFECT_TYPES,
    PRINTED_FAMILIES,
    TEXTURE_FAMILIES,
    SyntheticFabricConfig,
    generate_fabric_dataset,
    make_preview,
    misalign_template,
)

from conftest import REPO  # noqa: E402
RELEASES = ("seen", "unseen_texture")
STEM_RE = re.compile(r"^[0-9a-f]{16}_\d+$")

# tiny but complete: both releases, shared templates, normal images
TINY = dict(width=96, height=64, seen_pieces=6, seen_normal_pieces=2, unseen_pieces=3, unseen_normal_pieces=1,
            images_per_piece=(2, 3))
# no photometric change between an image and its template (only sensor noise + JPEG)
FLAT_LIGHT = dict(illumination_gain=0.0, illumination_offset=0.0, illumination_gradient=0.0)


def _gen(path, **kw):
    cfg = SyntheticFabricConfig(**{**TINY, **kw})
    summary = generate_fabric_dataset(str(path), cfg)
    return cfg, summary


def _all_files(root):
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = fh.read()
    return out


def _meta(root):
    with open(os.path.join(root, "meta.json"), encoding="utf-8") as f:
        return json.load(f)


def _annos(root, release):
    with open(os.path.join(root, release, "Annotations", "anno_train.json"), encoding="utf-8") as f:
        return json.load(f)


def _read_pair(root, rec):
    d = os.path.join(root, rec["release"], rec["kind"], rec["stem"])
    img = cv2.imread(os.path.join(d, rec["stem"] + ".jpg"))
    tpl = cv2.imread(os.path.join(d, f"template_{rec['prefix']}.jpg"))
    return img, tpl


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "fabric"
    cfg, summary = _gen(root, seed=3)
    return str(root), cfg, summary


def test_determinism(tiny, tmp_path):
    root, cfg, _ = tiny
    _gen(tmp_path / "again", seed=3)
    a, b = _all_files(root), _all_files(str(tmp_path / "again"))
    assert sorted(a) == sorted(b)
    assert len(a) > 20
    for k in a:
        assert a[k] == b[k], f"{k} differs between two runs with the same seed"
    _gen(tmp_path / "other", seed=4)
    c = _all_files(str(tmp_path / "other"))
    jpgs_a = sorted(v for k, v in a.items() if k.endswith(".jpg"))
    jpgs_c = sorted(v for k, v in c.items() if k.endswith(".jpg"))
    assert not set(jpgs_a) & set(jpgs_c), "a different seed must give different images"
    assert a["seen/Annotations/anno_train.json"] != c["seen/Annotations/anno_train.json"]


def test_format(tiny):
    root, cfg, summary = tiny
    zh_classes = {zh for _, zh in FABRIC_CATEGORIES}
    meta = _meta(root)
    n_boxes = 0
    for release in RELEASES:
        annos = _annos(root, release)
        assert isinstance(annos, list) and annos
        defect_stems = sorted(os.listdir(os.path.join(root, release, "defect")))
        normal_stems = sorted(os.listdir(os.path.join(root, release, "normal")))
        assert defect_stems and normal_stems
        boxed = set()
        for a in annos:
            assert set(a) == {"name", "defect_name", "bbox", "segmentation"}
            assert a["defect_name"] in zh_classes
            stem = a["name"][:-4]
            assert a["name"].endswith(".jpg") and stem in defect_stems, a["name"]
            x0, y0, x1, y1 = a["bbox"]
            assert all(isinstance(v, (int, float)) for v in a["bbox"])
            assert 0 <= x0 < x1 <= cfg.width and 0 <= y0 < y1 <= cfg.height, a
            boxed.add(stem)
        assert boxed == set(defect_stems), "every defect image needs >= 1 box, normal images none"
        assert not boxed & set(normal_stems)
        n_boxes += len(annos)
        for kind, stems in (("defect", defect_stems), ("normal", normal_stems)):
            by_prefix = {}
            for stem in stems:
                assert STEM_RE.match(stem), stem
                prefix = stem.split("_")[0]
                d = os.path.join(root, release, kind, stem)
                assert sorted(os.listdir(d)) == sorted([f"{stem}.jpg", f"template_{prefix}.jpg"])
                img = cv2.imread(os.path.join(d, f"{stem}.jpg"))
                assert img is not None and img.shape == (cfg.height, cfg.width, 3) and img.dtype == np.uint8
                with open(os.path.join(d, f"template_{prefix}.jpg"), "rb") as f:
                    by_prefix.setdefault(prefix, set()).add(f.read())
            # several images share one template (images_per_piece=(2, 3)); copies are identical
            assert all(len(v) == 1 for v in by_prefix.values())
            assert len(by_prefix) < len(stems)
        recs = [r for r in meta["images"] if r["release"] == release]
        assert sorted(r["stem"] for r in recs if r["kind"] == "defect") == defect_stems
        assert sorted(r["stem"] for r in recs if r["kind"] == "normal") == normal_stems
    assert n_boxes == sum(summary["boxes_per_class"].values())
    assert meta["seed"] == 3 and meta["config"]["width"] == cfg.width and meta["version"]


def test_converter_round_trip(tiny, tmp_path):
    """The project's converter reads the synthetic release strictly, dropping nothing."""
    from defect_det.data.tianchi_convert import convert_fabric

    root, _, summary = tiny
    for release in RELEASES:
        rep = convert_fabric([os.path.join(root, release)], str(tmp_path / release), split=False,
                             image_root=root, verbose=False)
        r = summary["releases"][release]
        assert rep["boxes_in"] == rep["boxes_written"] == r["boxes"]
        assert rep["masks_in"] == rep["masks_written"] == r["boxes"] and not rep["masks_dropped"]
        with open(tmp_path / release / "fabric.json", encoding="utf-8") as f:
            coco = json.load(f)
        assert len(coco["images"]) == r["defect_images"] + r["normal_images"]
        assert all("template_file_name" in im for im in coco["images"])
        # every mask arrives unchanged with its box
        src = {(a["name"], tuple(a["bbox"])): a["segmentation"] for a in _annos(root, release)}
        names = {im["id"]: os.path.basename(im["file_name"]) for im in coco["images"]}
        assert len(coco["annotations"]) == len(src)
        for a in coco["annotations"]:
            x, y, w, h = a["bbox"]
            assert a["segmentation"] == src[(names[a["image_id"]], (x, y, x + w, y + h))]


def _tight_box(mask):
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def test_masks_are_exact_rle_with_the_box_as_tight_box(tiny):
    from pycocotools import mask as mask_util

    root, cfg, _ = tiny
    meta = _meta(root)
    n = 0
    for release in RELEASES:
        for a in _annos(root, release):
            seg = a["segmentation"]
            assert set(seg) == {"size", "counts"} and isinstance(seg["counts"], str)
            assert seg["size"] == [cfg.height, cfg.width]
            m = mask_util.decode(seg)
            assert m.shape == (cfg.height, cfg.width) and m.dtype == np.uint8 and set(np.unique(m)) <= {0, 1}
            assert m.sum() > 0 and _tight_box(m) == a["bbox"], a["name"]
            # a real shape, not the box filled in (a defect's changed pixels never fill its box exactly)
            n += int(m.sum() < (a["bbox"][2] - a["bbox"][0]) * (a["bbox"][3] - a["bbox"][1]))
    assert n > 0
    # meta.json stays box-only (its records are unchanged by the masks)
    assert all(set(b) == {"type", "defect_name", "bbox"} for r in meta["images"] for b in r["boxes"])


def test_mask_is_the_changed_pixel_set_of_diff_region():
    """_diff_region's mask is exactly the thresholded change, and its box the mask's tight box."""
    from defect_det.data.synthetic.fabric import _diff_region

    rng = np.random.default_rng(0)
    before = rng.uniform(0.2, 0.8, (40, 50, 3)).astype(np.float32)
    after = before.copy()
    after[5:9, 10:30, 1] += 0.3    # strong: above 25 % of the peak
    after[20:22, 40:44, 0] += 0.05  # weak: below 25 % of the peak, outside the mask
    box, mask = _diff_region(before, after)
    expect = np.zeros((40, 50), bool)
    expect[5:9, 10:30] = True
    assert mask.dtype == bool and (mask == expect).all()
    assert box == [10, 5, 30, 9] == _tight_box(mask)
    assert _diff_region(before, before.copy()) == (None, None)


def _mask_cfg(**opts):
    from defect_det.config import get_defect_cfg

    cfg = get_defect_cfg()
    cfg.merge_from_list(["MODEL.META_ARCHITECTURE", "TemplateRCNN", "MODEL.TEMPLATE.MODE", "pre",
                         "MODEL.MASK_ON", "True", "INPUT.MASK_FORMAT", "bitmask",
                         "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MAX_SIZE_TRAIN", "200"])
    for k, v in opts.items():
        cfg.merge_from_list([k, v])
    return cfg


@pytest.fixture()
def tiny_registered(tiny, tmp_path):
    """The tiny seen release converted and registered; yields the dataset name."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from defect_det.data.datasets import register_tianchi_fabric
    from defect_det.data.tianchi_convert import convert_fabric

    root = tiny[0]
    convert_fabric([os.path.join(root, "seen")], str(tmp_path), split=False, image_root=root, verbose=False)
    name = "test_synthetic_fabric_masks"
    register_tianchi_fabric(name, str(tmp_path / "fabric.json"), root)
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def test_registration_keeps_masks(tiny_registered):
    from detectron2.data import DatasetCatalog
    from pycocotools import mask as mask_util

    dicts = DatasetCatalog.get(tiny_registered)
    annos = [a for d in dicts for a in d.get("annotations", [])]
    assert annos and all(isinstance(a["segmentation"], dict) for a in annos)
    for d in dicts:
        for a in d.get("annotations", []):
            x, y, w, h = a["bbox"]
            assert _tight_box(mask_util.decode(a["segmentation"])) == [x, y, x + w, y + h]


@pytest.mark.parametrize("flip", [False, True])
def test_paired_mapper_masks_follow_the_augmentation(tiny_registered, flip):
    """MASK_ON: gt_masks (N, H', W') of the resized (and flipped) image, mask i tight around box i."""
    from detectron2.data import DatasetCatalog
    from detectron2.data import transforms as T

    from defect_det.data import build_defect_mapper
    from defect_det.rddn import PairedDatasetMapper

    cfg = _mask_cfg()
    assert isinstance(build_defect_mapper(cfg, True, [tiny_registered]), PairedDatasetMapper)
    augs = [T.ResizeShortestEdge(96, 200), T.RandomFlip(prob=1.0 if flip else 0.0)]
    mapper = PairedDatasetMapper(cfg, True, augmentations=augs)
    dicts = [d for d in DatasetCatalog.get(tiny_registered) if d.get("annotations")][:4]
    for d in dicts:
        out = mapper(d)
        inst = out["instances"]
        h, w = out["image"].shape[1:]
        assert (h, w) == (96, 144) and out["template"].shape == out["image"].shape
        assert inst.has("gt_masks") and len(inst) == len(d["annotations"])
        masks = inst.gt_masks.tensor
        assert masks.shape == (len(inst), h, w) and masks.dtype == torch.bool
        boxes = inst.gt_boxes.tensor
        assert torch.allclose(inst.gt_masks.get_bounding_boxes().tensor, boxes, atol=2.0), (boxes, d["file_name"])
        # the flip is really applied: box 0 moved to the mirrored place
        x0, y0, bw, bh = d["annotations"][0]["bbox"]
        x0 = 1.5 * (d["width"] - x0 - bw) if flip else 1.5 * x0
        assert abs(float(boxes[0, 0]) - x0) < 1e-3


def test_box_supervised_loads_no_masks(tiny_registered):
    from detectron2.data import DatasetCatalog, DatasetMapper

    from defect_det.data import build_defect_mapper

    dicts = [d for d in DatasetCatalog.get(tiny_registered) if d.get("annotations")][:3]
    for meta_arch in ("TemplateRCNN", "GeneralizedRCNN"):
        for box_sup in (False, True):
            cfg = _mask_cfg(**{"MODEL.META_ARCHITECTURE": meta_arch,
                               "MODEL.ROI_MASK_HEAD.BOX_SUPERVISED": str(box_sup)})
            mapper = build_defect_mapper(cfg, True, [tiny_registered])
            assert isinstance(mapper, DatasetMapper)
            for d in dicts:
                inst = mapper(d)["instances"]
                assert len(inst) == len(d["annotations"]) and inst.has("gt_boxes")
                assert inst.has("gt_masks") != box_sup, (meta_arch, box_sup)
                assert "segmentation" in d["annotations"][0]  # the dataset dicts are not modified


def test_mask_training_needs_masks_in_a_readable_format(tiny_registered):
    from detectron2.data import DatasetCatalog

    from defect_det.data import build_defect_mapper

    with pytest.raises(ValueError, match="INPUT.MASK_FORMAT 'bitmask'"):
        build_defect_mapper(_mask_cfg(**{"INPUT.MASK_FORMAT": "polygon"}), True, [tiny_registered])
    dicts = DatasetCatalog.get(tiny_registered)
    partial = "test_synthetic_fabric_some_masks"
    drop = next(d for d in dicts if d.get("annotations"))
    DatasetCatalog.register(partial, lambda: [
        dict(d, annotations=[{k: v for k, v in a.items() if k != "segmentation" or d is not drop}
                             for a in d.get("annotations", [])]) for d in dicts])
    try:
        with pytest.raises(ValueError, match=f"{partial}.*have no 'segmentation'.*BOX_SUPERVISED"):
            build_defect_mapper(_mask_cfg(), True, [partial])
        build_defect_mapper(_mask_cfg(**{"MODEL.ROI_MASK_HEAD.BOX_SUPERVISED": "True"}), True, [partial])
    finally:
        DatasetCatalog.remove(partial)


def test_unseen_families_disjoint(tiny):
    root, cfg, _ = tiny
    meta = _meta(root)
    fam = meta["families"]
    assert set(fam["unseen_texture"]) == set(cfg.unseen_families) == {"herringbone", "plaid"}
    assert fam["seen"] and not set(fam["seen"]) & set(fam["unseen_texture"])
    for r in meta["images"]:
        assert r["family"] in fam[r["release"]]
    used = {rel: {r["family"] for r in meta["images"] if r["release"] == rel} for rel in RELEASES}
    assert used["unseen_texture"] and not used["seen"] & used["unseen_texture"]


def test_custom_unseen_families(tmp_path):
    _, summary = _gen(tmp_path, unseen_families=("knit", "floral_print"), seen_pieces=3, unseen_pieces=4,
                      images_per_piece=(1, 1))
    meta = _meta(str(tmp_path))
    assert {r["family"] for r in meta["images"] if r["release"] == "unseen_texture"} == {"knit", "floral_print"}
    assert not {"knit", "floral_print"} & {r["family"] for r in meta["images"] if r["release"] == "seen"}


def test_all_defect_types_and_families_appear(tmp_path):
    _, summary = _gen(tmp_path, width=128, height=96, seen_pieces=28, unseen_pieces=4, images_per_piece=(1, 1),
                      seen_normal_pieces=0, unseen_normal_pieces=0)
    meta = _meta(str(tmp_path))
    fams = {r["family"] for r in meta["images"]}
    assert len(fams) >= 6 and len(TEXTURE_FAMILIES) >= 6
    types = {t for r in meta["images"] for t in r["defect_types"]}
    assert types == set(DEFECT_TYPES), f"missing: {set(DEFECT_TYPES) - types}"
    assert len(DEFECT_TYPES) >= 8
    assert set(summary["boxes_per_class"]) == set(DEFECT_TYPES.values())
    for r in meta["images"]:  # print-only defects only on printed fabrics
        if {"misprinting", "broken_figures"} & set(r["defect_types"]):
            assert r["family"] in PRINTED_FAMILIES
    # sizes span from a few pixels to a large part of the image
    areas = [(b["bbox"][2] - b["bbox"][0]) * (b["bbox"][3] - b["bbox"][1]) for r in meta["images"] for b in r["boxes"]]
    assert min(areas) <= 60 and max(areas) >= 0.3 * 128 * 96


def _outside_boxes(rec, shape, margin):
    mask = np.ones(shape[:2], bool)
    for b in rec["boxes"]:
        x0, y0, x1, y1 = b["bbox"]
        mask[max(0, y0 - margin):y1 + margin, max(0, x0 - margin):x1 + margin] = False
    return mask


def test_template_equals_image_outside_defects_without_misalignment(tmp_path):
    _gen(tmp_path / "aligned", max_shift=0.0, noise_sigma=1.0, jpeg_quality=98, seed=5, **FLAT_LIGHT)
    _gen(tmp_path / "shifted", max_shift=3.0, noise_sigma=1.0, jpeg_quality=98, seed=5, **FLAT_LIGHT)
    res = {}
    for name in ("aligned", "shifted"):
        root = str(tmp_path / name)
        errs = []
        for rec in _meta(root)["images"]:
            img, tpl = _read_pair(root, rec)
            mask = _outside_boxes(rec, img.shape, 8)
            assert mask.mean() > 0.1 or rec["kind"] == "defect"
            if mask.sum() < 200:
                continue
            d = np.abs(img.astype(np.float32) - tpl.astype(np.float32)).max(axis=2)[mask]
            errs.append((float(d.mean()), float(np.percentile(d, 99))))
        res[name] = np.array(errs)
    a, s = res["aligned"], res["shifted"]
    assert len(a) >= 10
    # noise sigma 1 + JPEG: mean |diff| ~1-2 grey levels, nothing else
    assert a[:, 0].max() < 3.0 and a[:, 1].max() < 12, a
    # the same textures misaligned by up to 3 px differ a lot (so the check above can fail)
    assert np.median(s[:, 0]) > 3 * np.median(a[:, 0])


@pytest.mark.parametrize("max_shift,max_rotation", [(3.0, 0.0), (8.0, 1.0)])
def test_template_misalignment_within_bounds(tmp_path, max_shift, max_rotation):
    _gen(tmp_path, max_shift=max_shift, max_rotation=max_rotation, noise_sigma=1.0, jpeg_quality=98, seed=7,
         width=128, height=96, **FLAT_LIGHT)
    recs = _meta(str(tmp_path))["images"]
    dxy = np.array([(r["shift_dx"], r["shift_dy"]) for r in recs])
    rots = np.array([r["rotation"] for r in recs])
    assert np.abs(dxy).max() <= max_shift and np.abs(dxy).max() > max_shift / 3
    assert np.abs(rots).max() <= max_rotation
    assert (np.abs(rots).max() > 0) == (max_rotation > 0)
    pc_err = []
    for rec in recs:
        img, tpl = _read_pair(str(tmp_path), rec)
        img_f, tpl_f = img.astype(np.float32), tpl.astype(np.float32)
        mask = _outside_boxes(rec, img.shape, 4)
        b = int(max_shift) + 6  # ignore the reflected border
        mask[:b], mask[-b:], mask[:, :b], mask[:, -b:] = False, False, False, False
        # the recorded shift / rotation is the true one: undoing it removes the texture difference
        raw = np.abs(img_f - tpl_f).mean(axis=2)[mask].mean()
        aligned = np.abs(img_f - misalign_template(tpl, rec["shift_dx"], rec["shift_dy"], rec["rotation"])
                         .astype(np.float32)).mean(axis=2)[mask].mean()
        assert aligned < 4.0, (rec["stem"], aligned)
        if abs(rec["shift_dx"]) + abs(rec["shift_dy"]) > 1.5:
            assert aligned < 0.6 * raw, (rec["stem"], aligned, raw)
        if rec["kind"] == "normal" and max_rotation == 0:
            win = cv2.createHanningWindow((img.shape[1], img.shape[0]), cv2.CV_64F)
            g1 = cv2.cvtColor(tpl, cv2.COLOR_BGR2GRAY).astype(np.float64)
            g2 = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float64)
            (sx, sy), _ = cv2.phaseCorrelate(g1, g2, win)
            assert abs(sx) <= max_shift + 0.5 and abs(sy) <= max_shift + 0.5
            pc_err.append(max(abs(sx - rec["shift_dx"]), abs(sy - rec["shift_dy"])))
    if pc_err:
        assert np.median(pc_err) < 0.5, pc_err


def test_integer_shift_and_rotation_zero(tmp_path):
    _gen(tmp_path, max_shift=2.0, subpixel_shift=False)
    recs = _meta(str(tmp_path))["images"]
    assert all(float(r["shift_dx"]).is_integer() and float(r["shift_dy"]).is_integer() for r in recs)
    assert all(r["rotation"] == 0 for r in recs)


@pytest.mark.parametrize("kw,field", [
    (dict(families=("plain_weave", "velvet")), "families"),
    (dict(unseen_families=("tweed",)), "unseen_families"),
    (dict(unseen_families=tuple(TEXTURE_FAMILIES)), "unseen_families"),
    (dict(families=("twill", "knit"), unseen_families=("plaid",)), "unseen_families"),
    (dict(max_shift=-1.0), "max_shift"),
    (dict(max_rotation=45.0), "max_rotation"),
    (dict(images_per_piece=(3, 1)), "images_per_piece"),
    (dict(defect_types=("stained", "scratch")), "defect_types"),
    (dict(defect_types=("misprinting",), families=("twill", "knit", "plaid"), unseen_families=("plaid",)),
     "defect_types"),
    (dict(width=8), "width"),
    (dict(seen_pieces=-1), "seen_pieces"),
    (dict(seed=-3), "seed"),
    (dict(jpeg_quality=10), "jpeg_quality"),
])
def test_bad_config_raises(tmp_path, kw, field):
    with pytest.raises(ValueError, match=field):
        generate_fabric_dataset(str(tmp_path / "x"), SyntheticFabricConfig(**{**TINY, **kw}))
    assert not os.path.exists(tmp_path / "x" / "seen")


def test_refuses_foreign_folder_and_replaces_own_output(tmp_path):
    os.makedirs(tmp_path / "seen" / "mine")
    with pytest.raises(FileExistsError):
        _gen(tmp_path, seen_pieces=1, unseen_pieces=1, seen_normal_pieces=0, unseen_normal_pieces=0)
    assert os.path.isdir(tmp_path / "seen" / "mine")
    os.rmdir(tmp_path / "seen" / "mine")
    os.rmdir(tmp_path / "seen")
    _gen(tmp_path, seed=1)
    first = {k for k in _all_files(str(tmp_path)) if k.endswith(".jpg")}
    _gen(tmp_path, seed=2)  # regenerating replaces the previous output: no stale images remain
    second = {k for k in _all_files(str(tmp_path)) if k.endswith(".jpg")}
    assert first and second and not first & second


def test_preview(tiny, tmp_path):
    root, cfg, _ = tiny
    sheet = make_preview(root, str(tmp_path / "p.png"), n=4)
    assert os.path.isfile(tmp_path / "p.png")
    assert sheet.shape[1] == 3 * cfg.width + 8 and sheet.shape[0] >= 4 * cfg.height


def test_cli(tmp_path):
    out = tmp_path / "cli"
    cmd = [sys.executable, os.path.join(REPO, "tools", "make_synthetic_fabric.py"), "--out", str(out),
           "--seed", "1", "--width", "96", "--height", "64", "--seen-pieces", "3", "--seen-normal-pieces", "1",
           "--unseen-pieces", "2", "--unseen-normal-pieces", "1", "--max-shift", "5", "--unseen-families",
           "knit,satin", "--preview", str(tmp_path / "prev.png"), "--quiet"]
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "seen:" in p.stdout and "unseen_texture:" in p.stdout and "knit, satin" in p.stdout
    assert os.path.isfile(tmp_path / "prev.png")
    meta = _meta(str(out))
    assert meta["config"]["max_shift"] == 5.0 and meta["config"]["unseen_families"] == ["knit", "satin"]
    bad = subprocess.run(cmd[:4] + ["--max-shift", "-2"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "max_shift" in bad.stderr
