"""Loaders of DAGM 2007 / KolektorSDD / KolektorSDD2 / Severstal on tiny fake on-disk copies written
here in the real formats, RLE round trip and errors, and the SegDecNet mapper."""
import os

import cv2
import numpy as np
import pytest
import torch

import defect_det  # noqa: F401
from defect_det.config import get_defect_cfg
from defect_det.data.datasets.surface import (
    load_dagm,
    load_ksdd,
    load_ksdd2,
    load_severstal,
    read_severstal_csv,
    rle_decode,
    rle_encode,
    severstal_split,
)
from defect_det.segdec.mapper import (
    SegDecDatasetMapper,
    distance_transform_weights,
    segdec_targets,
    select_segmented_files,
)


def _gray(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (h, w), dtype=np.uint8)


# ---------------------------------------------------------------------------------------------- RLE
def test_rle_column_major_convention():
    # 3x2 mask, pixels numbered column-major 1..6: (0,0)=1 (1,0)=2 (2,0)=3 (0,1)=4 (1,1)=5 (2,1)=6
    m = rle_decode("2 2 6 1", (3, 2))
    assert m.tolist() == [[0, 0], [1, 0], [1, 1]]
    assert rle_encode(m) == "2 2 6 1"
    assert rle_encode(np.zeros((4, 4), np.uint8)) == "" and not rle_decode("", (4, 4)).any()


def test_rle_round_trip_random():
    rng = np.random.default_rng(0)
    for _ in range(20):
        m = (rng.random((16, 40)) < rng.random()).astype(np.uint8)
        assert np.array_equal(rle_decode(rle_encode(m), m.shape), m)
        s = rle_encode(m)
        assert rle_encode(rle_decode(s, m.shape)) == s


@pytest.mark.parametrize("rle,msg", [
    ("1 2 3", "odd number"),
    ("1 x", "not an integer"),
    ("0 2", "< 1"),
    ("1 0", "run length 0"),
    ("5 2 1 2", "overlap"),
    ("1 2 2 2", "overlap"),
    ("10 5", "beyond"),
])
def test_rle_malformed(rle, msg):
    with pytest.raises(ValueError, match=msg):
        rle_decode(rle, (3, 4))


