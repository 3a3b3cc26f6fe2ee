"""Tianchi -> COCO converter (defect_det/data/tianchi_convert/, tools/convert_tianchi.py) on tiny fake releases."""
import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_util

from defect_det.data.datasets.tianchi_categories import ALUMINUM_CATEGORIES, FABRIC_CATEGORIES
from defect_det.data.tianchi_convert import TianchiFormatError, convert_aluminum, convert_fabric, format_report

from conftest import REPO  # noqa: E402
W, H = 64, 48

DEFECT_STEMS = ["p0_a", "p0_b", "p1_a", "p1_b", "p2_a", "p3_a", "p3_b", "p4_a"]  # 5 pieces share templates
NORMAL_STEMS = ["q0_n", "q1_n", "q2_n"]
# (name, class, [xmin, ymin, xmax, ymax]); Chinese and English class names mixed
ENTRIES = [
    ("p0_a.jpg", "沾污", [1, 2, 11, 22]),             # 0 stained
    ("p0_a.jpg", "knots", [5, 5, 15, 15]),           # 1
    ("p0_b.jpg", "破洞", [50, 30, 70, 60]),           # 2 broken hole, clipped to [50, 30, 64, 48]
    ("p1_a.jpg", "broken hole", [10, 10, 10, 20]),   # 3 degenerate (zero width) -> p1_a has no box left
    ("p1_b.jpg", "其他", [3, 3, 9, 9]),               # 4 others
    ("p1_b.jpg", "其他", [3, 3, 9, 9]),               # 5 exact duplicate of 4
    ("p4_a.jpg", "Water Mark", [20, 20, 30, 40]),    # 6
    ("p3_a.jpg", "缝头", [0, 0, 64, 48]),             # 7 seam allowance, the whole image
    ("p3_b.jpg", "网折", [100, 100, 120, 120]),       # 8 entirely outside -> p3_b has no box left
    ("p4_a.jpg", "色差", [30.5, 10.25, 40.5, 20.25]),  # 9 color shade, float coordinates
]  # p2_a: defect image without annotations
# ENTRIES has problems that stop --strict (entries 3 and 8, p2_a without annotation): only --lenient
# converts it. GOOD_ENTRIES: the same with those fixed (a duplicate and a clipped box are no problems).
GOOD_ENTRIES = [e for i, e in enumerate(ENTRIES) if i not in (3, 8)] + [
    ("p1_a.jpg", "broken hole", [10, 10, 20, 20]),
    ("p3_b.jpg", "网折", [40, 30, 60, 45]),
    ("p2_a.jpg", "knots", [2, 2, 12, 12]),
]


def _img(path, color=(128, 128, 128), size=(W, H)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", size, color).save(path, quality=80)


def make_fabric(root, entries=GOOD_ENTRIES, defect=DEFECT_STEMS, normal=NORMAL_STEMS, anno=True):
    for kind, stems in (("defect", defect), ("normal", normal)):
        for k, stem in enumerate(stems):
            d = os.path.join(root, kind, stem)
            _img(os.path.join(d, stem + ".jpg"), (40 + 10 * k, 90, 120))
            _img(os.path.join(d, f"template_{stem.split('_')[0]}.jpg"), (40, 90, 120))
    if anno:
        write_anno(os.path.join(root, "Annotations", "anno_train.json"), entries)
    return str(root)


def write_anno(path, entries):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    data = [{"name": n, "defect_name": c, "bbox": b} if isinstance(n, str) else n for n, c, b in entries]
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False)
    return path


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def check_identities(rep):
    assert rep["boxes_in"] == rep["boxes_written"] + sum(rep["boxes_dropped"].values())
    assert rep["boxes_written"] == sum(rep["boxes_per_class"].values())
    assert rep["boxes_written"] == sum(rep["boxes_written_per_split"].values())
    assert rep["masks_in"] == rep["masks_written"] + sum(rep["masks_dropped"].values())
    assert rep["masks_written"] == sum(rep["masks_written_per_split"].values())
    found = rep["images_found"]["defect"] + rep["images_found"]["normal"]
    assert found == sum(rep["images_written"].values()) + sum(rep["images_dropped"].values())
    for part, path in rep["outputs"].items():
        coco = load(path)
        assert len(coco["images"]) == rep["images_written"][part]
        assert len(coco["annotations"]) == rep["boxes_written_per_split"][part]
        assert sum("segmentation" in a for a in coco["annotations"]) == rep["masks_written_per_split"][part]


def by_name(coco):
    return {os.path.basename(im["file_name"]): im for im in coco["images"]}


# ------------------------------------------------------------------------------------------------
# fabric round trip


