"""Every exportable R-CNN (GeneralizedRCNN with our heads, TemplateRCNN none / pre / inter / ptg (with TR-Post), TR-Post, Cascade,
box-supervised masks with refinement) traced at one size reproduces the eager model at two other sizes (boxes,
scores, masks to 1e-4; the same number of detections), in memory and after saving and reloading the file; the
file run through ExportedModel gives the eager model's final outputs (rescaled boxes, pasted masks)."""
import pytest
import torch

from defect_det.export import ExportedModel, compare_outputs, eager_outputs, export_model, export_signature, trace_model

from export_models import _fast_cpu  # noqa: F401  (autouse fixture)
from export_models import CHECK_SIZES, RCNN_ARCHS, TRACE_SIZE, build, rcnn_cfg, rcnn_input

ATOL = 1e-4



def _run_traced(traced, model, x):
    """The traced module on the input dict ``x``: {output name: tensor}."""
    inputs, outputs = export_signature(model)
    with torch.no_grad():
        return dict(zip(outputs, traced(*[x[k] for k in inputs])))


def _assert_close(ref, out, what):
    diff = compare_outputs(ref, out)
    assert all(v <= ATOL for v in diff.values()), (what, diff, {k: tuple(v.shape) for k, v in ref.items()},
                                                   {k: tuple(v.shape) for k, v in out.items()})


@pytest.mark.parametrize("arch", list(RCNN_ARCHS))
def test_traced_equals_eager_at_other_sizes_and_after_reload(arch, tmp_path):
    cfg = rcnn_cfg(*RCNN_ARCHS[arch])
    model = build(cfg)
    inputs, outputs = export_signature(model)
    mode, post, _, mask = RCNN_ARCHS[arch]
    takes_template = mode in ("pre", "inter") or post or (mask and mode != "baseline")
    assert inputs == (("image", "template") if takes_template else ("image",))
    assert ("pred_masks" in outputs) == ("mask" in arch)
    traced, _ = trace_model(model, rcnn_input(TRACE_SIZE, 0))
    path = str(tmp_path / "model.ts")
    torch.jit.save(traced, path)
    reloaded = torch.jit.load(path)
    counts = []
    for i, size in enumerate(CHECK_SIZES):
        x = rcnn_input(size, i + 1)
        ref = eager_outputs(model, x)
        counts.append(len(ref["scores"]))
        assert counts[-1] > 0, "the check needs detections"
        _assert_close(ref, _run_traced(traced, model, x), f"{arch} traced at {size}")
        _assert_close(ref, _run_traced(reloaded, model, x), f"{arch} reloaded at {size}")
        if "pred_masks" in ref:
            m = ref["pred_masks"]
            assert m.dim() == 4 and m.shape[1] == 1 and m.shape[0] == counts[-1]


def test_detection_count_follows_the_input():
    """The parity above is meaningful: containment suppression keeps a different number of detections for
    the tracing input and the two check inputs, and the traced model returns each count."""
    model = build(rcnn_cfg())
    traced, _ = trace_model(model, rcnn_input(TRACE_SIZE, 0))
    sizes = [TRACE_SIZE] + CHECK_SIZES
    eager = [len(eager_outputs(model, rcnn_input(s, i))["scores"]) for i, s in enumerate(sizes)]
    ours = [len(_run_traced(traced, model, rcnn_input(s, i))["scores"]) for i, s in enumerate(sizes)]
    assert ours == eager
    assert len(set(eager)) > 1, eager