# ---------------------------------------------------------------------------------------------- DAGM
def write_dagm(class_root, split="Train", n=4, size=32, defective=(1, 3)):
    folder = os.path.join(class_root, split)
    os.makedirs(os.path.join(folder, "Label"), exist_ok=True)
    rows = ["1"]
    for i in range(n):
        name = f"{i:04d}.PNG"
        cv2.imwrite(os.path.join(folder, name), _gray(size, size, i))
        if i in defective:
            m = np.zeros((size, size), np.uint8)
            cv2.ellipse(m, (size // 2, size // 2), (8, 4), 30, 0, 360, 255, -1)
            cv2.imwrite(os.path.join(folder, "Label", f"{i:04d}_label.PNG"), m)
            rows.append(f"{i + 1}\t1\t{name}\t0\t{i:04d}_label.PNG")
        else:
            rows.append(f"{i + 1}\t0\t{name}\t0\t0")
    with open(os.path.join(folder, "Label", "Labels.txt"), "w") as f:
        f.write("\n".join(rows) + "\n")
    return folder


def test_load_dagm(tmp_path):
    write_dagm(str(tmp_path / "Class1"))
    dicts = load_dagm(str(tmp_path / "Class1"), "train")
    assert [d["label"] for d in dicts] == [0, 1, 0, 1]
    assert all((d["height"], d["width"]) == (32, 32) for d in dicts)
    assert dicts[1]["sem_seg_file_name"].endswith(os.path.join("Label", "0001_label.PNG"))
    assert "sem_seg_file_name" not in dicts[0] and all(d["has_pixel_labels"] for d in dicts)
    assert len({d["image_id"] for d in dicts}) == 4


def test_load_dagm_errors(tmp_path):
    root = str(tmp_path / "Class1")
    with pytest.raises(FileNotFoundError, match="Labels.txt"):
        load_dagm(root, "Train")
    folder = write_dagm(root)
    labels = os.path.join(folder, "Label", "Labels.txt")
    os.remove(os.path.join(folder, "Label", "0003_label.PNG"))
    with pytest.raises(FileNotFoundError, match=r"Labels.txt:5: label .*0003_label.PNG"):
        load_dagm(root, "Train")
    folder = write_dagm(root)
    os.remove(os.path.join(folder, "0002.PNG"))
    with pytest.raises(FileNotFoundError, match=r"Labels.txt:4: image .*0002.PNG"):
        load_dagm(root, "Train")
    write_dagm(root)
    with open(labels, "a") as f:
        f.write("9\t2\t0000.PNG\t0\t0\n")
    with pytest.raises(ValueError, match=r"Labels.txt:6: the defective flag"):
        load_dagm(root, "Train")
    with open(labels, "w") as f:
        f.write("1\n1\t0\t0000.PNG\n")
    with pytest.raises(ValueError, match=r"Labels.txt:2: expected 5"):
        load_dagm(root, "Train")


# ---------------------------------------------------------------------------------------- KolektorSDD
def write_ksdd(root, folders=4, parts=2, h=40, w=16):
    for k in range(1, folders + 1):
        folder = os.path.join(root, f"kos{k:02d}")
        os.makedirs(folder, exist_ok=True)
        for p in range(parts):
            cv2.imwrite(os.path.join(folder, f"Part{p}.jpg"), _gray(h, w, k * 10 + p))
            m = np.zeros((h, w), np.uint8)
            if p == 0 and k % 2:
                m[10:20, 4:8] = 255
            cv2.imwrite(os.path.join(folder, f"Part{p}_label.bmp"), m)


def test_load_ksdd_folds(tmp_path):
    write_ksdd(str(tmp_path))
    all_ = load_ksdd(str(tmp_path))
    assert len(all_) == 8 and sum(d["label"] for d in all_) == 2
    for fold in range(3):
        tr, te = load_ksdd(str(tmp_path), fold, "train"), load_ksdd(str(tmp_path), fold, "test")
        assert not {d["image_id"] for d in tr} & {d["image_id"] for d in te}
        assert len(tr) + len(te) == 8
    # fold 0 tests on folders 0 and 3 of the sorted list (kos01, kos04)
    assert {d["image_id"].split("/")[0] for d in load_ksdd(str(tmp_path), 0, "test")} == {"kos01", "kos04"}
    os.remove(str(tmp_path / "kos02" / "Part1_label.bmp"))
    with pytest.raises(FileNotFoundError, match=r"kos02.Part1.jpg has no label"):
        load_ksdd(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="not found"):
        load_ksdd(str(tmp_path / "nope"))


def test_load_ksdd2(tmp_path):
    folder = tmp_path / "train"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.png"), np.stack([_gray(24, 16, i)] * 3, -1))
        m = np.zeros((24, 16), np.uint8)
        if i == 2:
            m[3:9, 3:9] = 255
        cv2.imwrite(str(folder / f"{i}_GT.png"), m)
    dicts = load_ksdd2(str(tmp_path), "train")
    assert [d["label"] for d in dicts] == [0, 0, 1] and dicts[2]["sem_seg_file_name"].endswith("2_GT.png")
    os.remove(str(folder / "1_GT.png"))
    with pytest.raises(FileNotFoundError, match=r"1.png has no label .*1_GT.png"):
        load_ksdd2(str(tmp_path), "train")


# -------------------------------------------------------------------------------------------- Severstal
SEV_SHAPE = (16, 24)


def write_severstal(root, old_header=False):
    images = root / "train_images"
    images.mkdir(parents=True, exist_ok=True)
    masks = {}
    for i in range(4):
        cv2.imwrite(str(images / f"img{i}.jpg"), _gray(*SEV_SHAPE, i))
    m1 = np.zeros(SEV_SHAPE, np.uint8); m1[2:6, 3:9] = 1
    m3 = np.zeros(SEV_SHAPE, np.uint8); m3[10:14, 0:2] = 1
    masks = {("img1.jpg", 1): m1, ("img1.jpg", 3): m3, ("img2.jpg", 2): m1}
    with open(root / "train.csv", "w") as f:
        if old_header:
            f.write("ImageId_ClassId,EncodedPixels\n")
            for i in range(4):
                for c in range(1, 5):
                    m = masks.get((f"img{i}.jpg", c))
                    f.write(f"img{i}.jpg_{c},{rle_encode(m) if m is not None else ''}\n")
        else:
            f.write("ImageId,ClassId,EncodedPixels\n")
            for (name, c), m in masks.items():
                f.write(f"{name},{c},{rle_encode(m)}\n")
    return masks


@pytest.mark.parametrize("old_header", [False, True])
def test_load_severstal(tmp_path, old_header):
    masks = write_severstal(tmp_path, old_header)
    dicts = {d["image_id"]: d for d in load_severstal(str(tmp_path), shape=SEV_SHAPE)}
    assert sorted(dicts) == [f"img{i}.jpg" for i in range(4)]
    assert [dicts[f"img{i}.jpg"]["label"] for i in range(4)] == [0, 1, 1, 0]
    assert sorted(dicts["img1.jpg"]["rle"]) == [1, 3]
    # the mapper merges the classes into one mask
    cfg = get_defect_cfg()
    cfg.INPUT.FORMAT = "L"
    cfg.MODEL.SEGDEC.INPUT_SIZE = SEV_SHAPE
    out = SegDecDatasetMapper(cfg, False)(dicts["img1.jpg"])
    assert np.array_equal(out["sem_seg"].numpy(), masks[("img1.jpg", 1)] | masks[("img1.jpg", 3)])


def test_severstal_errors(tmp_path):
    write_severstal(tmp_path)
    csv = tmp_path / "train.csv"
    text = csv.read_text()
    csv.write_text(text + "img3.jpg,2,5 3 4\n")
    with pytest.raises(ValueError, match=r"train.csv:5: image img3.jpg class 2: malformed .*odd"):
        read_severstal_csv(str(csv), SEV_SHAPE)
    csv.write_text(text + "img3.jpg,2,380 10\n")  # 16 x 24 = 384 pixels
    with pytest.raises(ValueError, match=r"train.csv:5: .*beyond the mask's 384 pixels"):
        read_severstal_csv(str(csv), SEV_SHAPE)
    csv.write_text(text + "img3.jpg,7,1 1\n")
    with pytest.raises(ValueError, match=r"train.csv:5: ClassId must be 1..4"):
        read_severstal_csv(str(csv), SEV_SHAPE)
    csv.write_text("Image,Class\nimg1.jpg,1\n")
    with pytest.raises(ValueError, match=r"train.csv:1: unknown header"):
        read_severstal_csv(str(csv), SEV_SHAPE)
    csv.write_text(text + "gone.jpg,1,1 1\n")
    with pytest.raises(FileNotFoundError, match=r"train.csv: 1 listed images .*gone.jpg"):
        load_severstal(str(tmp_path), shape=SEV_SHAPE)
    # image size differing from the declared shape: the mapper says so
    csv.write_text(text)
    d = load_severstal(str(tmp_path), shape=(16, 32))[1]
    cfg = get_defect_cfg()
    cfg.INPUT.FORMAT = "L"
    with pytest.raises(ValueError, match=r"img1.jpg is 24x16 .* says 32x16"):
        SegDecDatasetMapper(cfg, True)(d)


def test_severstal_split_is_a_partition():
    ids = [f"{i}.jpg" for i in range(50)]
    tr, te = severstal_split(ids, "train"), severstal_split(ids, "test")
    assert len(te) == 10 and sorted(tr + te) == sorted(ids) and te == severstal_split(ids[::-1], "test")


# ------------------------------------------------------------------------------------------ the mapper
def test_dt_weights_peak_at_region_centre():
    m = np.zeros((40, 40), np.uint8)
    m[10:31, 5:36] = 1  # centre row 20, columns 5..35 -> centre (20, 20)
    w = distance_transform_weights(m, p=2.0, omega=3.0)
    fg = w[m > 0]
    assert np.isclose(fg.max(), 3.0) and (w[m == 0] == 1).all()
    peak = np.unravel_index(np.argmax(np.where(m > 0, w, -1)), w.shape)
    assert peak[0] == 20 and 15 <= peak[1] <= 25
    assert w[20, 20] > w[20, 8] > w[20, 5] > 0 and w[20, 20] > w[12, 20]


def test_segdec_targets_dilate_and_soft():
    m = np.zeros((32, 32), np.uint8)
    m[12:14, 12:14] = 1  # 4 pixels inside the 8x8 block (1, 1)
    t, w = segdec_targets(m)
    assert t.shape == (4, 4) and np.isclose(t[1, 1], 4 / 64) and t.sum() == t[1, 1] and (w == 1).all()
    td, _ = segdec_targets(m, dilate=5)  # 6x6 square 10..15 -> spans blocks 1 only
    assert np.isclose(td[1, 1], 36 / 64)
    _, ww = segdec_targets(m, dilate=5, weighted=True, p=1, omega=10)
    assert ww[1, 1] != 1 and (np.delete(ww.ravel(), 5) == 1).all()


def test_mapper_outputs_and_mixed_supervision(tmp_path):
    write_dagm(str(tmp_path / "Class1"), n=4, size=48)
    dicts = load_dagm(str(tmp_path / "Class1"), "Train")
    cfg = get_defect_cfg()
    cfg.INPUT.FORMAT = "L"
    cfg.MODEL.SEGDEC.INPUT_SIZE = (32, 32)
    segmented = select_segmented_files(dicts, 1)
    assert segmented == {dicts[1]["file_name"]}
    mapper = SegDecDatasetMapper(cfg, True, segmented_files=segmented)
    outs = [mapper(d) for d in dicts]
    assert outs[0]["image"].shape == (1, 32, 32) and outs[0]["image"].dtype == torch.float32
    assert (outs[0]["height"], outs[0]["width"]) == (48, 48)
    assert [o["use_pixel_labels"] for o in outs] == [True, True, True, False]
    assert outs[1]["seg_target"].shape == (4, 4) and float(outs[1]["seg_target"].max()) > 0
    assert float(outs[1]["seg_weight"].max()) > 1  # DT weights (Omega 10) on by default
    assert not outs[0]["sem_seg"].any()
    # test mapper: every pixel label used
    assert all(SegDecDatasetMapper(cfg, False, segmented_files=segmented)(d)["use_pixel_labels"] for d in dicts)
    assert select_segmented_files(dicts, -1) is None and select_segmented_files(dicts, 0) == set()


def test_mapper_mask_size_mismatch(tmp_path):
    folder = write_dagm(str(tmp_path / "Class1"), n=2, size=32, defective=(1,))
    cv2.imwrite(os.path.join(folder, "Label", "0001_label.PNG"), np.zeros((16, 32), np.uint8))
    d = load_dagm(str(tmp_path / "Class1"), "Train")[1]
    cfg = get_defect_cfg()
    cfg.INPUT.FORMAT = "L"
    with pytest.raises(ValueError, match=r"mask size mismatch: label .*0001_label.PNG is 32x16 .*0001.PNG is 32x32"):
        SegDecDatasetMapper(cfg, True)(d)


def test_mapper_config_errors():
    cfg = get_defect_cfg()
    cfg.INPUT.FORMAT = "RGB"  # 3 channels, IN_CHANNELS 1
    with pytest.raises(ValueError, match="IN_CHANNELS"):
        SegDecDatasetMapper(cfg, True)
    cfg.INPUT.FORMAT = "L"
    cfg.MODEL.SEGDEC.INPUT_SIZE = (30, 32)
    with pytest.raises(ValueError, match="multiples of 8"):
        SegDecDatasetMapper(cfg, True)


@pytest.mark.parametrize("flip,symmetries", [
    ("both", {(h, v, 0) for h in (0, 1) for v in (0, 1)}),
    ("dihedral", {(h, v, t) for h in (0, 1) for v in (0, 1) for t in (0, 1)}),
])
def test_mapper_flip_moves_image_and_mask_together(tmp_path, flip, symmetries):
    write_dagm(str(tmp_path / "Class1"), n=2, size=32, defective=(1,))
    d = load_dagm(str(tmp_path / "Class1"), "Train")[1]
    cfg = get_defect_cfg()
    cfg.INPUT.FORMAT = "L"
    cfg.MODEL.SEGDEC.INPUT_SIZE = (32, 32)
    plain = SegDecDatasetMapper(cfg, True)(d)
    cfg.MODEL.SEGDEC.FLIP = flip
    mapper = SegDecDatasetMapper(cfg, True)
    np.random.seed(0)
    seen = set()
    for _ in range(64):
        out = mapper(d)
        img, mask = out["image"][0], out["sem_seg"]
        # exactly one symmetry of the unaugmented pair, the same one for image and mask
        hits = [(h, v, t) for h in (0, 1) for v in (0, 1) for t in (0, 1)
                if torch.equal(img, _sym(plain["image"][0], h, v, t)) and torch.equal(mask, _sym(plain["sem_seg"], h, v, t))]
        assert len(hits) == 1
        seen.add(hits[0])
    assert seen == symmetries
    # never at test time
    assert torch.equal(SegDecDatasetMapper(cfg, False)(d)["image"], plain["image"])
    cfg.MODEL.SEGDEC.INPUT_SIZE = (32, 40)
    if flip == "dihedral":
        with pytest.raises(ValueError, match="square"):
            SegDecDatasetMapper(cfg, True)
    cfg.MODEL.SEGDEC.FLIP = "diagonal"
    with pytest.raises(ValueError, match="MODEL.SEGDEC.FLIP"):
        SegDecDatasetMapper(cfg, True)


def _flip(t, h, v):
    dims = ([1] if h else []) + ([0] if v else [])
    return torch.flip(t, dims) if dims else t


def _sym(t, h, v, tr):
    t = _flip(t, h, v)
    return t.transpose(0, 1) if tr else t
