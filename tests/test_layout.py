"""The package layout may change; what users depend on may not (issue 13): the names defect_det registers
and the state-dict layout of every model (checkpoints saved before the restructure load with no missing or
unexpected keys). The reference is ``fixtures/state_dict_layout.json.gz``, written by
``fixtures/make_state_dict_layout.py`` from the layout before the restructure."""
import gzip
import json

import pytest
from fixtures import make_state_dict_layout as ref  # tests/ is on sys.path (its conftest.py)

with gzip.open(ref.OUT, "rt") as _f:
    REFERENCE = json.load(_f)


def test_registered_names_unchanged():
    import defect_det  # noqa: F401

    from detectron2.data import DatasetCatalog
    from detectron2.modeling import BACKBONE_REGISTRY, META_ARCH_REGISTRY
    from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, ROI_MASK_HEAD_REGISTRY

    from defect_det.evaluation import EVALUATOR_REGISTRY

    for reg in (BACKBONE_REGISTRY, META_ARCH_REGISTRY, ROI_HEADS_REGISTRY, ROI_MASK_HEAD_REGISTRY, EVALUATOR_REGISTRY):
        names = set(reg._obj_map)
        missing = set(REFERENCE["registered"][reg._name]) - names
        assert not missing, f"{reg._name}: no longer registered: {sorted(missing)}"
    missing = set(REFERENCE["registered"]["DatasetCatalog"]) - set(DatasetCatalog.list())
    assert not missing, f"datasets no longer registered: {sorted(missing)}"


# Deliberate changes of a model since the reference, per config family: (the overrides that build the
# previous network, the parameters the new default adds). SegDecNet follows the authors' released code
# since issue 13 (projects/SegDecNet/README.md, "Fidelity"): it normalises the logit map, one new scale.
CHANGED = {"configs/SegDecNet/": (["MODEL.SEGDEC.SEG_LOGIT_NORM", "False"], {"segmentation.seg_logits_norm.weight"})}


def _changed(config):
    return next((v for k, v in CHANGED.items() if config.startswith(k)), ([], set()))


@pytest.mark.parametrize("config", sorted(REFERENCE["configs"]))
def test_checkpoint_layout_unchanged(config):
    want = {k: s for k, s in REFERENCE["structures"][REFERENCE["configs"][config]]}
    previous, added = _changed(config)
    if added:  # the default network has exactly these parameters more
        assert set(dict(ref.layout(config))) - set(want) == added
    got = dict(ref.layout(config, previous))
    missing, unexpected = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    assert not missing and not unexpected, f"{config}: missing {missing[:10]}, unexpected {unexpected[:10]}"
    shapes = [k for k in want if want[k] != got[k]]
    assert not shapes, f"{config}: shape changed for {shapes[:10]}"
