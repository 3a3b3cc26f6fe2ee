"""tools/predict.py's library (defect_det/inference/folder.py, cli.py): image discovery, the template pairing
rule and CSV, the outputs of a folder run (predictions, decisions, panels, report), bad input named."""
import csv
import json
import os

import pytest

from model_files import TR_PRE, saved_model  # tests/inference/model_files.py
from defect_det.inference.folder import find_images, pair_templates


def test_find_images_and_pairing_rule(tmp_path):
    (tmp_path / "a").mkdir()
    for name in ("a/1234_1.jpg", "a/1234_2.jpg", "a/template_1234.jpg", "a/99.png", "a/notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    images = find_images([str(tmp_path / "a")])
    assert [os.path.basename(p) for p in images] == ["1234_1.jpg", "1234_2.jpg", "99.png"]
    assert find_images([str(tmp_path / "a" / "*_1.jpg")]) == [str(tmp_path / "a" / "1234_1.jpg")]
    pairs = pair_templates(images)
    assert pairs[images[0]] == pairs[images[1]] == str(tmp_path / "a" / "template_1234.jpg")
    assert pairs[images[2]] is None
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "template_99.jpg").write_bytes(b"x")
    assert pair_templates(images, templates_dir=str(tmp_path / "t"))[images[2]] == str(tmp_path / "t" / "template_99.jpg")
    table = tmp_path / "pairs.csv"
    table.write_text(f"image,template\n99.png,{tmp_path / 't' / 'template_99.jpg'}\n")
    by_csv = pair_templates(images, pairs_csv=str(table))
    assert by_csv[images[2]] == str(tmp_path / "t" / "template_99.jpg") and by_csv[images[0]] is None
    table.write_text("99.png,/no/such/template.jpg\n")
    with pytest.raises(FileNotFoundError, match="line 1"):
        pair_templates(images, pairs_csv=str(table))
    with pytest.raises(FileNotFoundError, match="nope"):
        find_images([str(tmp_path / "nope")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image"):
        find_images([str(tmp_path / "empty")])


def test_predict_folder_writes_decisions_panels_and_report(tiny_fabric, tmp_path):
    from defect_det.inference.cli import main

    names = tiny_fabric["names"]
    cfg_file, weights = saved_model(names, tmp_path, **TR_PRE)
    folder = os.path.join(tiny_fabric["root"], "unseen_texture")
    out = tmp_path / "pred"
    rows = main(["--config-file", cfg_file, "--input", folder, "--output", str(out), "--score-thresh", "0.05",
                 "--no-progress", "MODEL.WEIGHTS", weights])
    n = len(find_images([folder]))
    assert len(rows) == n > 0
    with open(out / "decisions.csv") as f:
        decisions = list(csv.DictReader(f))
    assert len(decisions) == n and {d["decision"] for d in decisions} <= {"OK", "NG"}
    ng = [d["decision"] == "NG" for d in decisions]
    assert ng == sorted(ng, reverse=True)                                    # NG first
    preds = json.loads((out / "predictions.json").read_text())
    assert all({"file_name", "bbox", "score", "category_id", "category"} <= set(p) for p in preds)
    assert len(os.listdir(out / "panels")) == n
    report = (out / "report.html").read_text()
    assert report.count("<tr class=") == n and "panels/" in report and cfg_file in report
    with pytest.raises(SystemExit, match="MODEL.WEIGHTS is empty"):
        main(["--config-file", cfg_file, "--input", folder, "--output", str(out), "MODEL.WEIGHTS", ""])
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    (lonely / "5_1.jpg").write_bytes(open(rows[0]["image"], "rb").read())
    with pytest.raises(SystemExit, match="needs a template per image"):
        main(["--config-file", cfg_file, "--input", str(lonely), "--output", str(out),
              "MODEL.WEIGHTS", weights])


def test_predict_folder_tiled(tiny_fabric, tmp_path):
    """--tile: each image through TiledPredictor (windows smaller than the 160x128 images)."""
    from defect_det.inference.cli import main

    names = tiny_fabric["names"]
    cfg_file, weights = saved_model(names, tmp_path)
    folder = os.path.join(tiny_fabric["root"], "unseen_texture")
    rows = main(["--config-file", cfg_file, "--input", folder, "--output", str(tmp_path / "tiled"),
                 "--tile", "96", "--overlap", "0.25", "--score-thresh", "0.05", "--no-progress",
                 "MODEL.WEIGHTS", weights])
    assert len(rows) == len(find_images([folder]))
    preds = json.loads((tmp_path / "tiled" / "predictions.json").read_text())
    assert preds and all(0 <= p["bbox"][0] and p["bbox"][0] + p["bbox"][2] <= 160.5 for p in preds)