def test_fabric_round_trip(tmp_path):
    root = make_fabric(tmp_path / "release", entries=ENTRIES)
    out = tmp_path / "out"
    rep = convert_fabric([root], str(out), test_size=4, seed=0, strict=False, verbose=False)
    check_identities(rep)
    assert rep["images_found"] == {"defect": 8, "normal": 3}
    assert rep["boxes_in"] == 10 and rep["boxes_written"] == 7
    assert dict(rep["boxes_dropped"]) == {"degenerate": 1, "outside_image": 1, "duplicate": 1}
    assert rep["boxes_clipped"] == 1
    assert rep["masks_in"] == rep["masks_written"] == 0 and not rep["masks_dropped"]  # box-only input
    assert rep["issues"]["defect_image_without_annotations"] == 1  # p2_a
    assert rep["issues"]["defect_image_all_boxes_dropped"] == 2  # p1_a, p3_b
    assert rep["images_written"] == {"train": 7, "test": 4}
    assert rep["boxes_per_class"]["stained"] == 1 and rep["boxes_per_class"]["others"] == 1
    assert rep["boxes_per_class"]["insect"] == 0 and len(rep["boxes_per_class"]) == 15
    assert set(os.listdir(out)) == {"fabric_train.json", "fabric_test.json"}

    train, test = load(out / "fabric_train.json"), load(out / "fabric_test.json")
    for coco, part in ((train, "train"), (test, "test")):
        assert coco["categories"] == [{"id": i + 1, "name": en, "name_zh": zh}
                                      for i, (en, zh) in enumerate(FABRIC_CATEGORIES)]
        assert coco["info"]["split"] == part and coco["info"]["seed"] == 0
        assert coco["info"]["source_roots"] == [os.path.abspath(root)]
        assert coco["info"]["converter_version"]
        ids = {im["id"] for im in coco["images"]}
        assert all(a["image_id"] in ids for a in coco["annotations"])
        for im in coco["images"]:
            assert set(im) == {"id", "file_name", "height", "width", "template_file_name", "is_normal"}
            assert (im["width"], im["height"]) == (W, H)
            assert not os.path.isabs(im["file_name"]) and im["file_name"].startswith(("defect/", "normal/"))
            assert os.path.isfile(os.path.join(root, im["file_name"]))  # image root = the single root
            t = os.path.join(root, im["template_file_name"])
            assert os.path.isfile(t)
            stem = os.path.splitext(os.path.basename(im["file_name"]))[0]
            assert os.path.basename(t) == f"template_{stem.split('_')[0]}.jpg"
            assert os.path.dirname(t) == os.path.dirname(os.path.join(root, im["file_name"]))
        for a in coco["annotations"]:
            assert set(a) == {"id", "image_id", "category_id", "bbox", "area", "iscrowd"}
            assert a["iscrowd"] == 0 and all(isinstance(v, float) for v in a["bbox"])
            assert a["area"] == pytest.approx(a["bbox"][2] * a["bbox"][3]) and a["area"] > 0

    # split: disjoint, covers everything, unique ids across files
    tr, te = by_name(train), by_name(test)
    assert not set(tr) & set(te)
    assert set(tr) | set(te) == {s + ".jpg" for s in DEFECT_STEMS + NORMAL_STEMS}
    assert len({im["id"] for im in train["images"] + test["images"]}) == 11
    assert len({a["id"] for a in train["annotations"] + test["annotations"]}) == 7

    images = {**tr, **te}
    anns = {}
    for a in train["annotations"] + test["annotations"]:
        anns.setdefault(a["image_id"], []).append((a["category_id"], a["bbox"]))
    for s in NORMAL_STEMS:
        im = images[s + ".jpg"]
        assert im["is_normal"] is True and im["id"] not in anns
    for s in DEFECT_STEMS:
        assert images[s + ".jpg"]["is_normal"] is False
    cid = {en: i + 1 for i, (en, _) in enumerate(FABRIC_CATEGORIES)}
    box = lambda s: sorted(anns.get(images[s + ".jpg"]["id"], []))  # noqa: E731
    assert box("p0_a") == sorted([(cid["stained"], [1.0, 2.0, 10.0, 20.0]), (cid["knots"], [5.0, 5.0, 10.0, 10.0])])
    assert box("p0_b") == [(cid["broken hole"], [50.0, 30.0, 14.0, 18.0])]  # clipped
    assert box("p1_a") == [] and box("p3_b") == [] and box("p2_a") == []  # kept, no boxes
    assert box("p1_b") == [(cid["others"], [3.0, 3.0, 6.0, 6.0])]  # duplicate dropped
    assert box("p3_a") == [(cid["seam allowance"], [0.0, 0.0, 64.0, 48.0])]
    assert box("p4_a") == sorted([(cid["water mark"], [20.0, 20.0, 10.0, 20.0]),
                                  (cid["color shade"], [30.5, 10.25, 10.0, 10.0])])


def _rle(x0, y0, x1, y1, size=(H, W), hole=True):
    """COCO compressed RLE (counts str) of a rectangle with a hole (not its own box filled)."""
    m = np.zeros(size, np.uint8)
    m[y0:y1, x0:x1] = 1
    if hole:
        m[y0 + 1:y1 - 1, x0 + 1:x1 - 1] = 0
    rle = mask_util.encode(np.asfortranarray(m))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _with_masks(masks):
    """ENTRIES with a "segmentation" added to the entries named by index."""
    return [({"name": n, "defect_name": c, "bbox": b, "segmentation": masks[i]} if i in masks else n, c, b)
            for i, (n, c, b) in enumerate(ENTRIES)]


UNCOMPRESSED = {"size": [H, W], "counts": [0, W * H]}  # every pixel foreground, counts as a list
MASKS = {
    0: _rle(1, 2, 11, 22),                       # RLE, written
    1: [[5, 5, 15, 5, 15, 15]],                  # polygon, written (coordinates as floats)
    2: _rle(50, 30, 64, 48),                     # box clipped: mask kept unchanged, counted
    3: _rle(10, 10, 12, 20),                     # degenerate box dropped: its mask with it
    5: _rle(3, 3, 9, 9),                         # duplicate box dropped: its mask with it
    6: _rle(0, 0, 0, 0),                         # empty mask: dropped, box kept
    7: UNCOMPRESSED,                             # uncompressed RLE, written
    9: [[31, 11, 35, 11, 39, 11]],               # zero-area polygon: empty, dropped, box kept
}