def test_export_model_file_gives_the_eager_final_outputs(tmp_path):
    """export_model writes model.ts + export_info.json and checks parity itself; ExportedModel on input dicts with
    another output size (height / width) returns what the eager model returns: rescaled boxes, pasted masks; an
    input without the template the file takes is an error naming it."""
    cfg = rcnn_cfg(*RCNN_ARCHS["pre+mask"])
    model = build(cfg)
    info = export_model(cfg, model, rcnn_input(TRACE_SIZE, 0), str(tmp_path))
    assert info["path"].endswith("model.ts") and (tmp_path / "export_info.json").is_file()
    assert info["inputs"] == ["image", "template"]
    assert info["outputs"] == ["pred_boxes", "scores", "pred_classes", "pred_masks"]
    assert set(info["parity"]) == {"96x128", "144x152", "120x200"}
    exported = ExportedModel(info["path"])
    batch = []
    for i, (h, w) in enumerate(CHECK_SIZES):
        d = rcnn_input((h, w), i + 5)
        d.update(height=int(h * 1.5), width=int(w * 1.5), file_name=f"img{i}.png")
        batch.append(d)
    with torch.no_grad():  # one image per forward, as the exported model (a padded batch is another input)
        eager = [model([d])[0] for d in batch]
    ours = exported(batch)
    for e, o in zip(eager, ours):
        e, o = e["instances"], o["instances"]
        assert e.image_size == o.image_size
        assert len(e) == len(o) > 0
        assert torch.allclose(e.pred_boxes.tensor, o.pred_boxes.tensor, atol=ATOL)
        assert torch.allclose(e.scores, o.scores, atol=ATOL)
        assert torch.equal(e.pred_classes, o.pred_classes)
        assert o.pred_masks.shape == e.pred_masks.shape == (len(e), e.image_size[0], e.image_size[1])
        assert torch.equal(e.pred_masks, o.pred_masks)
    del batch[0]["template"]
    with pytest.raises(ValueError, match=r"img0.png: the exported model .* takes \['image', 'template'\]; "
                                         r"missing \['template'\]"):
        exported(batch)


def test_ptg_pads_per_input():
    """PTG's generators pad feature maps to multiples of 4: traced where no stage needs it (128 x 128), the model
    still pads where one does (res5 of a 96-high input is 3 high)."""
    model = build(rcnn_cfg("ptg"))
    traced, _ = trace_model(model, rcnn_input((128, 128), 0))
    for i, size in enumerate([(96, 128), (128, 104)]):
        x = rcnn_input(size, i + 1)
        _assert_close(eager_outputs(model, x), _run_traced(traced, model, x), f"ptg at {size}")


def test_hard_nms_traced_picks_the_eager_algorithm():
    """torchvision's batched_nms loops over the classes above 1000 boxes on CPU and offsets the boxes by class below,
    but always offsets when traced; on pairs of thin boxes whose IoU is within 2e-3 of the threshold the two round
    differently (Detectron2's fast_rcnn_inference traced at 1800 candidates keeps 2708 of 3600 where eager keeps
    2676). HardNMS traced decides per call as eager does: the same detections at 360 and 3600 candidates."""
    from defect_det.modeling.roi_heads import HardNMS

    nms = HardNMS(nms_thresh=0.5, topk_per_image=100000)

    def candidates(n, seed):
        """2n thin boxes in n shifted pairs with IoU 0.5 +- 2e-3, each box a candidate of 3 classes."""
        g = torch.Generator().manual_seed(seed)
        x0, y0 = torch.rand(n, generator=g) * 300, torch.rand(n, generator=g) * 400 + 40
        h = 0.05 + torch.rand(n, generator=g) * 0.1
        iou = 0.5 + (torch.rand(n, generator=g) - 0.5) * 4e-3
        d = h * (1 - iou) / (1 + iou)  # (h - d) / (h + d) = iou
        a = torch.stack([x0, y0, x0 + 100, y0 + h], 1)
        b = torch.stack([x0, y0 + d, x0 + 100, y0 + d + h], 1)
        return torch.cat([a, b]).repeat(1, 3), torch.softmax(torch.randn(2 * n, 4, generator=g) * 3, 1)

    def run(boxes, scores):
        inst, kept = nms([boxes], [scores], [(480, 480)], 0.0)
        return inst[0].pred_boxes.tensor, inst[0].scores, inst[0].pred_classes, kept[0]

    traced = torch.jit.trace(run, candidates(300, 0), check_trace=False)
    for n, seed in ((60, 1), (600, 2)):
        x = candidates(n, seed)
        for a, b in zip(run(*x), traced(*x)):
            assert a.shape == b.shape and torch.equal(a, b), 6 * n
