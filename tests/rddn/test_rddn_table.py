"""defect_det.rddn.table (tools/rddn_table.py) and the shared table runner: tables from JSON records, the
"beats the baseline" rule, the README section, evaluation-only rows run after their source (no training)."""
import json

import pytest

from defect_det.rddn import table as rddn_table
from defect_det.utils import table_runner


def _record(row, seed, metrics):
    label, cfg, opts = rddn_table.ROWS[row]
    return {"row": row, "label": label, "config": cfg, "opts": opts, "seed": seed, "iters": 1000, "threads": 1,
            "jobs": 2, "commit": None, "command": "x", "metrics": metrics, "wall_s": 60.0}


def _val(ap, agn=None):
    return {rddn_table.VAL: {"bbox": {"AP50": ap, "AP50_ci_low": ap - 3, "AP50_ci_high": ap + 2,
                                      "AP50_agnostic": agn if agn is not None else ap + 5}}}


def test_render_means_stds_and_verdicts(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    values = {"baseline": [10.0, 12.0, 11.0], "pre": [30.0, 33.0, 31.0], "cr1.5": [11.0, 13.0, 12.0],
              "inter": [1.0, 2.0, 1.5]}
    for row, aps in values.items():
        for seed, ap in enumerate(aps):
            (results / f"{row}_s{seed}.json").write_text(json.dumps(_record(row, seed, _val(ap))))
    (results / "ptg_s0.json").write_text(json.dumps(_record("ptg", 0, _val(20.0))))
    args = table_runner.argparse.Namespace(results=str(results))
    text = rddn_table.render(args)
    rows = {ln.split("`")[1]: ln for ln in text.splitlines() if ln.startswith("| `")}
    assert list(rows) == ["baseline", "pre", "inter", "ptg", "cr1.5"]          # ROWS order
    assert "| 11.0 ± 1.0 (n=3) |" in rows["baseline"]
    assert "+20.3 (beats)" in rows["pre"]
    assert "+1.0 (within noise)" in rows["cr1.5"]                               # 1.0 <= std 1.0
    assert "-9.5 (worse)" in rows["inter"]
    assert "| 20.0 [17.0, 22.0] |" in rows["ptg"] and "+9.0 (1 seed)" in rows["ptg"]
    assert (tmp_path / "rddn_table.md").read_text().strip() == text.strip()


def test_readme_section_is_replaced_between_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- t:begin -->\nold\n<!-- t:end -->\noutro\n")
    assert table_runner.write_readme_section(str(readme), "t", "| new |")
    assert readme.read_text() == "intro\n<!-- t:begin -->\n| new |\n<!-- t:end -->\noutro\n"
    assert not table_runner.write_readme_section(str(readme), "other", "x")        # no markers: untouched
    assert "| new |" in readme.read_text()


def test_evaluation_only_rows_wait_for_their_source(tmp_path, monkeypatch):
    """`post` evaluates the baseline's weights: it starts after the baseline finished, as --eval-only."""
    started = []

    class Done:
        def poll(self):
            return 0

    def fake_start(spec, args, key, seed):
        started.append(key)
        if key == "baseline":
            (tmp_path / "out" / "baseline_s0").mkdir(parents=True, exist_ok=True)
        return Done(), str(tmp_path), [], 0.0

    monkeypatch.setattr(table_runner, "start_row", fake_start)
    monkeypatch.setattr(table_runner, "finish_row", lambda *a: True)
    monkeypatch.setattr(table_runner.time, "sleep", lambda s: None)
    args = table_runner.get_parser(rddn_table.SPEC).parse_args(
        ["--rows", "post", "baseline", "--jobs", "2", "--out", str(tmp_path / "out"), "--results", str(tmp_path / "r")])
    assert table_runner.run_rows(rddn_table.SPEC, args) == []
    assert started == ["baseline", "post"]
    with pytest.raises(SystemExit, match="unknown rows"):
        table_runner.run_rows(rddn_table.SPEC, table_runner.get_parser(rddn_table.SPEC).parse_args(["--rows", "nope"]))


def test_warm_started_row_trains_from_its_source(tmp_path, monkeypatch):
    spec = table_runner.TableSpec(
        name="t", rows={"a": ("a", "cfg.yaml", []), "b": ("b from a", "cfg.yaml", ["X", "1"])}, val="v",
        test=("t1",), results=str(tmp_path / "r"), out=str(tmp_path / "out"), render=lambda s, a: "",
        init_from={"b": "a"})
    args = table_runner.get_parser(spec).parse_args([])
    with pytest.raises(SystemExit, match="train row 'a'"):
        table_runner.start_row(spec, args, "b", 0)
    (tmp_path / "out" / "a_s0").mkdir(parents=True)
    (tmp_path / "out" / "a_s0" / "model_final.pth").write_bytes(b"")
    started = {}
    monkeypatch.setattr(table_runner.subprocess, "Popen", lambda cmd, **kw: started.setdefault("cmd", cmd))
    table_runner.start_row(spec, args, "b", 0)
    cmd = started["cmd"]
    assert "--resume" in cmd and "--eval-only" not in cmd
    assert cmd[cmd.index("MODEL.WEIGHTS") + 1] == str(tmp_path / "out" / "a_s0" / "model_final.pth")
    assert cmd[cmd.index("X") + 1] == "1"