def test_fabric_masks_round_trip(tmp_path):
    root = make_fabric(tmp_path / "release", entries=_with_masks(MASKS))
    out = tmp_path / "out"
    rep = convert_fabric([root], str(out), test_size=4, seed=0, strict=False, verbose=False)
    check_identities(rep)
    assert rep["boxes_in"] == 10 and rep["boxes_written"] == 7  # masks change no box
    assert rep["masks_in"] == 8 and rep["masks_written"] == 4
    assert dict(rep["masks_dropped"]) == {"empty_mask": 2, "mask_of_dropped_box": 2}
    assert rep["issues"]["mask_of_clipped_box"] == 1
    text = format_report(rep)
    assert "masks in: 8; annotations written with a mask: 4 of 7" in text and "[empty_mask]" in text

    from pycocotools.coco import COCO

    cid = {en: i + 1 for i, (en, _) in enumerate(FABRIC_CATEGORIES)}
    written = {}
    for part in ("train", "test"):
        coco = COCO(str(out / f"fabric_{part}.json"))  # the COCO API reads (and rasterises) them
        names = {im["id"]: os.path.basename(im["file_name"]) for im in coco.dataset["images"]}
        for a in coco.dataset["annotations"]:
            if "segmentation" in a:
                written[(names[a["image_id"]], a["category_id"])] = a["segmentation"]
                m = coco.annToMask(a)
                assert m.shape == (H, W) and m.sum() > 0
    assert written == {
        ("p0_a.jpg", cid["stained"]): MASKS[0],
        ("p0_a.jpg", cid["knots"]): [[5.0, 5.0, 15.0, 5.0, 15.0, 15.0]],
        ("p0_b.jpg", cid["broken hole"]): MASKS[2],
        ("p3_a.jpg", cid["seam allowance"]): UNCOMPRESSED,
    }


def _split_of(out):
    return tuple(sorted(im["file_name"] for im in load(os.path.join(out, "fabric_test.json"))["images"]))


def test_fabric_split_deterministic_and_listing_order_independent(tmp_path, monkeypatch):
    root = make_fabric(tmp_path / "release")
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    convert_fabric(root, a, test_size=4, seed=0, verbose=False)
    convert_fabric(root, b, test_size=4, seed=0, verbose=False)
    for f in ("fabric_train.json", "fabric_test.json"):
        assert load(os.path.join(a, f)) == load(os.path.join(b, f))

    # reversed file-system listing + shuffled annotation entries: same output
    real_walk, real_listdir = os.walk, os.listdir

    def reversed_walk(top, *args, **kw):
        for dirpath, dirnames, filenames in real_walk(top, *args, **kw):
            dirnames.reverse()
            yield dirpath, dirnames, filenames[::-1]

    monkeypatch.setattr(os, "walk", reversed_walk)
    monkeypatch.setattr(os, "listdir", lambda p=".": real_listdir(p)[::-1])
    shuffled = list(GOOD_ENTRIES)
    random.Random(3).shuffle(shuffled)
    write_anno(os.path.join(root, "Annotations", "anno_train.json"), shuffled)
    c = str(tmp_path / "c")
    convert_fabric(root, c, test_size=4, seed=0, verbose=False)
    monkeypatch.undo()
    for f in ("fabric_train.json", "fabric_test.json"):
        ja, jc = load(os.path.join(a, f)), load(os.path.join(c, f))
        assert ja["images"] == jc["images"] and ja["annotations"] == jc["annotations"]

    # the seed matters
    splits = set()
    for seed in range(6):
        out = str(tmp_path / f"s{seed}")
        convert_fabric(root, out, test_size=4, seed=seed, verbose=False)
        splits.add(_split_of(out))
    assert len(splits) > 1


def test_fabric_val_split_carved_from_train_test_unchanged(tmp_path):
    root = make_fabric(tmp_path / "release")
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    convert_fabric(root, a, test_size=3, seed=0, verbose=False)
    rep = convert_fabric(root, b, test_size=3, val_size=2, seed=0, verbose=False)
    names = lambda out, part: [im["file_name"] for im in load(os.path.join(out, f"fabric_{part}.json"))["images"]]
    assert names(a, "test") == names(b, "test")  # adding a validation split never moves a test image
    assert not os.path.exists(os.path.join(a, "fabric_val.json"))
    val, train = names(b, "val"), names(b, "train")
    assert len(val) == 2 and sorted(train + val) == sorted(names(a, "train"))
    assert rep["images_written"]["val"] == 2
    assert load(os.path.join(b, "fabric_val.json"))["info"]["val_size"] == 2
    n = len(names(a, "train")) + 3
    with pytest.raises(ValueError, match=f"test_size 3 \\+ val_size {n - 3} >= number of images {n}"):
        convert_fabric(root, str(tmp_path / "c"), test_size=3, val_size=n - 3, verbose=False)
    with pytest.raises(ValueError, match="val_size must be a non-negative integer"):
        convert_fabric(root, str(tmp_path / "d"), test_size=3, val_size=-1, verbose=False)


def test_fabric_multi_root_no_split_and_image_root(tmp_path):
    # part 1: images only; part 2: images + the annotations of both parts (as in the real release)
    p1 = make_fabric(tmp_path / "data" / "part1", defect=["p0_a", "p0_b", "p1_a"], normal=["q0_n"], anno=False)
    p2 = make_fabric(tmp_path / "data" / "part2", entries=ENTRIES,
                     defect=["p1_b", "p2_a", "p3_a", "p3_b", "p4_a"], normal=["q1_n", "q2_n"])
    out = tmp_path / "data" / "annotations"
    rep = convert_fabric([p2, p1], str(out), split=False, prefix="fab", strict=False, verbose=False)
    check_identities(rep)
    assert rep["boxes_written"] == 7 and rep["images_written"] == {"all": 11}
    coco = load(out / "fab.json")
    assert coco["info"]["split"] == "all"
    names = sorted(im["file_name"] for im in coco["images"])
    assert names[0] == "part1/defect/p0_a/p0_a.jpg"  # relative to the common parent of the roots
    for im in coco["images"]:
        assert os.path.isfile(tmp_path / "data" / im["template_file_name"])

    with pytest.raises(TianchiFormatError, match="not under the image root"):
        convert_fabric([p1, p2], str(out), split=False, image_root=p1, verbose=False)
    with pytest.raises(ValueError, match="test_size 11 >= number of images 11"):
        convert_fabric([p1, p2], str(out), test_size=11, strict=False, verbose=False)


