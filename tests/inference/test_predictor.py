"""DefectPredictor (defect_det/inference): the same outputs as the evaluation path on the same images, for
the baseline, a template model and SegDecNet; paths and BGR arrays alike; bad input named."""
import cv2
import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model

from conftest import tiny_cfg
from defect_det.data import UnreadableImageError, build_defect_mapper
from defect_det.inference import DefectPredictor


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _predictor(cfg, tmp_path):
    torch.manual_seed(0)
    DetectionCheckpointer(build_model(cfg), save_dir=str(tmp_path)).save("init")
    cfg.MODEL.WEIGHTS = str(tmp_path / "init.pth")
    return DefectPredictor(cfg)


def _same(a, b):
    ia, ib = a["instances"], b["instances"]
    assert len(ia) == len(ib) > 0
    assert torch.allclose(ia.pred_boxes.tensor, ib.pred_boxes.tensor, atol=1e-4)
    assert torch.allclose(ia.scores, ib.scores, atol=1e-5) and torch.equal(ia.pred_classes, ib.pred_classes)


@pytest.mark.parametrize("mode", ["baseline", "pre_align"])
def test_predictor_equals_the_evaluation_path(tiny_fabric, tmp_path, mode):
    names = tiny_fabric["names"]
    over = {"MODEL.META_ARCHITECTURE": "TemplateRCNN", "MODEL.ROI_HEADS.NAME": "RDDNStandardROIHeads",
            "MODEL.TEMPLATE.MODE": "pre", "INPUT.TEMPLATE.ALIGN": "True"} if mode == "pre_align" else {}
    cfg = tiny_cfg(names, tmp_path, **over)
    predictor = _predictor(cfg, tmp_path)
    dicts = DatasetCatalog.get(names["test"])[:2]
    mapper = build_defect_mapper(cfg, False, [names["test"]])
    templates = [d["template_file_name"] for d in dicts]
    with torch.no_grad():  # Detectron2's test loader: one image per batch
        expected = [predictor.model([mapper(dict(d))])[0] for d in dicts]
        batch = predictor.model([mapper(dict(d)) for d in dicts])
    for e, d, t in zip(expected, dicts, templates):
        got = predictor(d["file_name"], t)                                      # paths
        _same(e, got)
        assert got["instances"].image_size == (d["height"], d["width"])        # original coordinates
    _same(expected[0], predictor(cv2.imread(dicts[0]["file_name"]), cv2.imread(templates[0])))  # BGR arrays
    for e, g in zip(batch, predictor([d["file_name"] for d in dicts], templates)):  # one batched call
        _same(e, g)


def test_bad_input_is_named(tiny_fabric, tmp_path):
    names = tiny_fabric["names"]
    cfg = tiny_cfg(names, tmp_path, **{"MODEL.META_ARCHITECTURE": "TemplateRCNN", "MODEL.TEMPLATE.MODE": "pre",
                                       "MODEL.ROI_HEADS.NAME": "RDDNStandardROIHeads"})
    predictor = _predictor(cfg, tmp_path)
    d = DatasetCatalog.get(names["test"])[0]
    with pytest.raises(ValueError, match="needs a template"):
        predictor(d["file_name"])
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(UnreadableImageError, match="broken.jpg"):
        predictor(str(bad), d["template_file_name"])
    image = cv2.imread(d["file_name"])
    with pytest.raises(ValueError, match="templates must match their image"):
        predictor(image, image[:-8])
    with pytest.raises(ValueError, match="2 images but 1 templates"):
        predictor([image, image], [image])
    with pytest.raises(ValueError, match="no image"):
        predictor([])


def test_segdec_predictor_gives_full_resolution_maps(tiny_dagm, tmp_path):
    from conftest import tiny_segdec_cfg

    cfg = tiny_segdec_cfg(tiny_dagm, tmp_path)
    predictor = _predictor(cfg, tmp_path)
    d = DatasetCatalog.get("tiny_sdagm_test")[0]
    mapper = build_defect_mapper(cfg, False, ["tiny_sdagm_test"])
    with torch.no_grad():
        expected = predictor.model([mapper(dict(d))])[0]
    got = predictor(d["file_name"])
    assert got["sem_seg"].shape == (1, d["height"], d["width"])
    assert torch.allclose(got["sem_seg"], expected["sem_seg"], atol=1e-5)
    assert float(got["score"]) == pytest.approx(float(expected["score"]), abs=1e-6)
    gray = cv2.imread(d["file_name"], cv2.IMREAD_GRAYSCALE)                     # a grayscale array
    assert torch.allclose(predictor(gray)["sem_seg"], expected["sem_seg"], atol=1e-5)
