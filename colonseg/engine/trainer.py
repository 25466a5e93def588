"""``create_trainer``: the one Lightning Trainer of colonseg, and the callbacks every run gets.

Every method trains through it, so every method has the same run folder and the same
capabilities: a rolling ``checkpoints/last.ckpt`` at each epoch end, every
``trainer.checkpoint_minutes`` of training and when the run is stopped (Ctrl-C, SIGTERM), so a
stopped run loses minutes, not an epoch; ``--resume`` from it; per-epoch reseeding; the time of
each epoch; CSV + TensorBoard logs; DDP (``trainer.strategy=ddp``) and mixed precision; an
exponential moving average of the weights as the model (``trainer.ema_decay``).
Every checkpoint is written to a hidden temporary file beside it and renamed over it, so a run
killed while writing one (``kill -9``, the out-of-memory killer) keeps the previous one whole;
the next run deletes the temporary file it left.
"""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_info
from omegaconf import DictConfig

from colonseg.data.io import remove_stale_temp, write_atomic
from colonseg.device import native_bf16
from colonseg.errors import ColonsegError

__all__ = [
    "AtomicCheckpointIO",
    "EpochSeed",
    "EpochTimer",
    "SafeCheckpoint",
    "check_resumable",
    "create_trainer",
    "saved_net",
    "trainer_precision",
]


class EpochSeed(L.Callback):
    """Reseed every global RNG (Python, NumPy, torch) with ``seed + epoch`` as each training epoch
    starts (dropout and anything a model or loss draws), so a run resumed from an epoch's
    checkpoint replays what an uninterrupted run does."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        L.seed_everything(self.seed + trainer.current_epoch, workers=True, verbose=False)


class EpochTimer(L.Callback):
    """Prints each epoch's wall time and main metrics (rank 0), and keeps them in ``seconds``."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start = 0.0

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        # a run resumed mid-epoch gets no on_train_epoch_start for that epoch: time it from here
        self._start = time.monotonic()

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._start = time.monotonic()

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        took = time.monotonic() - self._start
        self.seconds.append(took)
        shown = {
            k: float(v)
            for k, v in trainer.callback_metrics.items()
            if v.numel() == 1 and k.split("/")[0] in ("train", "val") and not k.endswith("_step")
        }
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in sorted(shown.items())[:6])
        rank_zero_info(
            f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}: {took:.1f} s"
            + (f" ({metrics})" if metrics else "")
        )


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer with its temporary file beside the checkpoint, renamed over
    it (:func:`~colonseg.data.io.write_atomic`). Lightning's own writes it to the system temporary
    folder and moves it: a plain copy, which a kill can cut short, when the run folder is on
    another file system; and what a kill leaves there is never cleaned."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None:  # Lightning's TypeError
            return super().save_checkpoint(checkpoint, path, storage_options)
        write_atomic(path, lambda tmp: torch.save(checkpoint, tmp))


class SafeCheckpoint(L.Callback):
    """Writes the rolling ``last.ckpt`` every ``minutes`` of training and when the run stops on
    an exception (Ctrl-C, SIGTERM) with steps trained since the last checkpoint, atomically (a
    temporary file renamed over the old one), on rank 0. ``minutes`` 0: only on a stop. As
    training starts, rank 0 deletes the temporary files of ``last.ckpt`` that a killed run left."""

    def __init__(self, path: Path, minutes: float) -> None:
        self.path, self.minutes = Path(path), minutes
        self._last, self._saved_step = time.monotonic(), -1

    def _save(self, trainer: L.Trainer) -> None:
        if trainer.is_global_zero:
            state = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
            write_atomic(self.path, lambda tmp: torch.save(state, tmp))
        self._last, self._saved_step = time.monotonic(), trainer.global_step

    def on_save_checkpoint(self, trainer: L.Trainer, module: L.LightningModule, checkpoint):
        self._saved_step = trainer.global_step  # any checkpoint (the epoch-end one) counts

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            remove_stale_temp(self.path.parent, [self.path.name])
        self._last, self._saved_step = time.monotonic(), trainer.global_step

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if self.minutes > 0 and time.monotonic() - self._last >= 60 * self.minutes:
            self._save(trainer)

    def on_exception(self, trainer: L.Trainer, module: L.LightningModule, exc: BaseException):
        if trainer.state.fn == "fit" and trainer.global_step > self._saved_step:
            self._save(trainer)
            rank_zero_info(f"stopped: {self.path} written; continue with --resume")