# ------------------------------------------------------------------------------------------------
# aluminum round trip


def _labelme(path, shapes, size=(W, H)):
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"shapes": [{"label": lab, "points": pts, "shape_type": "polygon"} for lab, pts in shapes],
                   "imageWidth": size[0], "imageHeight": size[1], "imagePath": os.path.basename(path)[:-5] + ".jpg"},
                  f, ensure_ascii=False)


def make_aluminum(root):
    def defect(rel, shapes):
        p = os.path.join(root, rel)
        _img(p)
        _labelme(os.path.splitext(p)[0] + ".json", shapes)

    defect("单瑕疵图片/擦花/a1.jpg", [("擦花", [[5, 6], [25, 6], [25, 16], [5, 16]])])
    defect("单瑕疵图片/起坑/a2.jpg", [("pit", [[40, 30], [50, 44]])])
    defect("多瑕疵图片/m1.jpg", [("脏点", [[1, 1], [3, 1], [3, 4], [1, 4]]),
                              ("orange peel", [[10, 10], [70, 20], [30, 50], [10, 50]])])  # clipped
    for rel in ("无瑕疵样本/n1.jpg", "无瑕疵样本/n2.jpg", "Normal_extra/n3.jpg"):
        _img(os.path.join(root, rel))
    with open(os.path.join(root, "readme.json"), "w") as f:
        json.dump({"note": "not LabelMe"}, f)
    return str(root)


def test_aluminum_round_trip(tmp_path):
    root = make_aluminum(tmp_path / "alu")
    out = tmp_path / "alu" / "annotations"  # inside the root: must not be walked
    rep = convert_aluminum([root], str(out), test_size=2, seed=1, verbose=False)
    check_identities(rep)
    assert rep["images_found"] == {"defect": 3, "normal": 3}
    assert rep["boxes_in"] == 4 and rep["boxes_written"] == 4 and rep["boxes_clipped"] == 1
    assert rep["issues"]["unrelated_json_ignored"] == 1
    assert rep["images_written"] == {"train": 4, "test": 2}
    tr, te = load(out / "aluminum_train.json"), load(out / "aluminum_test.json")
    assert tr["categories"] == [{"id": i + 1, "name": en, "name_zh": zh}
                                for i, (en, zh) in enumerate(ALUMINUM_CATEGORIES)]
    images = {**by_name(tr), **by_name(te)}
    assert len(images) == 6
    for im in images.values():
        assert "template_file_name" not in im
        assert os.path.isfile(os.path.join(root, im["file_name"]))
        assert im["is_normal"] == im["file_name"].startswith(("无瑕疵样本/", "Normal_extra/"))
    cid = {en: i + 1 for i, (en, _) in enumerate(ALUMINUM_CATEGORIES)}
    anns = {}
    for a in tr["annotations"] + te["annotations"]:
        anns.setdefault(a["image_id"], []).append((a["category_id"], a["bbox"]))
    assert anns[images["a1.jpg"]["id"]] == [(cid["abrasion mark"], [5.0, 6.0, 20.0, 10.0])]
    assert anns[images["a2.jpg"]["id"]] == [(cid["pit"], [40.0, 30.0, 10.0, 14.0])]
    assert sorted(anns[images["m1.jpg"]["id"]]) == sorted(
        [(cid["dirty spot"], [1.0, 1.0, 2.0, 3.0]), (cid["orange peel"], [10.0, 10.0, 54.0, 38.0])])
    for n in ("n1.jpg", "n2.jpg", "n3.jpg"):
        assert images[n]["id"] not in anns


# ------------------------------------------------------------------------------------------------
# bad input: strict raises naming file + entry, lenient skips and counts


def _extra(root, text):
    p = os.path.join(root, "Annotations", "extra.json")
    with open(p, "w", encoding="utf-8") as f:
        f.write(text)
    return p


def _append(root, entry):
    p = os.path.join(root, "Annotations", "anno_train.json")
    data = load(p) + [entry]
    with open(p, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False)
    return p


def _remove(path):
    os.remove(path)
    return path


def _garbage(path):
    with open(path, "wb") as f:
        f.write(b"this is not an image")
    return path


N = len(GOOD_ENTRIES)  # index of an appended entry
BASE_DROPS = 1  # GOOD_ENTRIES: one exact duplicate, dropped and counted in both modes (no problem)


def _noisy_jpeg(path, size=(W, H)):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path, quality=95)


def _truncate(path):
    """Replace ``path`` by the first 60% of a noisy JPEG: the header reads, the pixels do not."""
    _noisy_jpeg(path)
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: int(len(data) * 0.6)])
    return path


def _without_entries_of(root, image):
    """Rewrite the annotation file without the entries of ``image``; returns that image's path."""
    write_anno(os.path.join(root, "Annotations", "anno_train.json"), [e for e in GOOD_ENTRIES if e[0] != image])
    stem = os.path.splitext(image)[0]
    return os.path.join(root, "defect", stem, image)


def _resized_template(root, stem, size):
    d = os.path.join(root, "defect", stem)
    _img(os.path.join(d, f"template_{stem.split('_')[0]}.jpg"), size=size)
    return os.path.join(d, stem + ".jpg")


def _entry(name, bbox, cls="沾污"):
    return {"name": name, "defect_name": cls, "bbox": bbox}


