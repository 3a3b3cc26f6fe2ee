"""defect_det.utils.recipe_search and defect_det.utils.demo_report (tools/recipe_search.py,
tools/demo_report.py): tables from stored JSON results, clear errors (no training here)."""
import json
import os

import pytest

from defect_det.utils import demo_report, recipe_search, table_runner




def _bbox(ap, lo, hi):
    return {"bbox": {"AP50": ap, "AP50_ci_low": lo, "AP50_ci_high": hi, "AP50_agnostic": ap + 5.0}}


def _record(tool, row, metrics):
    label, cfg, opts = tool.ROWS[row]
    return {"row": row, "label": label, "config": cfg, "opts": opts, "seed": 0, "iters": 7, "threads": 1,
            "jobs": 2, "commit": None, "command": "x", "metrics": metrics, "wall_s": 120.0}


def test_recipe_table_validation_and_final_rows(tmp_path):
    tool = recipe_search
    results = tmp_path / "results" / "recipe"
    (results / "final").mkdir(parents=True)
    (results / "pre_s0.json").write_text(json.dumps(_record(tool, "pre", {tool.VAL: _bbox(20.9, 16.5, 22.3)})))
    (results / "base_s0.json").write_text(json.dumps(_record(tool, "base", {tool.VAL: _bbox(3.0, 1.0, 4.0)})))
    final = {tool.TEST[0]: _bbox(30.0, 25.0, 33.0), tool.TEST[1]: _bbox(20.0, 15.0, 24.0)}
    (results / "final" / "pre_s0.json").write_text(json.dumps(_record(tool, "pre", final)))
    table = tool.main(["--render", "--results", str(results)]) or (tmp_path / "results" / "recipe_table.md").read_text()
    lines = table.splitlines()
    val_rows = [ln for ln in lines if ln.startswith("| `")]
    # table order follows ROWS (base before pre), validation first, then the final (test) row
    assert val_rows[0].startswith("| `base`") and val_rows[1].startswith("| `pre`")
    assert "| 20.9 [16.5, 22.3] | 25.9 |" in val_rows[1] and "| 2 (1, 2) |" in val_rows[1]
    assert val_rows[2].startswith("| `pre`") and "| 30.0 [25.0, 33.0] | 20.0 [15.0, 24.0] |" in val_rows[2]
    assert (tmp_path / "results" / "recipe_table.md").read_text().strip() == table.strip()


def test_recipe_search_errors(tmp_path):
    tool = recipe_search
    with pytest.raises(SystemExit, match="unknown rows"):
        tool.main(["--rows", "no_such_row", "--results", str(tmp_path)])
    with pytest.raises(SystemExit, match="model_final.pth missing"):
        tool.main(["--final", "--rows", "pre", "--out", str(tmp_path / "out"), "--results", str(tmp_path / "r")])


def test_evaluation_only_rows_read_their_base_rows_weights(tmp_path, monkeypatch):
    """An EVAL_ONLY row trains nothing: --eval-only on the validation split with the base row's
    model_final.pth and its own test-time overrides; a missing base row is named."""
    tool = recipe_search
    key = next(iter(tool.EVAL_ONLY))
    base = tool.EVAL_ONLY[key]
    args = table_runner.argparse.Namespace(
        out=str(tmp_path / "out"), results=str(tmp_path / "r"), final=False, iters=7, opts=[], threads=1)
    with pytest.raises(SystemExit, match=f"train row '{base}'"):
        table_runner.start_row(tool.SPEC, args, key, 0)
    (tmp_path / "out" / f"{base}_s0").mkdir(parents=True)
    (tmp_path / "out" / f"{base}_s0" / "model_final.pth").write_bytes(b"")
    started = {}
    monkeypatch.setattr(table_runner.subprocess, "Popen", lambda cmd, **kw: started.setdefault("cmd", cmd))
    table_runner.start_row(tool.SPEC, args, key, 0)
    cmd = started["cmd"]
    assert "--eval-only" in cmd and "--resume" not in cmd
    assert cmd[cmd.index("MODEL.WEIGHTS") + 1] == str(tmp_path / "out" / f"{base}_s0" / "model_final.pth")
    assert cmd[cmd.index("DATASETS.TEST") + 1] == f"('{tool.VAL}',)"
    assert cmd[cmd.index("OUTPUT_DIR") + 1] == str(tmp_path / "out" / f"{key}_s0")
    assert "MODEL.ROI_HEADS.CONTAIN_THRESH_TEST" in cmd


def test_demo_report_compares_with_benchmark_rows(tmp_path):
    tool = demo_report
    res = tmp_path / "results.json"
    res.write_text(json.dumps({"synthetic_fabric_test": _bbox(51.2, 47.0, 55.0),
                               "synthetic_fabric_unseen": _bbox(36.0, 31.0, 40.0)}))
    final = tmp_path / "final"
    final.mkdir()
    (final / "base_s0.json").write_text(json.dumps(
        {"label": "no template", "iters": 7, "metrics": {"synthetic_fabric_test": _bbox(3.0, 1.0, 4.0)}}))
    text = tool.report(str(res), ["base", "missing_row"], final_dir=str(final))
    lines = text.splitlines()
    assert "| **this demo run** | 51.2 [47.0, 55.0] | 56.2 | 36.0 [31.0, 40.0] | 41.0 |" in lines
    assert any(ln.startswith("| benchmark `base`: no template (7 it.) | 3.0 [1.0, 4.0] | 8.0 | - | - |")
               for ln in lines)
    assert "not measured yet" in text and "missing_row_s0.json" in text
    with pytest.raises(SystemExit, match="no results"):
        tool.report(str(tmp_path / "nope.json"), [])
