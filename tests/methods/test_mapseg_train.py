"""MAPSeg end to end on generated frames: a 2-step training run, then TEST.only."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest
import torch

from colonseg.data.io import read_image, write_png
from colonseg.data.synthetic import write_folder_dataset
from colonseg.engine.config import load_config
from colonseg.engine.predict import Predictor
from colonseg.engine.train import run_train
from colonseg.errors import ColonsegError


@pytest.fixture
def data_dir(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(12):
        frame = np.zeros((72, 72, 3), np.uint8)
        cv2.circle(frame, (36, 36), 33, (180, 90, 70), -1)
        frame = np.clip(frame + rng.normal(0, 8, frame.shape) * (frame > 0), 0, 255)
        write_png(tmp_path / "normal" / f"n{i}.png", frame.astype(np.uint8))
    write_png(tmp_path / "textures" / "t" / "a.png", rng.integers(0, 255, (20, 20, 3), np.uint8))
    write_folder_dataset(tmp_path / "polyps", n=3, size=64)
    return tmp_path


def _cfg(data_dir, *extra):
    return load_config("configs/mapseg/polyp.yaml", _cfg_overrides(data_dir, *extra))


def _cfg_overrides(data_dir, *extra) -> list[str]:
    return [
        f"RESULT_DIR={data_dir / 'runs'}",
        f"DATASET.data_dir={data_dir}",
        "DATASET.normal=normal",
        "DATASET.textures=textures",
        "DATASET.resize=64",
        "DATASET.val_fraction=0.25",
        "MODEL.encoder=test_efficientnet",
        "MODEL.pretrained=false",
        "MODEL.width=16",
        "MEMORY.nb_memory_sample=4",
        "TRAIN.epochs=1",
        "TRAIN.batch_size=4",
        "TRAIN.limit_train_batches=2",
        "TRAIN.accelerator=cpu",
        "TEST.datasets=[{path: polyps}]",
        *extra,
    ]


def test_two_step_training_run_then_test_only(data_dir):
    result = run_train(_cfg(data_dir))
    config = json.loads((result["model_dir"] / "config.json").read_text())
    assert config["arch"] == "mapseg"
    assert config["postprocess"] == "fov,otsu=0,close=5,fill_holes,keep_largest"
    assert config["init_kwargs"]["memory"] is True
    assert config["tta"] == "d4"  # the config's TEST.tta travels with the checkpoint
    summary = result["summary"]["polyps"]
    assert 0 <= summary["dice"] <= 1 and "pixel_auroc" in summary
    assert 0 <= summary["image_auroc"] <= 1
    # image scores come from evaluate's per-case peaks: the same predictions, not a second pass
    predictor = Predictor.from_pretrained(result["model_dir"])
    with open(data_dir / "runs" / "mapseg_polyp" / "test" / "per_case.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3
    for row in rows:
        frame = read_image(data_dir / "polyps" / "images" / f"{row['id']}.png")
        assert float(row["peak"]) == pytest.approx(predictor.predict(frame).prob.max(), abs=1e-5)
    normal = result["summary"]["normal:held-out"]
    assert 0 <= normal["fp_area_screen"] <= normal["fp_area"] <= 1  # the floor only removes
    from safetensors import safe_open

    with safe_open(str(result["model_dir"] / "weights.safetensors"), "pt") as f:
        assert f.get_tensor("memory.filled").item() is True  # the memory travels with the weights
        assert f.get_tensor("memory.encoded").numel() > 0 and "memory.level0" not in f.keys()
    again = run_train(_cfg(data_dir, "TEST.only=True", f"TEST.checkpoint={result['model_dir']}"))
    assert again["summary"]["polyps"]["dice"] == pytest.approx(summary["dice"])
    one_pass = run_train(
        _cfg(data_dir, "TEST.only=True", f"TEST.checkpoint={result['model_dir']}", "TEST.tta=none")
    )["summary"]["polyps"]
    assert one_pass["pixel_auroc"] != pytest.approx(summary["pixel_auroc"], abs=1e-9)


def test_ablation_without_memory_and_bad_overrides(data_dir):
    result = run_train(_cfg(data_dir, "MEMORY.enabled=false", "EXP_NAME=nomem"))
    config = json.loads((result["model_dir"] / "config.json").read_text())
    assert config["init_kwargs"]["memory"] is False
    with pytest.raises(ColonsegError, match="invalid config"):
        _cfg(data_dir, "TRAIN.epoch=3")
    with pytest.raises(ColonsegError, match="Unknown memory match 'pixel'"):
        run_train(_cfg(data_dir, "MEMORY.match=pixel", "EXP_NAME=bad_match"))
    with pytest.raises(
        ColonsegError, match="Unknown test-time augmentation 'd8'"
    ):  # before any training
        run_train(_cfg(data_dir, "TEST.tta=d8", "EXP_NAME=bad_tta"))
    assert not (data_dir / "runs" / "bad_tta").exists()


def test_mvtec_style_target_trains_and_tests_on_its_own_folders(data_dir):
    rng = np.random.default_rng(1)
    root = data_dir / "polypmv"
    for split, n in (("train/good", 8), ("test/good", 3)):
        for i in range(n):
            frame = np.full((72, 72, 3), (170, 90, 80), np.uint8)
            frame = np.clip(frame + rng.normal(0, 8, frame.shape), 0, 255).astype(np.uint8)
            write_png(root / split / f"{i:03d}.png", frame)
    for i in range(2):
        frame, mask = np.full((72, 72, 3), (170, 90, 80), np.uint8), np.zeros((72, 72), np.uint8)
        cv2.circle(frame, (30, 40), 12, (220, 60, 60), -1)
        cv2.circle(mask, (30, 40), 12, 255, -1)
        write_png(root / "test" / "anomaly" / f"{i:03d}.png", frame)
        write_png(root / "ground_truth" / "anomaly" / f"{i:03d}_mask.png", mask)
    result = run_train(
        _cfg(data_dir, "DATASET.target=polypmv", "TEST.datasets=[]", "MEMORY.match=patch")
    )
    config = json.loads((result["model_dir"] / "config.json").read_text())
    assert config["init_kwargs"]["memory_match"] == "patch"
    assert config["provenance"]["train"]["normal_frames"] == 6  # 8 train/good, 2 held for val
    summary = result["summary"]
    assert set(summary) == {"polypmv", "normal:held-out"}
    assert summary["polypmv"]["n"] == 2 and 0 <= summary["polypmv"]["aupro"] <= 1
    assert summary["normal:held-out"]["n"] == 3  # test/good, not the validation share


def test_split_seed_keeps_the_held_out_frames_when_the_training_seed_changes(data_dir):
    from colonseg.methods.mapseg.data import held_out_normal as _held_out_normal

    first = _held_out_normal(_cfg(data_dir))
    assert len(first) == 3  # a quarter of 12 frames
    reseeded = [_held_out_normal(_cfg(data_dir, f"TRAIN.seed={s}")) for s in range(1, 6)]
    assert any(r != first for r in reseeded)  # TRAIN.seed alone moves the split
    for s in range(1, 6):
        assert _held_out_normal(_cfg(data_dir, f"TRAIN.seed={s}", "DATASET.split_seed=0")) == first


def test_an_older_checkpoint_is_rebuilt_with_the_memory_frames_it_picked(data_dir, tmp_path):
    import importlib.util
    from pathlib import Path

    from safetensors.torch import load_file, save_file

    from colonseg.engine.checkpoint import load_pretrained

    path = Path(__file__).resolve().parents[2] / "scripts" / "mapseg_memory_frames.py"
    spec = importlib.util.spec_from_file_location("mapseg_memory_frames", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    overrides = ["TRAIN.seed=3", "EXP_NAME=old"]
    model = run_train(_cfg(data_dir, *overrides))["model_dir"]
    net, _ = load_pretrained(model)
    state = load_file(model / "weights.safetensors")
    del state["memory.encoded"], state["memory.lengths"]  # as older files: features, no frames
    state.update({f"memory.level{i}": m.clone() for i, m in enumerate(net.memory.items())})
    old = tmp_path / "old"
    old.mkdir()
    (old / "config.json").write_text((model / "config.json").read_text())
    save_file(state, str(old / "weights.safetensors"))
    with pytest.raises(ColonsegError, match="memory features"):
        load_pretrained(old)
    config = "configs/mapseg/polyp.yaml"
    with pytest.raises(ColonsegError, match="pass the overrides the run was trained with"):
        script.rebuild(old, tmp_path / "x", config, _cfg_overrides(data_dir, "TRAIN.seed=4"))
    script.rebuild(old, tmp_path / "new", config, _cfg_overrides(data_dir, *overrides))
    rebuilt = load_file(tmp_path / "new" / "weights.safetensors")
    original = load_file(model / "weights.safetensors")
    assert rebuilt.keys() == original.keys()
    for key, tensor in original.items():
        assert torch.equal(rebuilt[key], tensor), key