FABRIC_CASES = {
    # case: (mutate(root) -> file named in the error, reason, words in the message, lenient box drops,
    #        lenient image drops)
    "missing_key": (lambda r: _append(r, {"name": "p0_a.jpg", "defect_name": "沾污"}), "missing_key",
                    [f"entry {N} (p0_a.jpg)", "bbox"], 1, 0),
    "bbox_length": (lambda r: _append(r, _entry("p0_a.jpg", [1, 2, 3])),
                    "bad_bbox", [f"entry {N} (p0_a.jpg)", "4 numbers"], 1, 0),
    "bbox_non_numeric": (lambda r: _append(r, _entry("p0_b.jpg", [1, "2", 3, 4])),
                         "bad_bbox", [f"entry {N} (p0_b.jpg)", "non-numeric"], 1, 0),
    "unknown_class": (lambda r: _append(r, _entry("p0_a.jpg", [1, 2, 3, 4], "scratch")),
                      "unknown_class", [f"entry {N} (p0_a.jpg)", "'scratch'"], 1, 0),
    "missing_image": (lambda r: _append(r, _entry("zz_9.jpg", [1, 2, 3, 4])),
                      "image_not_found", [f"entry {N} (zz_9.jpg)", "not found"], 1, 0),
    # geometry: x2 < x1, zero height, entirely outside the 64x48 image
    "box_x2_before_x1": (lambda r: _append(r, _entry("p0_a.jpg", [20, 5, 10, 15])), "degenerate",
                         [f"entry {N} (p0_a.jpg)", "degenerate box [20, 5, 10, 15]", "p0_a.jpg"], 1, 0),
    "box_zero_height": (lambda r: _append(r, _entry("p0_b.jpg", [1, 7, 30, 7])), "degenerate",
                        [f"entry {N} (p0_b.jpg)", "degenerate box [1, 7, 30, 7]"], 1, 0),
    "box_outside_image": (lambda r: _append(r, _entry("p0_a.jpg", [100, 100, 120, 120])), "outside_image",
                          [f"entry {N} (p0_a.jpg)", "entirely outside", "64x48"], 1, 0),
    "empty_annotation_list": (lambda r: _extra(r, "[]"), "annotation_file_empty", ["empty list"], 0, 0),
    "defect_image_without_annotation": (lambda r: _without_entries_of(r, "p2_a.jpg"),
                                        "defect_image_without_annotations",
                                        ["without any annotation entry", "defect-free"], 0, 0),
    "missing_template": (lambda r: (_remove(os.path.join(r, "defect", "p4_a", "template_p4.jpg")),
                                    os.path.join(r, "defect", "p4_a", "p4_a.jpg"))[1],
                         "missing_template", ["template_p4.jpg"], 2, 1),  # p4_a's 2 boxes go with it
    "missing_normal_template": (lambda r: (_remove(os.path.join(r, "normal", "q1_n", "template_q1.jpg")),
                                           os.path.join(r, "normal", "q1_n", "q1_n.jpg"))[1],
                                "missing_template", ["template_q1.jpg"], 0, 1),
    "unreadable_image": (lambda r: _garbage(os.path.join(r, "defect", "p2_a", "p2_a.jpg")),
                         "unreadable_image", ["unreadable image"], 1, 1),
    # the header reads, the pixels do not (training would die in a loader worker)
    "truncated_image": (lambda r: _truncate(os.path.join(r, "defect", "p2_a", "p2_a.jpg")),
                        "unreadable_image", ["unreadable image", "image file is truncated"], 1, 1),
    "truncated_template": (lambda r: _truncate(os.path.join(r, "normal", "q2_n", "template_q2.jpg")),
                           "unreadable_image", ["unreadable template", "image file is truncated"], 0, 1),
    "template_other_size": (lambda r: _resized_template(r, "p3_a", (60, 48)), "template_size_mismatch",
                            ["template_p3.jpg", "is 60x48 but the image is 64x48"], 1, 1),
    # bad masks: strict names file + entry; lenient drops the mask (counted) and keeps the box
    "mask_wrong_size": (lambda r: _append(r, {"name": "p0_a.jpg", "defect_name": "沾污", "bbox": [1, 2, 3, 4],
                                              "segmentation": _rle(1, 2, 3, 4, size=(W, H))}),
                        "bad_mask", [f"entry {N} (p0_a.jpg)", f"[{W}, {H}]", f"image size [{H}, {W}]"], 0, 0),
    "mask_garbage_counts": (lambda r: _append(r, {"name": "p0_a.jpg", "defect_name": "沾污", "bbox": [1, 2, 3, 4],
                                                  "segmentation": {"size": [H, W], "counts": "not RLE ~~"}}),
                            "bad_mask", [f"entry {N} (p0_a.jpg)", "not a COCO compressed RLE string"], 0, 0),
    "mask_counts_wrong_total": (lambda r: _append(r, {"name": "p0_a.jpg", "defect_name": "沾污", "bbox": [1, 2, 3, 4],
                                                      "segmentation": dict(_rle(1, 2, 3, 4, size=(10, 10)),
                                                                           size=[H, W])}),
                                "bad_mask", [f"entry {N} (p0_a.jpg)", "decode to 100 pixels"], 0, 0),
    "mask_short_polygon": (lambda r: _append(r, {"name": "p0_a.jpg", "defect_name": "沾污", "bbox": [1, 2, 3, 4],
                                                 "segmentation": [[1, 2, 3, 4]]}),
                           "bad_mask", [f"entry {N} (p0_a.jpg)", "polygon 0", ">= 6 numbers"], 0, 0),
    # a box dropped for its own problem takes its (valid) mask with it
    "unknown_class_with_mask": (lambda r: _append(r, {"name": "p0_a.jpg", "defect_name": "scratch",
                                                      "bbox": [1, 2, 3, 4], "segmentation": _rle(1, 2, 3, 4)}),
                                "unknown_class", [f"entry {N} (p0_a.jpg)", "'scratch'"], 1, 0),
}
PREVIOUS = {"fabric_train.json": '{"previous": "train"}', "fabric_test.json": '{"previous": "test"}'}


