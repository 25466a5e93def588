"""``benchmarks/generalisation.py`` on a generated three-dataset layout: each fold trains on the
other two sets' frames and never on the one it is tested on; done folds are tabulated, not rerun;
``--compare`` gives the paired differences."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest

from colonseg.data.io import write_png
from colonseg.data.synthetic import write_folder_dataset, write_neopolyp_dataset
from colonseg.engine.config import load_config

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SIZES = {"kvasir-seg": 5, "cvc-clinicdb": 4, "bkai-neopolyp": 6}  # distinct: counts name the set


@pytest.fixture
def gen(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # it imports paired_dice as its sibling
    import generalisation

    return generalisation


@pytest.fixture
def data(tmp_path) -> Path:
    """The three sets in their own layouts (Kvasir-SEG, CVC-ClinicDB, BKAI Kaggle), with PraNet
    split files for the ``pranet`` fold; distinct seeds, so no frame is in two sets."""
    root = tmp_path / "datasets"
    write_folder_dataset(root / "kvasir-seg", n=SIZES["kvasir-seg"], seed=0)
    (root / "kvasir-seg" / "kavsir_bboxes.json").write_text("{}")
    write_folder_dataset(root / "cvc-clinicdb", n=SIZES["cvc-clinicdb"], seed=100)
    write_neopolyp_dataset(root / "bkai-neopolyp", n=SIZES["bkai-neopolyp"], seed=200)
    for name in ("kvasir-seg", "cvc-clinicdb"):
        (root / name / "splits").mkdir()
        (root / name / "splits" / "pranet_train.txt").write_text("case_0\ncase_1\ncase_2\n")
        (root / name / "splits" / "pranet_test.txt").write_text("case_3\n")
    return root


def _commands(text: str, verb: str) -> list[list[str]]:
    return [
        shlex.split(line)[2:] for line in text.splitlines() if line.startswith(f"colonseg {verb}")
    ]


def test_dry_run_trains_on_the_other_two_sets_and_tests_on_all_of_the_third(
    gen, data, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("COLONSEG_DATA", str(data))  # where the config's own (pranet) data lives
    out = tmp_path / "gen"
    gen.main(["polyp_unet_lite0", "model.pretrained=false", "--out", str(out), "--data",
              str(data), "--epochs", "3", "--dry-run"])  # fmt: skip
    text = capsys.readouterr().out
    trains, evaluates = _commands(text, "train"), _commands(text, "evaluate")
    assert len(trains) == len(evaluates) == 4 and not out.exists()  # printed, nothing run
    held_out = {"kvasir": "kvasir-seg", "clinicdb": "cvc-clinicdb", "bkai": "bkai-neopolyp",
                "pranet": "bkai-neopolyp"}  # fmt: skip
    for fold, train, evaluate in zip(gen.FOLDS, trains, evaluates, strict=True):
        cfg = load_config(train[0], train[1:])  # exactly what `colonseg train` will run
        assert cfg.name == fold and cfg.trainer.max_epochs == 3 and not cfg.model.pretrained
        trained = {(Path(s.path).name, s.split) for s in cfg.data.train}
        tested = evaluate[evaluate.index("--data") + 1]
        assert Path(tested).name == held_out[fold] and "--split" not in evaluate  # all frames
        assert evaluate[evaluate.index("--threshold") + 1] == "0.5"
        if fold == "pranet":  # the config's own data and validation sets: PraNet train → BKAI
            assert trained == {("kvasir-seg", "pranet_train"), ("cvc-clinicdb", "pranet_train")}
            assert {Path(s.path).name for s in cfg.data.val} == {"kvasir-seg", "cvc-clinicdb"}
        else:
            others = {(name, None) for name in SIZES if name != held_out[fold]}
            assert trained == others and list(cfg.data.val) == []  # all frames, no validation
    assert "# kvasir: train cvc-clinicdb (4) + bkai-neopolyp (6), no validation; test " \
           "kvasir-seg, all 5 frames" in text  # fmt: skip
    assert "# pranet: train kvasir-seg:pranet_train (3) + cvc-clinicdb:pranet_train (3); " \
           "test bkai-neopolyp, all 6 frames" in text  # fmt: skip


@pytest.mark.parametrize(
    "extra, message",
    [
        (["data.train=[]"], "sets name, out_dir, data.train, data.val"),
        (["trainer.monitor=val/dice"], "no validation set"),
        (["data.augment=endoscpe"], "Did you mean 'endoscope'"),
    ],
)
def test_what_would_break_the_protocol_is_refused_before_training(
    gen, data, tmp_path, capsys, extra, message
):
    with pytest.raises(SystemExit) as exc:
        gen.main(["polyp_unet_lite0", *extra, "--out", str(tmp_path / "gen"), "--data", str(data),
                  "--folds", "bkai", "--dry-run"])  # fmt: skip
    assert message in str(exc.value) + capsys.readouterr().err


def _write_fold(out: Path, fold: str, dataset: str, scores: list[float]) -> None:
    """What a finished fold leaves: its evaluation and its training record."""
    (out / fold / "eval").mkdir(parents=True)
    rows = [f"{dataset},case_{i},{s},{s}" for i, s in enumerate(scores)]
    (out / fold / "eval" / "per_case.csv").write_text(
        "dataset,id,dice,mdice_256\n" + "\n".join(rows)
    )
    mean = sum(scores) / len(scores)
    summary = {dataset: {"dice": mean, "mdice_256": mean}}
    (out / fold / "eval" / "summary.json").write_text(json.dumps(summary))


def test_done_folds_are_tabulated_not_rerun_and_compared(gen, data, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(gen, "colonseg", lambda args: pytest.fail(f"ran colonseg {args}"))
    monkeypatch.setattr(gen, "seen_in_training", lambda fold, out: 0)
    base, new = tmp_path / "base", tmp_path / "new"
    for fold, dataset in (("kvasir", "kvasir-seg"), ("clinicdb", "cvc-clinicdb"),
                          ("bkai", "bkai-neopolyp")):  # fmt: skip
        _write_fold(base, fold, dataset, [0.5, 0.6, 0.7, 0.8])
        _write_fold(new, fold, dataset, [0.6, 0.7, 0.8, 0.9])  # +0.1 on every frame
    gen.main(["polyp_unet_lite0", "--out", str(new), "--data", str(data), "--folds",
              "kvasir,clinicdb,bkai"])  # fmt: skip
    results = json.loads((new / "results.json").read_text())
    assert results["mean_leave_one_out"]["mdice_256"] == pytest.approx(0.75)
    assert (
        "| **mean, leave one out** |  |  |  | 0.750 | 0.750 | – |" in (new / "table.md").read_text()
    )
    capsys.readouterr()
    gen.main(["--out", str(new), "--compare", str(base), "--folds", "kvasir,clinicdb,bkai"])
    text = capsys.readouterr().out
    assert text.count("| +0.1000 | +0.1000 … +0.1000 | 4 / 0 |") == 3
    assert (
        "| **mean, leave one out** | | 12 | | | **+0.1000** | +0.1000 … +0.1000 | 12 / 0 |" in text
    )


def test_a_fold_trained_by_another_command_is_refused(gen, data, tmp_path):
    out = tmp_path / "gen"
    (out / "bkai").mkdir(parents=True)
    (out / "bkai" / "fold.json").write_text(json.dumps({"command": "colonseg train other"}))
    with pytest.raises(SystemExit, match="use another --out"):
        gen.main(["polyp_unet_lite0", "--out", str(out), "--data", str(data), "--folds", "bkai"])


def test_script_runs_from_the_command_line(data, tmp_path):
    import subprocess

    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "generalisation.py"), "--help"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "leave one dataset out" in done.stdout


def test_each_fold_counts_the_normal_frames_it_calls_polyp(gen, data, tmp_path, monkeypatch):
    (data / gen.NORMAL / "images").mkdir(parents=True)
    monkeypatch.setattr(gen, "seen_in_training", lambda fold, out: 0)
    out, ran = tmp_path / "gen", []

    def predict(args):  # what `colonseg predict` writes: one row per frame
        ran.append(args)
        csv = Path(args[args.index("--out") + 1]) / "predictions.csv"
        csv.parent.mkdir(parents=True)
        csv.write_text("file,polyp\na.jpg,1\nb.jpg,0\nc.jpg,0\nd.jpg,0\n")

    monkeypatch.setattr(gen, "colonseg", predict)
    for fold, dataset in (("kvasir", "kvasir-seg"), ("clinicdb", "cvc-clinicdb"),
                          ("bkai", "bkai-neopolyp")):  # fmt: skip
        _write_fold(out, fold, dataset, [0.5, 0.6, 0.7, 0.8])
    argv = ["polyp_unet_lite0", "--out", str(out), "--data", str(data), "--folds",
            "kvasir,clinicdb,bkai"]  # fmt: skip
    gen.main(argv)
    assert [a[:2] for a in ran] == [["predict", f"{data}/{gen.NORMAL}/images"]] * 3
    assert ran[0][ran[0].index("--model") + 1] == str(out / "kvasir" / "model")
    results = json.loads((out / "results.json").read_text())
    assert results["mean_leave_one_out"]["normal_polyp"] == pytest.approx(0.25)
    assert "| 0.650 | 0.650 | 25.0% |" in (out / "table.md").read_text()
    monkeypatch.setattr(gen, "colonseg", lambda args: pytest.fail(f"ran colonseg {args}"))
    gen.main(argv)  # done: not predicted again


def test_negatives_train_on_some_centres_and_false_alarms_count_the_others(
    gen, data, tmp_path, capsys, monkeypatch
):
    normal = data / gen.NORMAL / "images"
    normal.mkdir(parents=True)
    names = ["centre_A__n1", "centre_A__n2", "centre_B__n1", "centre_C__n1", "remaining__n1"]
    for name in names:
        write_png(normal / f"{name}.jpg", np.zeros((8, 8, 3), np.uint8))
    out = tmp_path / "gen"
    gen.main(["polyp_unet_lite0", "--out", str(out), "--data", str(data), "--folds", "kvasir",
              "--negatives", "a", "--dry-run"])  # fmt: skip
    assert (out / "negatives_train.txt").read_text() == "centre_A__n1\ncentre_A__n2\n"
    (train,) = _commands(capsys.readouterr().out, "train")
    cfg = load_config(train[0], train[1:])
    negatives = [s for s in cfg.data.train if s.get("layout") == "negatives"]
    assert [(s["path"], s["split"]) for s in negatives] == [
        (f"{data}/{gen.NORMAL}", str(out / "negatives_train.txt"))
    ]
    (out / "kvasir" / "normal").mkdir(parents=True)
    rows = "".join(f"{normal / n}.jpg,{int(n != 'centre_B__n1')}\n" for n in names)
    (out / "kvasir" / "normal" / "predictions.csv").write_text("file,polyp\n" + rows)
    fold = gen.create_folds(["kvasir"], str(data))[0]
    assert gen.normal_polyp(out, fold) == pytest.approx(4 / 5)
    assert gen.normal_polyp(out, fold, gen.centre_prefixes(["A"])) == pytest.approx(2 / 3)
    for bad in ("A,B,C", "D"):
        with pytest.raises(SystemExit):
            gen.main(["polyp_unet_lite0", "--out", str(out), "--data", str(data), "--folds",
                      "kvasir", "--negatives", bad, "--dry-run"])  # fmt: skip


def test_an_archived_run_is_small_and_can_still_be_compared(gen, tmp_path, capsys):
    """``--archive`` keeps what ``--compare`` needs after the run folder is gone, and only that."""
    import shutil

    base, new, kept = tmp_path / "base", tmp_path / "new", tmp_path / "kept"
    for fold, dataset in (("kvasir", "kvasir-seg"), ("clinicdb", "cvc-clinicdb"),
                          ("bkai", "bkai-neopolyp")):  # fmt: skip
        _write_fold(base, fold, dataset, [0.5, 0.6, 0.7, 0.8])
        _write_fold(new, fold, dataset, [0.6, 0.7, 0.8, 0.9])
        table = base / fold / "eval" / "per_case.csv"  # evaluate writes many more columns
        rows = table.read_text().splitlines()
        table.write_text("\n".join([rows[0] + ",hd95", *(r + ",3.0" for r in rows[1:])]))
    (base / "table.md").write_text("the table\n")
    folds = "kvasir,clinicdb,bkai"
    gen.main(["--out", str(base), "--archive", str(kept), "--folds", folds])
    shutil.rmtree(base)
    assert (kept / "table.md").read_text() == "the table\n"
    assert (kept / "bkai" / "eval" / "per_case.csv").read_text().splitlines()[:2] == [
        "dataset,id,dice,mdice_256",
        "bkai-neopolyp,case_0,0.5,0.5",
    ]
    capsys.readouterr()
    gen.main(["--out", str(new), "--compare", str(kept), "--folds", folds])
    assert "| **mean, leave one out** | | 12 | | | **+0.1000** |" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="nothing evaluated"):
        gen.main(["--out", str(tmp_path / "none"), "--archive", str(kept), "--folds", folds])
