"""Training crops at full resolution biased to the defects (defect_det/data/defect_crop.py, INPUT.DEFECT_CROP)."""
import numpy as np
import pytest
import torch
from detectron2.data import transforms as T
from detectron2.structures import BoxMode

from defect_det.config import get_defect_cfg
from defect_det.data import build_defect_mapper
from defect_det.data.defect_crop import DefectBiasedCrop, defect_crop_augmentation


def test_crop_holds_the_chosen_box_or_its_centre():
    np.random.seed(0)
    image = np.zeros((1000, 2446, 3), np.uint8)
    small = np.array([[2000.0, 900.0, 2010.0, 905.0]])        # fits: whole box inside the crop
    large = np.array([[100.0, 50.0, 1900.0, 80.0]])            # wider than the crop: its centre inside
    aug = DefectBiasedCrop((512, 512), defect_prob=1.0)
    for _ in range(50):
        t = aug.get_transform(image, small)
        assert (t.w, t.h) == (512, 512) and 0 <= t.x0 <= 2446 - 512 and 0 <= t.y0 <= 1000 - 512
        assert t.x0 <= 2000 and t.x0 + 512 >= 2010 and t.y0 <= 900 and t.y0 + 512 >= 905
        t = aug.get_transform(image, large)
        assert t.x0 <= 1000 <= t.x0 + 512 and t.y0 <= 50 and t.y0 + 512 >= 80
    # without boxes, or with probability 0: uniform placement over the whole image
    xs = [DefectBiasedCrop((512, 512), 0.0).get_transform(image, small).x0 for _ in range(200)]
    assert min(xs) < 500 and max(xs) > 1400
    t = aug.get_transform(np.zeros((300, 400, 3), np.uint8), None)  # smaller than the crop: no crop on that side
    assert (t.w, t.h) == (400, 300) and (t.x0, t.y0) == (0, 0)
    with pytest.raises(ValueError, match="DEFECT_PROB"):
        DefectBiasedCrop((512, 512), 1.5)


def _cfg(**kw):
    cfg = get_defect_cfg()
    cfg.INPUT.DEFECT_CROP.ENABLED = True
    cfg.INPUT.DEFECT_CROP.SIZE = [64, 96]
    cfg.INPUT.DEFECT_CROP.DEFECT_PROB = 1.0
    cfg.INPUT.MIN_SIZE_TRAIN = (64,)
    cfg.INPUT.MAX_SIZE_TRAIN = 1000
    cfg.INPUT.RANDOM_FLIP = "none"
    for k, v in kw.items():
        cfg.merge_from_list([k, v])
    return cfg


def _dict(tmp_path, with_template):
    import cv2

    rng = np.random.default_rng(0)
    img = (rng.random((200, 300, 3)) * 255).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), img)
    d = {"file_name": str(tmp_path / "a.png"), "height": 200, "width": 300, "image_id": 0,
         "annotations": [{"bbox": [250, 150, 20, 10], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 3}]}
    if with_template:
        cv2.imwrite(str(tmp_path / "t.png"), img)  # template == image: a crop replayed on it gives I - T = 0
        d["template_file_name"] = str(tmp_path / "t.png")
    return d, img


@pytest.mark.parametrize("arch", ["GeneralizedRCNN", "TemplateRCNN"])
def test_mapper_crops_image_template_and_boxes_alike(tmp_path, arch):
    kw = {"MODEL.META_ARCHITECTURE": arch}
    if arch == "TemplateRCNN":
        kw["MODEL.TEMPLATE.MODE"] = "pre"
    cfg = _cfg(**kw)
    mapper = build_defect_mapper(cfg, True, [])
    assert isinstance(mapper.augmentations.augs[0], DefectBiasedCrop)
    d, img = _dict(tmp_path, arch == "TemplateRCNN")
    np.random.seed(1)
    for _ in range(10):
        out = mapper(dict(d))
        assert tuple(out["image"].shape) == (3, 64, 96)
        box = out["instances"].gt_boxes.tensor[0]
        # the defect (250..270 x 150..160 in the original) is inside the crop, same size (no resize here)
        assert torch.allclose(box[2:] - box[:2], torch.tensor([20.0, 10.0]))
        crop = out["image"].permute(1, 2, 0).numpy()
        found = [(y, x) for y in range(0, 200 - 63) for x in range(0, 300 - 95)
                 if crop[0, 0, 0] == img[y, x, 0] and np.array_equal(crop, img[y:y + 64, x:x + 96])]
        assert len(found) == 1  # a crop of the original pixels, not a resize
        y, x = found[0]
        assert torch.allclose(box, torch.tensor([250.0 - x, 150.0 - y, 270.0 - x, 160.0 - y]))
        if arch == "TemplateRCNN":
            assert torch.equal(out["template"], out["image"])
    # test time: no crop
    assert not any(isinstance(a, DefectBiasedCrop) for a in build_defect_mapper(cfg, False, []).augmentations.augs)


def test_two_crops_refused():
    cfg = _cfg(**{"INPUT.CROP.ENABLED": True})
    with pytest.raises(ValueError, match="INPUT.DEFECT_CROP.ENABLED and INPUT.CROP.ENABLED"):
        defect_crop_augmentation(cfg, True)
    assert defect_crop_augmentation(cfg, False) is None