def saved_net(trainer: L.Trainer, module: L.LightningModule) -> torch.nn.Module:
    """The network a model copy taken during training must hold: the moving average of the
    weights when ``trainer.ema_decay`` keeps one (what validation scored), else the module's."""
    for callback in trainer.callbacks:
        average = getattr(callback, "_average_model", None)  # Lightning's WeightAveraging
        if isinstance(callback, EMAWeightAveraging) and average is not None:
            return average.module.net
    return module.net


def check_resumable(last: Path) -> int:
    """Refuse a missing, corrupt or code-carrying ``last.ckpt`` in one line before Lightning
    reads it (tensors and plain values only: ``torch.load(weights_only=True)``); return the
    epoch it was saved at."""
    if not last.is_file():
        raise ColonsegError(f"{last}: nothing to resume (train without --resume first)")
    try:
        return int(torch.load(last, map_location="cpu", weights_only=True, mmap=True)["epoch"])
    except Exception as exc:  # noqa: BLE001 - torch raises many types for bad files
        raise ColonsegError(
            f"{last}: unreadable or refused checkpoint ({exc.__class__.__name__}); delete it "
            "to start the run over"
        ) from None


def trainer_precision(precision: str = "auto", accelerator: str = "auto") -> str:
    """Lightning precision for ``auto``: bf16 autocast on CPUs that run it natively (~2.5x faster
    than fp32 for a Lite0 U-Net with AVX512-BF16), bf16/fp16 AMP on GPUs, else fp32."""
    if precision != "auto":
        return precision
    if accelerator == "cpu" or not torch.cuda.is_available():
        return "bf16-mixed" if native_bf16(torch.device("cpu")) else "32-true"
    return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"


def create_trainer(cfg: DictConfig, out: Path, callbacks: list | None = None) -> L.Trainer:
    """The Trainer for a run writing into ``out``: the config's ``trainer.*`` options, the
    rolling ``checkpoints/last.ckpt`` (epoch ends, timed, on a stop), per-epoch seeds, the epoch
    timer, CSV + TensorBoard logs, and ``callbacks``."""
    t = cfg.trainer
    last = out / "checkpoints" / "last.ckpt"
    # monitor=None + save_top_k=1 keeps exactly one rolling ``last.ckpt``, rewritten every epoch
    every = [
        ModelCheckpoint(dirpath=last.parent, filename="last", save_top_k=1,
                        enable_version_counter=False),
        SafeCheckpoint(last, t.checkpoint_minutes),
        EpochSeed(cfg.seed),
        EpochTimer(),
    ]  # fmt: skip
    if t.ema_decay:  # the average replaces the weights in validation, checkpoints and the end
        every.append(EMAWeightAveraging(decay=t.ema_decay))
    if t.progress_bar:
        every.append(TQDMProgressBar(refresh_rate=5))
    loggers = []
    if t.logger:
        loggers = [
            CSVLogger(out, name="logs", version=""),
            TensorBoardLogger(out, name="logs", version="tb", default_hp_metric=False),
        ]
    return L.Trainer(
        max_epochs=t.max_epochs,
        accelerator=t.accelerator,
        devices=t.devices,
        strategy=t.strategy,
        precision=trainer_precision(t.precision, t.accelerator),
        limit_train_batches=t.limit_train_batches,
        limit_val_batches=t.limit_val_batches,
        fast_dev_run=t.fast_dev_run,
        log_every_n_steps=t.log_every_n_steps,
        gradient_clip_val=t.gradient_clip_val,
        gradient_clip_algorithm=t.gradient_clip_algorithm,
        logger=loggers or False,
        callbacks=every + list(callbacks or []),
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=t.progress_bar,
        enable_model_summary=False,
        default_root_dir=out,
    )
