"""What the one engine gives every method, tested for all four on tiny generated data:
``--print-config``, ``--resume`` (only the remaining steps run), the timed and the on-stop
checkpoint, and two-process DDP on the CPU whose model ``predict`` loads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from typer.testing import CliRunner

from colonseg.cli.main import app
from colonseg.data.synthetic import (
    write_folder_dataset,
    write_glas_dataset,
    write_normal_frames,
)
from colonseg.engine.config import load_config
from colonseg.engine.train import run_train

METHODS = ["supervised", "mapseg", "medsam_box", "mssg"]


def tiny_run(method: str, tmp: Path) -> tuple[str, list[str]]:
    """A shipped config of ``method`` and the overrides that shrink it to seconds on generated
    data (one epoch of two batches, no test-set evaluation), in the one vocabulary."""
    common = [f"out_dir={tmp / 'runs'}", "name=tiny", "trainer.max_epochs=1",
              "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
              "trainer.accelerator=cpu", "trainer.precision=32-true",
              "trainer.progress_bar=false", "trainer.log_every_n_steps=1",
              "test.after_training=false"]  # fmt: skip
    if method == "supervised":
        d = write_folder_dataset(tmp / "discs", n=8, size=64)
        return "polyp_unet_lite0", [*common, "model.encoder=test_efficientnet",
                                    "model.pretrained=false", "model.kwargs={}",
                                    f"data.train=[{{path: {d}}}]", f"data.val=[{{path: {d}}}]",
                                    "data.image_size=64", "data.batch_size=2"]  # fmt: skip
    if method == "mapseg":
        root = write_normal_frames(tmp / "frames")
        return "mapseg/polyp", [*common, f"data.root={root}", "data.normal=normal",
                                "data.textures=textures", "data.image_size=64",
                                "data.val_fraction=0.25", "data.batch_size=2",
                                "model.encoder=test_efficientnet", "model.pretrained=false",
                                "model.width=16", "model.memory_size=4"]  # fmt: skip
    if method == "medsam_box":
        d = write_folder_dataset(tmp / "discs", n=6, size=64)
        return "medsam_box/polyp", [*common, f"data.train=[{{path: {d}}}]", "data.test=[]",
                                    f"data.cache_dir={tmp / 'cache'}", "data.batch_size=2",
                                    "data.val_fraction=0.34"]  # fmt: skip
    root = write_glas_dataset(tmp / "glas")
    return "mssg/glas", [*common, f"data.path={root}", f"data.proposals={tmp / 'spm'}",
                         "data.size=[48,64]", "data.batch_size=2", "data.val_fraction=0.25",
                         "spm.iterations=3", "spm.channels=8", "refine.backbone=none",
                         "model.encoder=test_efficientnet", "model.pretrained=false",
                         "test.baselines=false"]  # fmt: skip


class CountSteps(L.Callback):
    def __init__(self) -> None:
        self.steps = 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.steps += 1


@pytest.mark.parametrize("method", METHODS)
def test_print_config_shows_every_key_in_the_one_vocabulary(method, tmp_path):
    config, overrides = tiny_run(method, tmp_path)
    result = CliRunner().invoke(app, ["train", config, *overrides, "--print-config"])
    assert result.exit_code == 0, result.output
    printed = yaml.safe_load(result.output)
    assert printed["method"] == method and printed["name"] == "tiny"
    assert {"out_dir", "seed", "data", "model", "optim", "trainer", "test"} <= set(printed)
    assert printed["model"]["name"] and printed["optim"]["lr"] > 0
    assert printed["trainer"]["checkpoint_minutes"] == 10 and printed["test"]["only"] is False
    assert not (tmp_path / "runs").exists()  # printing trains nothing
    again = tmp_path / "printed.yaml"
    again.write_text(result.output)
    assert load_config(again) == load_config(config, overrides)  # the printout is the config


class StopAtEpoch(L.Callback):
    """Ctrl-C as epoch ``epoch`` starts."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, module) -> None:
        if trainer.current_epoch == self.epoch:
            raise KeyboardInterrupt


