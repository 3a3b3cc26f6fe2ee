"""defect_det.utils.rddn_benchmark (tools/benchmark_rddn.py): table structure, ratios and deterministic
quantities (never timings)."""
import io
import json
import math
import os

from defect_det.utils.rddn_benchmark import run_rddn_benchmark

CFG = os.path.join("configs", "RDDN", "synthetic", "faster_rcnn_R18_FPN_{}.yaml")


def _header(text, title):
    """Column names of the pipe table printed under `title`."""
    lines = text.splitlines()
    i = lines.index(title)
    header = next(line for line in lines[i + 1:] if line.startswith("|"))
    return [c.strip() for c in header.strip("|").split("|")]


def test_benchmark_tables_ratios_and_inter_doubles_bottom_up_features(tmp_path):
    out, json_file = io.StringIO(), str(tmp_path / "bench.json")
    command = "python tools/benchmark_rddn.py --configs ..."
    res = run_rddn_benchmark([CFG.format("baseline"), CFG.format("inter")], size=(64, 96), iters=1, warmup=0,
                             threads=1, json_file=json_file, command=command, out=out)
    text = out.getvalue()

    # header for reproducibility
    assert text.startswith(f"command: {command}\n") and res["meta"]["command"] == command
    assert "torch " in text and "threads" in text and "CPU:" in text

    modules = ["bottom-up", "FPN", "PTG", "RPN", "R-CNN", "total"]
    expected = {
        "params_M": modules, "params_MiB": modules, "feature_infer_MiB": modules,
        "feature_train_MiB": modules, "activations_train_MiB": modules,
        "train_memory_MiB": ["saved", "params", "grads", "optimizer", "total"],
        "time_ms": ["train step", "inference", "bottom-up", "PTG/ref", "FPN", "RPN", "R-CNN"],
    }
    tables = res["tables"]
    assert set(tables) == set(expected)
    for key, cols in expected.items():
        t = tables[key]
        assert t["columns"] == cols
        assert _header(text, t["title"]) == ["config"] + cols  # printed as a pipe table
        assert [r["name"] for r in t["rows"]] == ["baseline", "inter"]
        base, inter = t["rows"]
        for c in cols:  # the reference against itself: 1.0, or "-" (None) where it is 0
            assert base["ratios"][c] == (None if base["values"][c] == 0 else 1.0), (key, c)
            if inter["ratios"][c] is not None:
                assert math.isclose(inter["ratios"][c], inter["values"][c] / base["values"][c])

    # deterministic quantities: same architecture -> same parameters; no PTG in either
    for key in ("params_M", "params_MiB"):
        for r in tables[key]["rows"]:
            v = r["values"]
            assert v["PTG"] == 0
            assert math.isclose(v["total"], sum(v[m] for m in modules[:-1]), rel_tol=1e-9)
        assert tables[key]["rows"][1]["values"] == tables[key]["rows"][0]["values"]
    assert math.isclose(tables["params_MiB"]["rows"][0]["values"]["total"] * 2 ** 20,
                        tables["params_M"]["rows"][0]["values"]["total"] * 1e6 * 4)  # float32

    # TR-Inter runs [images; templates] through the bottom-up: exactly twice its output features
    for key in ("feature_infer_MiB", "feature_train_MiB", "activations_train_MiB"):
        base, inter = (r["values"] for r in tables[key]["rows"])
        assert inter["bottom-up"] > base["bottom-up"] > 0
        assert math.isclose(inter["bottom-up"], 2 * base["bottom-up"], rel_tol=1e-9), key
        assert math.isclose(inter["FPN"], base["FPN"], rel_tol=1e-9), key  # FPN sees the differences
    mem_base, mem_inter = (r["values"] for r in tables["train_memory_MiB"]["rows"])
    assert mem_inter["saved"] > mem_base["saved"] > 0
    assert math.isclose(mem_base["optimizer"], 2 * mem_base["grads"])  # AdamW: two states

    with open(json_file) as f:
        assert json.load(f)["tables"]["params_M"] == tables["params_M"]
