from __future__ import annotations

import json

from typer.testing import CliRunner

from colonseg.cli.main import app
from colonseg.cli.zoo import ZOO_DIR

runner = CliRunner()
ZOO = sorted(p.parent.name for p in ZOO_DIR.glob("*/config.json"))


def test_demo_runs_the_shipped_model(tmp_path):
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["samples"]["n"] == 16
    assert summary["samples"]["dice"] > 0.7  # a trained model, not noise
    assert len(list((tmp_path / "demo" / "overlays").glob("*.png"))) == 16
    assert (tmp_path / "demo" / "report.html").is_file()


def test_models_prints_a_table_of_the_zoo():
    result = runner.invoke(app, ["models"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    lines = [line.split() for line in result.output.splitlines() if line.strip()]
    assert lines[0] == ["name", "method", "architecture", "data", "headline", "metrics"]
    rows = {line[0]: line[1:] for line in lines[2:] if line[0] in ZOO}
    assert rows["default"][:3] == ["supervised", "unet", "tf_efficientnet_lite0"]
    assert rows["mapseg_polyp"][:2] == ["mapseg", "2x"]
    assert rows["mssg_medsam_glas"][0] == "mssg" and rows["polyp_automedsam"][0] == "medsam_box"
    assert set(rows) == set(ZOO) and "?" not in result.output and "…" not in result.output


def test_datasets_check(tiny_dataset_dir):
    result = runner.invoke(app, ["datasets", "check", str(tiny_dataset_dir)])
    assert result.exit_code == 0 and "layout folder, 8 pairs" in result.output
    (tiny_dataset_dir / "masks" / "case_2.png").write_bytes(b"")
    result = runner.invoke(app, ["datasets", "check", str(tiny_dataset_dir)])
    assert result.exit_code == 1 and "case_2.png: file is empty" in result.output


def test_user_errors_are_one_line(tmp_path):
    result = runner.invoke(app, ["train", "polyp_unet_lite0", "trainer.max_epoch=1"])
    assert result.exit_code == 2
    assert "Did you mean: 'max_epochs'" in result.output and "Traceback" not in result.output
    result = runner.invoke(
        app, ["predict", str(tmp_path / "missing.jpg"), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2 and "no such file or folder" in result.output
    result = runner.invoke(
        app, ["evaluate", "--model", "nosuch", "--data", str(tmp_path), "--out", str(tmp_path)]
    )
    assert result.exit_code == 2 and "no such checkpoint" in result.output


def test_predict_cli_exit_codes(tmp_path, tiny_dataset_dir):
    (tiny_dataset_dir / "images" / "bad.jpg").write_bytes(b"nope")
    args = ["predict", str(tiny_dataset_dir / "images"), "--out", str(tmp_path / "p")]
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and "bad.jpg" in result.output
    assert len(list((tmp_path / "p" / "masks").glob("*.png"))) == 8
    assert runner.invoke(app, [*args, "--skip-bad"]).exit_code == 0


def test_synth_writes_a_grid(tmp_path):
    from typer.testing import CliRunner

    from colonseg.cli.main import app
    from colonseg.engine.demo import SAMPLES_DIR

    out = tmp_path / "grid.png"
    result = CliRunner().invoke(
        app, ["synth", str(SAMPLES_DIR / "images"), "--out", str(out), "--n", "3"]
    )
    assert result.exit_code == 0, result.output
    import cv2

    grid = cv2.imread(str(out))
    assert grid.shape == (2 * 256, 2 * 2 * 256, 3)  # 3 examples → 2 rows of 2 cells, padded
    result = CliRunner().invoke(app, ["synth", str(tmp_path / "none"), "--out", str(out)])
    assert result.exit_code == 2 and "none: folder not found" in result.output


def test_mssg_propose_writes_proposals_and_overlays(tmp_path):
    from colonseg.data.synthetic import write_glas_dataset

    root = write_glas_dataset(tmp_path / "glas", {"train": 2}, size=(40, 56))
    out = tmp_path / "spm"
    args = ["mssg", "propose", str(root), "--out", str(out), "--iterations", "2", "--scale", "1"]
    result = runner.invoke(app, [*args, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "2 computed" in result.output
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["train_1.jpg", "train_2.jpg"]
    (refined,) = out.glob("refined-*")
    assert "litemedsam refinement: 2 computed" in result.output
    assert sorted(p.name for p in (refined / "proposals").iterdir()) == [
        "train_1.png",
        "train_2.png",
    ]
    again = runner.invoke(app, [*args, "--device", "cpu"]).output
    assert "2 cached" in again and "refinement: 0 computed, 2 cached" in again
    unknown = runner.invoke(app, [*args, "--refine", "sam3"])
    assert unknown.exit_code != 0 and "refine.backbone 'sam3'" in unknown.output
    missing = runner.invoke(app, ["mssg", "propose", str(tmp_path / "nope"), "--out", str(out)])
    assert missing.exit_code == 2 and "folder not found" in missing.output


def test_ensemble_combines_zoo_models_and_refuses_mismatches(tmp_path):
    out = tmp_path / "both"
    result = runner.invoke(app, ["ensemble", "default", "default", "--out", str(out), "--half"])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["arch"] == "ensemble" and len(config["init_kwargs"]["members"]) == 2
    result = runner.invoke(app, ["ensemble", "default", "polyp_unet_lite0_448", "--out", str(out)])
    assert result.exit_code == 2 and "polyp_unet_lite0_448: its size" in result.output


def test_predict_on_a_dataset_root_writes_a_summary_a_review_and_polygons(
    tmp_path, tiny_dataset_dir
):
    import csv

    out = tmp_path / "p"
    args = ["predict", str(tiny_dataset_dir), "--out", str(out), "--device", "cpu"]
    result = runner.invoke(app, [*args, "--export", "labelme"])
    assert result.exit_code == 0, result.output
    assert "8 images →" in result.output and "left out 8 label files" in result.output
    assert "review:" in result.output and "predictions.csv" in result.output
    assert sorted(p.name for p in (out / "masks").rglob("*.png")) == [
        f"case_{i}.png" for i in range(8)
    ]
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert [row["mask"] for row in rows] == [f"masks/images/case_{i}.png" for i in range(8)]
    assert len(list((out / "masks" / "images").glob("*.json"))) == 8
    assert (out / "review.html").read_text().count("<figure") == 8
    wrong = runner.invoke(app, [*args, "--export", "cvat"])
    assert wrong.exit_code == 2 and "Unknown export format 'cvat'" in wrong.output
