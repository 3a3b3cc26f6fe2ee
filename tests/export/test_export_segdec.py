"""SegDecNet exported by tracing and by scripting follows its input size (the traced model once froze its output
map at the tracing size) and equals the eager model (maps and scores to 1e-4) at two other sizes, also after
saving and reloading; the decision subnet's per-channel norm picks the 1 x 1-map case per input."""
import pytest
import torch

from defect_det.export import ExportedModel, compare_outputs, eager_outputs, export_model, script_model, trace_model

from export_models import _fast_cpu  # noqa: F401  (autouse fixture)
from export_models import build, blocky_image, segdec_cfg

ATOL = 1e-4
TRACE = (64, 64)      # the decision subnet's last map is 1 x 1 here ...
SIZES = [(80, 96), (128, 136)]  # ... 1 x 1 and 2 x 2 here: both branches of ChannelNorm("authors")



def _input(size, seed):
    return {"image": blocky_image(size[0], size[1], seed, channels=1)}


@pytest.mark.parametrize("method", ["tracing", "scripting"])
def test_segdec_exported_follows_the_input_size(method, tmp_path):
    model = build(segdec_cfg())
    if method == "tracing":
        exported, _ = trace_model(model, _input(TRACE, 0))
    else:
        exported = script_model(model)
    path = str(tmp_path / "model.ts")
    torch.jit.save(exported, path)
    reloaded = torch.jit.load(path)
    for i, size in enumerate(SIZES):
        x = _input(size, i + 1)
        ref = eager_outputs(model, x)
        assert ref["sem_seg"].shape == (1, *size) and ref["seg_probs"].shape == (1, size[0] // 8, size[1] // 8)
        for what, m in (("exported", exported), ("reloaded", reloaded)):
            with torch.no_grad():
                out = dict(zip(("sem_seg", "score", "seg_probs"), m(x["image"])))
            diff = compare_outputs(ref, out)
            assert all(v <= ATOL for v in diff.values()), (method, what, size, diff)


def test_segdec_export_file_resizes_like_the_eager_model(tmp_path):
    """ExportedModel with an output size (height / width, as the test loader gives the original size) returns the
    eager model's map at that size: upsampled from the stride-8 probabilities in one step, as eager."""
    cfg = segdec_cfg()
    model = build(cfg)
    info = export_model(cfg, model, _input(TRACE, 0), str(tmp_path))
    assert info["inputs"] == ["image"] and info["outputs"] == ["sem_seg", "score", "seg_probs"]
    exported = ExportedModel(info["path"])
    batch = [dict(_input(SIZES[0], 3), height=100, width=150), _input(SIZES[1], 4)]
    with torch.no_grad():
        eager = [model([d])[0] for d in batch]
    for e, o in zip(eager, exported(batch)):
        assert o["sem_seg"].shape == e["sem_seg"].shape
        assert torch.allclose(o["sem_seg"], e["sem_seg"], atol=ATOL)
        assert torch.allclose(o["score"], e["score"], atol=ATOL)
    assert eager[0]["sem_seg"].shape == (1, 100, 150) and eager[1]["sem_seg"].shape == (1, *SIZES[1])