def _previous_outputs(out):
    """An output folder holding the outputs of an earlier conversion (returned for comparison)."""
    os.makedirs(out, exist_ok=True)
    for name, text in PREVIOUS.items():
        with open(os.path.join(out, name), "w") as f:
            f.write(text)
    return _listing(out)


def _listing(out):
    return {name: open(os.path.join(out, name)).read() for name in sorted(os.listdir(out))}


def test_good_entries_convert_in_strict_mode(tmp_path):
    rep = convert_fabric(make_fabric(tmp_path / "release"), str(tmp_path / "out"), test_size=3, verbose=False)
    check_identities(rep)
    assert rep["boxes_in"] == N and rep["boxes_dropped"] == {"duplicate": BASE_DROPS}
    assert not rep["images_dropped"] and sum(rep["images_written"].values()) == 11


@pytest.mark.parametrize("case", sorted(FABRIC_CASES))
def test_fabric_bad_input(tmp_path, case, run_cli):
    mutate, reason, words, dropped, images_dropped = FABRIC_CASES[case]
    root = make_fabric(tmp_path / "release")
    bad_file = mutate(root)
    previous = _previous_outputs(tmp_path / "strict")
    with pytest.raises(TianchiFormatError) as ei:
        convert_fabric(root, str(tmp_path / "strict"), test_size=3, verbose=False)
    assert ei.value.reason == reason
    # the command line (strict is its default): the documented error line, exit code 2
    rc, _, err = run_cli("fabric", "--root", root, "--out-dir", tmp_path / "strict", "--test-size", 3)
    assert rc == 2 and err.startswith(f"error: {os.path.abspath(bad_file)}:"), err
    assert str(ei.value) in err
    for w in words:
        assert w in err, (w, err)
    assert _listing(tmp_path / "strict") == previous  # nothing written on failure, earlier outputs kept

    rep = convert_fabric(root, str(tmp_path / "lenient"), test_size=3, strict=False, verbose=False)
    check_identities(rep)
    assert rep["mode"] == "lenient"
    assert rep["issues"][reason] == 1 and rep["examples"][reason]
    assert os.path.abspath(bad_file) in rep["examples"][reason][0]
    assert sum(rep["boxes_dropped"].values()) == BASE_DROPS + dropped
    assert sum(rep["images_dropped"].values()) == images_dropped
    if images_dropped:
        assert rep["images_dropped"][reason] == 1
    assert sum(rep["images_written"].values()) == 11 - images_dropped
    if case == "missing_template":
        assert rep["boxes_dropped"]["image_dropped"] == 2
    if reason == "bad_mask":  # the box is written without its mask
        assert rep["boxes_written"] == N + 1 - BASE_DROPS and rep["masks_in"] == 1 and rep["masks_written"] == 0
        assert rep["masks_dropped"] == {"bad_mask": 1}
    if case == "unknown_class_with_mask":
        assert rep["masks_in"] == 1 and rep["masks_dropped"] == {"mask_of_dropped_box": 1}
    if case == "defect_image_without_annotation":  # kept, as a defect image without boxes (counted)
        p2_a = by_name({"images": [im for p in rep["outputs"].values() for im in load(p)["images"]]})["p2_a.jpg"]
        assert p2_a["is_normal"] is False


FATAL_CASES = {
    # an annotation file that cannot be read would unlabel every image: an error in both modes
    "malformed_json": (lambda r: _extra(r, '[{"name": "p0_a.jpg", "bbox": [1, 2'), "annotation_file_malformed",
                       ["malformed JSON", "line 1 column", "also with --lenient"]),
    "dict_not_list": (lambda r: _extra(r, '{"name": "p0_a.jpg"}'), "annotation_file_not_list",
                      ["top level is a JSON dict", "expected a list"]),
    "not_utf8": (lambda r: (open(os.path.join(r, "Annotations", "extra.json"), "wb").write(b"[\xff\xfe]"),
                            os.path.join(r, "Annotations", "extra.json"))[1],
                 "annotation_file_malformed", ["cannot read the annotation file"]),
}


@pytest.mark.parametrize("case", sorted(FATAL_CASES))
@pytest.mark.parametrize("strict", [True, False], ids=["strict", "lenient"])
def test_fabric_unreadable_annotation_file_is_an_error_in_both_modes(tmp_path, case, strict, run_cli):
    mutate, reason, words = FATAL_CASES[case]
    root = make_fabric(tmp_path / "release")
    bad_file = mutate(root)
    previous = _previous_outputs(tmp_path / "out")
    with pytest.raises(TianchiFormatError) as ei:
        convert_fabric(root, str(tmp_path / "out"), test_size=3, strict=strict, verbose=False)
    assert ei.value.reason == reason
    rc, _, err = run_cli("fabric", "--root", root, "--out-dir", tmp_path / "out", "--test-size", 3,
                         "--strict" if strict else "--lenient")
    assert rc == 2 and err.startswith(f"error: {os.path.abspath(bad_file)}:"), err
    for w in words:
        assert w in err, (w, err)
    assert _listing(tmp_path / "out") == previous


