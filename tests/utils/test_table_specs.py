"""Every benchmark table's rows are runnable as written: each config + overrides loads (keys exist, values
parse), the box post-processor builds, and evaluation-only / warm-started rows name an existing row."""
import pytest

from defect_det.config import load_defect_cfg
from defect_det.modeling.roi_heads import build_box_postprocessor
from defect_det.rddn import table as rddn_table
from defect_det.sinkhorn_nms import table as nms_table
from defect_det.utils import recipe_search
from conftest import REPO

SPECS = {"recipe_search": recipe_search.SPEC, "rddn_table": rddn_table.SPEC, "sinkhorn_nms_table": nms_table.SPEC}
ROWS = [(name, key) for name, spec in SPECS.items() for key in spec.rows]


@pytest.mark.parametrize("name,key", ROWS, ids=[f"{n}:{k}" for n, k in ROWS])
def test_row_config_loads(name, key):
    import os

    spec = SPECS[name]
    _, cfg_file, opts = spec.rows[key]
    # MODEL.WEIGHTS may name a file made by another command (e.g. pre-trained weights not committed)
    opts = list(opts)
    if "MODEL.WEIGHTS" in opts:
        i = opts.index("MODEL.WEIGHTS")
        del opts[i:i + 2]
    cfg = load_defect_cfg(os.path.join(REPO, cfg_file), opts)
    build_box_postprocessor(cfg)
    for deps in (spec.eval_only, spec.init_from):
        if key in deps:
            assert deps[key] in spec.rows, f"{name}: {key} depends on unknown row {deps[key]}"
