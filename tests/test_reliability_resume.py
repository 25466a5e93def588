"""Crash safety: a run killed with SIGKILL mid-epoch, resumed with ``--resume``, ends with the
metrics of an uninterrupted run with the same seed (tolerance: 1e-4 absolute; both runs do the
same arithmetic, the slack only covers thread-count differences between processes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from colonseg.config import save_config
from colonseg.data.synthetic import write_folder_dataset
from colonseg.engine.train import run_train
from colonseg.errors import ColonsegError

KILL_AT = (1, 3)  # (epoch, batch): SIGKILL the run in the middle of its second epoch

_KILLED_RUN = """
import os, signal, sys
import lightning as L
import torch
from colonseg.engine.config import load_config
from colonseg.engine.train import run_train

class Kill(L.Callback):
    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if (trainer.current_epoch, batch_idx) == ({epoch}, {batch}):
            os.kill(os.getpid(), signal.SIGKILL)  # no handler, no cleanup: a real crash

torch.set_num_threads(1)
run_train(load_config(sys.argv[1]), callbacks=[Kill()])
"""


@pytest.fixture
def resume_cfg(tmp_path):
    from colonseg.engine.config import load_config

    data = write_folder_dataset(tmp_path / "data", n=24, size=64)
    return load_config(
        "polyp_unet_lite0",
        [
            "name=killed",
            f"out_dir={tmp_path / 'runs'}",
            "model.encoder=test_efficientnet",
            "model.pretrained=false",
            "model.kwargs={}",
            f"data.train=[{{path: {data}}}]",
            f"data.val=[{{path: {data}}}]",
            "data.image_size=64",
            "data.batch_size=4",
            f"data.cache_dir={tmp_path / 'cache'}",
            "trainer.max_epochs=3",
            "trainer.accelerator=cpu",
            "trainer.precision=32-true",
            "trainer.progress_bar=false",
            "trainer.log_every_n_steps=1",
        ],
    )


def _env() -> dict:
    root = str(Path(__file__).resolve().parents[1])
    path = root + os.pathsep + os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}  # as in this process


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(resume_cfg, tmp_path):
    cfg_file = tmp_path / "killed.yaml"
    save_config(resume_cfg, cfg_file)
    script = tmp_path / "killed_run.py"
    script.write_text(_KILLED_RUN.format(epoch=KILL_AT[0], batch=KILL_AT[1]))
    proc = subprocess.run(
        [sys.executable, str(script), str(cfg_file)], env=_env(), capture_output=True, timeout=300
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    run = Path(resume_cfg.out_dir) / "killed"
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == KILL_AT[0] - 1  # the killed epoch left no checkpoint behind
    assert not (run / "model").exists() and not (run / "metrics.json").exists()
    assert not list((run / "checkpoints").glob(".*")), "a temporary checkpoint was left behind"

    resumed = subprocess.run(
        [sys.executable, "-m", "colonseg", "train", str(cfg_file), "--resume"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    after_crash = json.loads((run / "metrics.json").read_text())

    torch.set_num_threads(1)
    clean = run_train(OmegaConf.merge(resume_cfg, {"name": "uninterrupted"}))["metrics"]
    for key in ("val/dice", "val/accuracy", "val/loss", "train/loss_epoch"):
        assert after_crash[key] == pytest.approx(clean[key], abs=1e-4), key
    assert len(after_crash["history"]) == len(clean["history"]) == 3


def test_resume_refuses_a_corrupt_or_missing_checkpoint(tiny_cfg):
    with pytest.raises(ColonsegError, match="nothing to resume"):
        run_train(tiny_cfg, resume=True)
    last = Path(tiny_cfg.out_dir) / "tiny" / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    last.write_bytes(b"PK\x03\x04 half a zip")
    with pytest.raises(ColonsegError, match="unreadable or refused checkpoint.*delete it"):
        run_train(tiny_cfg, resume=True)