ALU_CASES = {
    "no_json_outside_normal_folder": (
        lambda r: _remove(os.path.join(r, "单瑕疵图片", "擦花", "a1.json")) and os.path.join(r, "单瑕疵图片", "擦花", "a1.jpg"),
        "missing_annotation", ["no LabelMe JSON"], 0),
    "shape_one_point": (
        lambda r: (_labelme(os.path.join(r, "多瑕疵图片", "m1.json"), [("脏点", [[1, 1]]), ("桔皮", [[2, 2], [9, 9]])]),
                   os.path.join(r, "多瑕疵图片", "m1.json"))[1],
        "bad_points", ["entry 0 (脏点)", ">= 2"], 1),
    "unknown_label": (
        lambda r: (_labelme(os.path.join(r, "多瑕疵图片", "m1.json"), [("脏点", [[1, 1], [3, 3]]), ("rust", [[2, 2], [9, 9]])]),
                   os.path.join(r, "多瑕疵图片", "m1.json"))[1],
        "unknown_class", ["entry 1 (rust)", "unknown class"], 1),
    "malformed_labelme": (  # one image's own file: that image is dropped (lenient), the others keep their labels
        lambda r: (open(os.path.join(r, "多瑕疵图片", "m1.json"), "w").write("{"), os.path.join(r, "多瑕疵图片", "m1.json"))[1],
        "bad_annotation_file", ["malformed JSON"], 0),
    "shape_zero_width": (
        lambda r: (_labelme(os.path.join(r, "多瑕疵图片", "m1.json"), [("脏点", [[1, 1], [3, 3]]), ("桔皮", [[5, 2], [5, 9]])]),
                   os.path.join(r, "多瑕疵图片", "m1.json"))[1],
        "degenerate", ["entry 1 (桔皮)", "degenerate box [5, 2, 5, 9]"], 1),
    "shape_outside_image": (
        lambda r: (_labelme(os.path.join(r, "多瑕疵图片", "m1.json"), [("脏点", [[1, 1], [3, 3]]), ("桔皮", [[70, 2], [90, 9]])]),
                   os.path.join(r, "多瑕疵图片", "m1.json"))[1],
        "outside_image", ["entry 1 (桔皮)", "entirely outside"], 1),
    "labelme_without_shapes": (
        lambda r: (_labelme(os.path.join(r, "多瑕疵图片", "m1.json"), []), os.path.join(r, "多瑕疵图片", "m1.json"))[1],
        "defect_image_without_annotations", ["without shapes", "m1.jpg", "defect-free"], 0),
    "truncated_image": (lambda r: _truncate(os.path.join(r, "单瑕疵图片", "起坑", "a2.jpg")), "unreadable_image",
                        ["image file is truncated"], 1),
}


@pytest.mark.parametrize("case", sorted(ALU_CASES))
def test_aluminum_bad_input(tmp_path, case, run_cli):
    mutate, reason, words, dropped = ALU_CASES[case]
    root = make_aluminum(tmp_path / "alu")
    bad_file = mutate(root)
    previous = _previous_outputs(tmp_path / "strict")
    with pytest.raises(TianchiFormatError) as ei:
        convert_aluminum(root, str(tmp_path / "strict"), split=False, verbose=False)
    assert ei.value.reason == reason
    rc, _, err = run_cli("aluminum", "--root", root, "--out-dir", tmp_path / "strict", "--no-split")
    assert rc == 2 and err.startswith(f"error: {os.path.abspath(bad_file)}:"), err
    for w in words:
        assert w in err, (w, err)
    assert _listing(tmp_path / "strict") == previous
    rep = convert_aluminum(root, str(tmp_path / "lenient"), split=False, strict=False, verbose=False)
    check_identities(rep)
    assert rep["issues"][reason] == 1
    assert sum(rep["boxes_dropped"].values()) == dropped


def test_aluminum_labelme_without_image(tmp_path):
    root = make_aluminum(tmp_path / "alu")
    orphan = os.path.join(root, "多瑕疵图片", "gone.json")
    _labelme(orphan, [("脏点", [[1, 1], [3, 3]]), ("桔皮", [[2, 2], [9, 9]])])
    with pytest.raises(TianchiFormatError, match="gone.jpg"):
        convert_aluminum(root, str(tmp_path / "o"), split=False, verbose=False)
    rep = convert_aluminum(root, str(tmp_path / "o"), split=False, strict=False, verbose=False)
    check_identities(rep)
    assert rep["boxes_in"] == 6 and rep["boxes_dropped"] == {"image_not_found": 2}


# ------------------------------------------------------------------------------------------------
# CLI


