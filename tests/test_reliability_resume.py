"""Crash safety: a run killed with SIGKILL mid-epoch, resumed with ``--resume``, ends with the
metrics of an uninterrupted run with the same seed (tolerance: 1e-4 absolute; both runs do the
same arithmetic, the slack only covers thread-count differences between processes). A run
killed while it writes ``last.ckpt`` keeps the previous one whole, its DataLoader workers die
with it, and ``--resume`` trains only the remaining steps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
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


# Epoch 2's last.ckpt (the run's second checkpoint) is half written when the process is killed;
# before that, the pids of its DataLoader workers go to argv[2].
_KILLED_IN_WRITE = """
import io, json, os, signal, sys
from pathlib import Path
import torch
from colonseg.engine.config import load_config
from colonseg.engine.train import run_train

real_save = torch.save


def save(obj, f, *args, **kwargs):
    if isinstance(obj, dict) and obj.get("epoch") == 1 and "global_step" in obj:
        data = io.BytesIO()
        real_save(obj, data, *args, **kwargs)
        me = str(os.getpid())
        workers = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()
                   and (p / "stat").read_text().rsplit(")", 1)[1].split()[1] == me]
        Path(sys.argv[2]).write_text(json.dumps({"step": obj["global_step"], "workers": workers}))
        half = data.getvalue()[: len(data.getvalue()) // 2]
        if isinstance(f, (str, os.PathLike)):
            Path(f).write_bytes(half)
        else:
            f.write(half)
            f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, f, *args, **kwargs)


torch.save = save
torch.set_num_threads(1)
run_train(load_config(sys.argv[1]))
"""

# A subreaper: the orphaned workers of the killed run become its children, so it learns how
# each one ended (-9: killed with its parent, as PR_SET_PDEATHSIG asks; 0: left on its own when
# PyTorch's watchdog noticed, up to 5 s later); prints {pid: exit code}.
_REAPER = """
import ctypes, json, os, signal, subprocess, sys
ctypes.CDLL("libc.so.6", use_errno=True).prctl(36, 1)  # PR_SET_CHILD_SUBREAPER
signal.alarm(60)
run = subprocess.Popen(sys.argv[1:])
ended = {}
while True:
    try:
        pid, status = os.waitpid(-1, 0)
    except ChildProcessError:
        break
    ended[pid] = os.waitstatus_to_exitcode(status)
print(json.dumps({"run": ended.pop(run.pid), "workers": ended}))
"""


class CountSteps(L.Callback):
    def __init__(self) -> None:
        self.steps = 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.steps += 1


def test_sigkill_while_last_ckpt_is_written_keeps_the_previous_one(tmp_path):
    from colonseg.engine.config import load_config

    data = write_folder_dataset(tmp_path / "data", n=8, size=64)
    cfg = load_config(
        "polyp_unet_lite0",
        ["name=killed", f"out_dir={tmp_path / 'runs'}", "model.encoder=test_efficientnet",
         "model.pretrained=false", "model.kwargs={}", f"data.train=[{{path: {data}}}]",
         f"data.val=[{{path: {data}}}]", "data.image_size=64", "data.batch_size=4",
         "data.num_workers=1", f"data.cache_dir={tmp_path / 'cache'}", "trainer.max_epochs=3",
         "trainer.accelerator=cpu", "trainer.precision=32-true", "trainer.progress_bar=false",
         "trainer.logger=false", "trainer.checkpoint_minutes=0", "test.after_training=false"],
    )  # fmt: skip
    cfg_file, script, marker = tmp_path / "k.yaml", tmp_path / "k.py", tmp_path / "k.json"
    save_config(cfg, cfg_file)
    script.write_text(_KILLED_IN_WRITE)
    reaper = subprocess.run(
        [sys.executable, "-c", _REAPER, sys.executable, str(script), str(cfg_file), str(marker)],
        env=_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    ended = json.loads(reaper.stdout)
    assert ended["run"] == -signal.SIGKILL, reaper.stderr[-2000:]
    killed = json.loads(marker.read_text())
    assert len(killed["workers"]) >= 2  # a train and a validation loader, one worker each
    assert ended["workers"] == {str(p): -signal.SIGKILL for p in killed["workers"]}

    checkpoints = Path(cfg.out_dir) / "killed" / "checkpoints"
    last = torch.load(checkpoints / "last.ckpt", weights_only=True)
    per_epoch = killed["step"] // 2
    assert last["epoch"] == 0 and last["global_step"] == per_epoch  # the previous one, whole
    assert len(list(checkpoints.glob(".*"))) == 1  # the half-written temporary file

    counter = CountSteps()
    torch.set_num_threads(1)
    run_train(cfg, resume=True, callbacks=[counter])
    assert counter.steps == 2 * per_epoch  # epochs 2 and 3 only
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["global_step"] == 3 * per_epoch
    assert not list(checkpoints.glob(".*")), "the killed write's temporary file is deleted"