@pytest.mark.parametrize("method", METHODS)
def test_resume_runs_only_the_remaining_steps(method, tmp_path):
    config, overrides = tiny_run(method, tmp_path)
    cfg = load_config(config, [*overrides, "trainer.max_epochs=2"])
    with pytest.raises(SystemExit):  # stopped after the first of two epochs
        run_train(cfg, callbacks=[StopAtEpoch(1)])
    last = Path(cfg.out_dir) / "tiny" / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=True)
    per_epoch = saved["global_step"]
    assert per_epoch > 0
    if method == "medsam_box":  # the frozen SAM stays out of the training checkpoint
        assert not [k for k in saved["state_dict"] if k.startswith("net.sam.")]
    counter = CountSteps()
    result = run_train(cfg, resume=True, callbacks=[counter])
    assert counter.steps == per_epoch  # epoch 2 only: the first epoch was not trained again
    assert torch.load(last, weights_only=True)["global_step"] == 2 * per_epoch
    assert (result["model_dir"] / "weights.safetensors").is_file()
    assert len(result["metrics"]["history"]) == 2  # the first epoch's log rows are kept
    assert "colonseg evaluate --model" in result["evaluate_command"]


class StopAt(L.Callback):
    """Checks what the engine left on disk at a batch, then stops the run as ``exc`` would."""

    def __init__(self, last: Path, exc: BaseException | None) -> None:
        self.last, self.exc, self.seen = last, exc, None

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == 1:
            if self.last.is_file():
                self.seen = torch.load(self.last, weights_only=True)["global_step"]
            if self.exc is not None:
                raise self.exc


@pytest.mark.parametrize("method", METHODS)
def test_a_checkpoint_every_few_minutes_and_on_a_stop(method, tmp_path):
    config, overrides = tiny_run(method, tmp_path)
    last = tmp_path / "runs" / "tiny" / "checkpoints" / "last.ckpt"
    timed = StopAt(last, None)  # due after every batch: written mid-epoch, before epoch end
    run_train(load_config(config, [*overrides, "trainer.checkpoint_minutes=1e-9"]),
              callbacks=[timed])  # fmt: skip
    assert timed.seen == 1
    last.unlink()
    untimed = StopAt(last, None)
    run_train(load_config(config, [*overrides, "trainer.checkpoint_minutes=0"]),
              callbacks=[untimed])  # fmt: skip
    assert untimed.seen is None  # switched off: nothing until the epoch ends
    last.unlink()
    stopped = StopAt(last, KeyboardInterrupt())  # Ctrl-C (SIGTERM takes the same path)
    with pytest.raises(SystemExit):
        run_train(load_config(config, overrides), callbacks=[stopped])
    assert stopped.seen is None and torch.load(last, weights_only=True)["global_step"] == 1
    assert not list(last.parent.glob(".*.tmp"))


def _env() -> dict:
    root = str(Path(__file__).resolve().parents[2])
    path = root + os.pathsep + os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


@pytest.mark.parametrize("method", METHODS)
def test_ddp_on_two_cpu_processes_writes_a_model_predict_loads(method, tmp_path):
    config, overrides = tiny_run(method, tmp_path)
    ddp = ["trainer.devices=2", "trainer.strategy=ddp"]
    proc = subprocess.run(
        [sys.executable, "-m", "colonseg", "train", config, *overrides, *ddp],
        env=_env(), capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "evaluate it with: colonseg evaluate --model" in proc.stdout
    model = tmp_path / "runs" / "tiny" / "model"
    images = write_folder_dataset(tmp_path / "frames", n=1, size=64) / "images"
    predicted = CliRunner().invoke(
        app, ["predict", str(images), "--model", str(model), "--out", str(tmp_path / "pred")]
    )
    assert predicted.exit_code == 0, predicted.output
    assert (tmp_path / "pred" / "masks" / "case_0.png").is_file()


@pytest.mark.parametrize("method", METHODS)
def test_synthetic_quick_run_from_the_command_line(method, tmp_path):
    config = {"supervised": "polyp_unet_lite0", "mapseg": "mapseg/polyp",
              "medsam_box": "medsam_box/polyp", "mssg": "mssg/glas"}[method]  # fmt: skip
    tiny = ["model.encoder=test_efficientnet", "model.pretrained=false"]
    small = {"supervised": [*tiny, "model.kwargs={}"], "mapseg": [*tiny, "model.width=16"],
             "medsam_box": [], "mssg": [*tiny, "refine.backbone=none", "spm.iterations=3"]}[
        method
    ]  # fmt: skip
    result = CliRunner().invoke(
        app, ["train", config, f"out_dir={tmp_path}", "trainer.accelerator=cpu",
              "trainer.progress_bar=false", *small, "--synthetic", "--quick"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    name = load_config(config).name
    assert (tmp_path / f"{name}-quick" / "model" / "config.json").is_file()
    assert "evaluate it with: colonseg evaluate" in result.output