def _cli(*args):
    return subprocess.run([sys.executable, os.path.join("tools", "convert_tianchi.py"), *map(str, args)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def cli_main():
    """``main(argv)`` of tools/convert_tianchi.py (defect_det.data.tianchi_convert.cli), in this process
    (no interpreter start per call)."""
    from defect_det.data.tianchi_convert.cli import main

    return main


@pytest.fixture
def run_cli(cli_main, capsys):
    """``run_cli(*args)`` -> (exit code, stdout, stderr) of the converter's command line, in process;
    an exception escaping ``main`` (a traceback for the user) fails the test."""
    def run(*args):
        rc = cli_main([str(a) for a in args])
        out, err = capsys.readouterr()
        return rc, out, err
    return run


def test_cli(tmp_path):
    root = make_fabric(tmp_path / "release")
    out = tmp_path / "out"
    ok = _cli("fabric", "--root", root, "--out-dir", out, "--test-size", 3, "--seed", 5)
    assert ok.returncode == 0, ok.stderr
    assert f"boxes in: {N}" in ok.stdout and f"boxes written: {N - 1}" in ok.stdout
    assert "images found: 11 (defect 8, normal 3)" in ok.stdout
    assert "train 8" in ok.stdout and "test 3" in ok.stdout and "[duplicate]" in ok.stdout
    assert f"masks in: 0; annotations written with a mask: 0 of {N - 1}" in ok.stdout
    assert len(load(out / "fabric_test.json")["images"]) == 3

    anno = _append(root, {"name": "p0_a.jpg", "defect_name": "scratch", "bbox": [1, 2, 3, 4]})
    bad = _cli("fabric", "--root", root, "--anno", anno, "--out-dir", tmp_path / "bad", "--no-split")
    assert bad.returncode == 2
    assert f"error: {os.path.abspath(anno)}: entry {N} (p0_a.jpg): unknown class 'scratch'" in bad.stderr
    assert not os.path.exists(tmp_path / "bad")

    lenient = _cli("fabric", "--root", root, "--anno", anno, "--out-dir", tmp_path / "len", "--no-split",
                   "--lenient", "--prefix", "x")
    assert lenient.returncode == 0, lenient.stderr
    assert f"boxes in: {N + 1}" in lenient.stdout and "[unknown_class]" in lenient.stdout
    assert os.path.isfile(tmp_path / "len" / "x.json")


def test_cli_strict_stops_on_unusable_labels_lenient_counts_them(tmp_path, run_cli):
    """The labels a new user gets wrong first: exit 2 and the file + entry named (strict), counted (lenient)."""
    root = make_fabric(tmp_path / "release")
    out = tmp_path / "out"
    before = _previous_outputs(out)
    anno = _append(root, _entry("p1_b.jpg", [30, 20, 10, 40]))  # x2 < x1
    rc, _, err = run_cli("fabric", "--root", root, "--out-dir", out, "--test-size", 3)
    assert rc == 2 and err.startswith(f"error: {os.path.abspath(anno)}: entry {N} (p1_b.jpg): degenerate box "
                                      "[30, 20, 10, 40]"), err
    assert _listing(out) == before
    rc, stdout, err = run_cli("fabric", "--root", root, "--out-dir", out, "--test-size", 3, "--lenient")
    assert rc == 0, err
    assert "1  degenerate boxes dropped" in stdout and "[degenerate]" in stdout
    assert set(os.listdir(out)) == {"fabric_train.json", "fabric_test.json"}

    empty = _extra(root, "[]")
    rc, _, err = run_cli("fabric", "--root", root, "--anno", empty, "--out-dir", out, "--test-size", 3)
    assert rc == 2 and err.startswith(f"error: {os.path.abspath(empty)}: the annotation file holds an empty list"), err
    with open(empty, "w") as f:
        f.write('{"images": []}')  # a COCO file given as the annotation list
    for mode in ("--strict", "--lenient"):
        rc, _, err = run_cli("fabric", "--root", root, "--anno", empty, "--out-dir", out, "--test-size", 3, mode)
        assert rc == 2 and f"error: {os.path.abspath(empty)}: top level is a JSON dict" in err


# ------------------------------------------------------------------------------------------------
# outputs: all or nothing


def test_outputs_all_or_nothing_when_the_disk_fills(tmp_path, monkeypatch, run_cli):
    import errno

    from defect_det.data.tianchi_convert import writer

    root = make_fabric(tmp_path / "release")
    out = str(tmp_path / "out")
    convert_fabric(root, out, test_size=3, seed=0, verbose=False)
    before = _listing(out)
    real_dump, calls = writer._dump_json, []

    def dump_until_full(obj, f):
        calls.append(f.name)
        if len(calls) == 2:  # the train json fits, the test json does not
            f.write('{"images": [')
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_dump(obj, f)

    monkeypatch.setattr(writer, "_dump_json", dump_until_full)
    with pytest.raises(TianchiFormatError) as ei:
        convert_fabric(root, out, test_size=4, seed=1, verbose=False)
    assert str(ei.value).startswith(os.path.join(out, "fabric_test.json") + ": cannot write the output")
    assert "No space left on device" in str(ei.value) and "previous outputs are unchanged" in str(ei.value)
    assert _listing(out) == before  # the new train json was not renamed in; no temporary file is left

    # through the command line: the documented error line and exit code 2, no traceback
    calls.clear()
    rc, _, err = run_cli("fabric", "--root", root, "--out-dir", out, "--test-size", 4, "--seed", 1)
    assert rc == 2 and err.startswith(f"error: {os.path.join(out, 'fabric_test.json')}: cannot write the output")
    assert _listing(out) == before


def test_output_path_that_is_a_directory_or_unusable_out_dir(tmp_path, run_cli):
    root = make_fabric(tmp_path / "release")
    out = tmp_path / "out"
    _previous_outputs(out)
    os.remove(out / "fabric_test.json")
    os.makedirs(out / "fabric_test.json")  # e.g. a folder made by mistake
    before = _listing_dirs(out)
    with pytest.raises(TianchiFormatError, match="fabric_test.json: an output file of the conversion is a directory"):
        convert_fabric(root, str(out), test_size=3, verbose=False)
    assert _listing_dirs(out) == before  # fabric_train.json still the previous one

    rc, _, err = run_cli("fabric", "--root", root, "--out-dir", out, "--test-size", 3)
    assert rc == 2 and err.startswith(f"error: {out / 'fabric_test.json'}: an output file of the conversion is a directory")
    assert _listing_dirs(out) == before

    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    rc, _, err = run_cli("fabric", "--root", root, "--out-dir", not_a_dir, "--test-size", 3)
    assert rc == 2 and err.startswith(f"error: {not_a_dir}: the output directory (--out-dir) exists and is not a directory")
    rc, _, err = run_cli("fabric", "--root", root, "--out-dir", not_a_dir / "sub", "--test-size", 3)
    assert rc == 2 and err.startswith(f"error: {not_a_dir / 'sub'}: cannot create the output directory (--out-dir)")


def _listing_dirs(out):
    return {name: (open(os.path.join(out, name)).read() if os.path.isfile(os.path.join(out, name)) else "<dir>")
            for name in sorted(os.listdir(out))}


def test_stale_validation_split_is_removed(tmp_path):
    root = make_fabric(tmp_path / "release")
    out = str(tmp_path / "out")
    convert_fabric(root, out, test_size=3, val_size=2, verbose=False)
    assert os.path.isfile(os.path.join(out, "fabric_val.json"))
    rep = convert_fabric(root, out, test_size=3, verbose=False)
    assert sorted(os.listdir(out)) == ["fabric_test.json", "fabric_train.json"]
    assert rep["stale_outputs_removed"] == [os.path.join(out, "fabric_val.json")]
    assert "removed " + os.path.join(out, "fabric_val.json") in format_report(rep)
