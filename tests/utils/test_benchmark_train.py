"""defect_det.utils.train_benchmark (tools/benchmark_train.py): structure, ratios, JSON (never timings)."""
import json
import math
import os

import pytest

from conftest import REPO, TINY_OPTS

from defect_det.utils import train_benchmark




def test_format_train_table_ratio_to_reference():
    from defect_det.utils.train_benchmark import format_train_table

    phases = {"data": 1.0, "forward": 2.0, "backward": 3.0, "optimizer": 4.0}
    rows = [dict(name="a", threads=2, workers=2, images_per_s=2.0, s_per_iter=2.0, phases_ms=phases),
            dict(name="b", threads=2, workers=0, images_per_s=5.0, s_per_iter=0.8, phases_ms=phases)]
    lines = format_train_table(rows).splitlines()
    assert "| 1.00x |" in lines[2] and "| 2.50x |" in lines[3]
    assert "| 0.40x |" in format_train_table(rows, reference="b").splitlines()[2]


def test_benchmark_train_two_variants_interleaved_and_json(tiny_fabric, tmp_path):
    tool = train_benchmark
    out = tmp_path / "tp.json"
    cfg_file = os.path.join(REPO, "configs", "synthetic", "faster_rcnn_R18_FPN_cpu.yaml")
    opts = list(TINY_OPTS) + ["DATASETS.TRAIN", f"('{tiny_fabric['names']['train']}',)", "DATASETS.TEST", "()"]
    tool.VARIANTS["tiny_a"] = (cfg_file, opts, 1)
    tool.VARIANTS["tiny_b"] = (cfg_file, opts + ["MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "16"], 1)
    try:
        rows = tool.main(["--variants", "tiny_a", "tiny_b", "--iters", "2", "--warmup", "1", "--profile", "1",
                          "--top-ops", "3", "--json", str(out)])
    finally:
        del tool.VARIANTS["tiny_a"], tool.VARIANTS["tiny_b"]
    assert [r["name"] for r in rows] == ["tiny_a", "tiny_b"]
    for r in rows:
        assert r["images_per_s"] > 0 and r["threads"] == 1 and r["workers"] == 0
        assert set(r["phases_ms"]) == {"data", "forward", "backward", "optimizer"}
        assert all(v >= 0 for v in r["phases_ms"].values()) and r["phases_ms"]["forward"] > 0
        assert math.isfinite(r["loss_first"]) and math.isfinite(r["loss_last"])
        assert len(r["profile"]) == 3 and all(p["self_cpu_ms"] >= 0 for p in r["profile"])
        # s/iter x images/s = images per step (= IMS_PER_BATCH of the tiny preset)
        assert r["s_per_iter"] * r["images_per_s"] == pytest.approx(2.0)
    saved = json.loads(out.read_text())
    assert saved["command"].startswith("python tools/benchmark_train.py --variants tiny_a tiny_b")
    assert [r["name"] for r in saved["rows"]] == ["tiny_a", "tiny_b"] and saved["iters"] == 2


def test_benchmark_train_rejects_missing_config(tmp_path):
    with pytest.raises(SystemExit, match="config file not found"):
        train_benchmark.main(["--config-file", str(tmp_path / "nope.yaml"), "--json", ""])
