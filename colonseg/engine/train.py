"""``run_train(cfg)``: one function from a validated config to a run dir with a usable model.

Run dir layout (``<out_dir>/<name>/``): ``config.yaml`` (resolved), ``checkpoints/last.ckpt``
(resume), ``logs/`` (CSV + TensorBoard), ``curves.png``, ``metrics.json`` and ``model/`` (the
self-describing checkpoint that ``predict``/``evaluate`` take).
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from colonseg.config import save_config
from colonseg.data.datamodule import DataSource, SegmentationDataModule
from colonseg.data.io import write_atomic
from colonseg.data.labels import get_scheme
from colonseg.engine.checkpoint import ModelMeta, load_pretrained, save_pretrained
from colonseg.engine.predict import native_bf16
from colonseg.errors import ColonsegError
from colonseg.methods.supervised import SupervisedModule
from colonseg.models import create_model
from colonseg.models.encoders import encoder_normalization
from colonseg.viz.curves import epoch_table, plot_curves

__all__ = ["EpochSeed", "check_resumable", "run_train", "trainer_precision"]


class EpochSeed(L.Callback):
    """Reseed every global RNG (Python, NumPy, torch) with ``seed + epoch`` as each training epoch
    starts. Order and augmentation come from :class:`EpochShuffle`; this covers the rest (dropout,
    anything a model or loss draws), so a run resumed from an epoch's checkpoint replays what an
    uninterrupted run does (``tests/test_reliability_resume.py``)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        L.seed_everything(self.seed + trainer.current_epoch, workers=True, verbose=False)


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


def _init_from(net: torch.nn.Module, source: str, arch: str) -> dict:
    """Copy a trained checkpoint of the same architecture into ``net``; return its provenance.

    Tensors whose shapes differ (only the output heads, e.g. a binary model initialising a
    3-class one) keep their fresh initialisation and are listed under ``reinitialised``.
    """
    trained, meta = load_pretrained(source)
    if meta.arch != arch:
        raise ColonsegError(f"{source}: a {meta.arch} checkpoint cannot initialise {arch}")
    own, theirs = net.state_dict(), trained.state_dict()
    if own.keys() != theirs.keys():
        raise ColonsegError(f"{source}: its weights do not fit the configured {arch}")
    fresh = [k for k in own if own[k].shape != theirs[k].shape]
    if len(fresh) > 0.05 * len(own):  # more than heads differ: another encoder or width
        raise ColonsegError(
            f"{source}: {len(fresh)} of {len(own)} tensors differ in shape from the configured "
            f"{arch} (e.g. {fresh[0]}); only output heads may differ"
        )
    net.load_state_dict({k: (own[k] if k in fresh else theirs[k]) for k in own})
    return {"path": source, "provenance": meta.provenance, "reinitialised": fresh}


def _log_rows(path: Path, upto_epoch: int | None = None) -> list[dict]:
    """The rows of a Lightning ``metrics.csv`` (those of epochs ``<= upto_epoch``)."""
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return [r for r in rows if upto_epoch is None or int(float(r["epoch"])) <= upto_epoch]


def _write_log_rows(path: Path, rows: list[dict]) -> None:
    keys = sorted({k for r in rows for k in r}, key=lambda k: (k not in ("epoch", "step"), k))

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)

    write_atomic(path, write)


def run_train(
    cfg: DictConfig,
    resume: bool = False,
    callbacks: list | None = None,
    command: str | None = None,
) -> dict:
    """Train the model the config describes; return ``{"run_dir", "model_dir", "metrics"}``.

    ``callbacks`` are extra Lightning callbacks (e.g. early stopping), added to the built-in ones.
    ``command`` is the command line recorded in the checkpoint (default: this process's own).
    """
    run_dir = Path(cfg.out_dir) / cfg.name
    ckpt_dir = run_dir / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    kept_log: list[dict] = []
    if resume:  # Lightning's CSV logger starts metrics.csv afresh: keep the finished epochs' rows
        kept_log = _log_rows(run_dir / "logs" / "metrics.csv", upto_epoch=check_resumable(last))
    L.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    mean, std = encoder_normalization(cfg.model.encoder)
    dm = SegmentationDataModule(
        train=[DataSource(**s) for s in cfg.data.train],
        val=[DataSource(**s) for s in cfg.data.val],
        image_size=cfg.data.image_size,
        augment=cfg.data.augment,
        batch_size=cfg.data.batch_size,
        num_workers=cfg.data.num_workers,
        mean=mean,
        std=std,
        cache_dir=cfg.data.cache_dir,
        labels=cfg.data.labels,
        seed=cfg.trainer.seed,
    )
    dm.setup("fit")
    scheme = get_scheme(cfg.data.labels)
    init_kwargs = {
        "encoder": cfg.model.encoder,
        "classes": cfg.model.classes,
        **OmegaConf.to_container(cfg.model.kwargs),
    }
    net = create_model(cfg.model.name, pretrained=cfg.model.pretrained, **init_kwargs)
    parent = _init_from(net, cfg.model.init_from, cfg.model.name) if cfg.model.init_from else None
    module = SupervisedModule(
        net,
        loss=cfg.optim.loss,
        optimizer=cfg.optim.optimizer,
        lr=cfg.optim.lr,
        weight_decay=cfg.optim.weight_decay,
        scheduler=cfg.optim.scheduler,
        warmup_steps=cfg.optim.warmup_steps,
        gamma=cfg.optim.gamma,
        step_epochs=cfg.optim.step_epochs,
        threshold=cfg.threshold,
        channels_last=cfg.trainer.channels_last,
        val_names=dm.val_names,
        deep_supervision=cfg.optim.deep_supervision,
        deep_supervision_weights=(
            list(cfg.optim.deep_supervision_weights) if cfg.optim.deep_supervision_weights else None
        ),
        train_scales=list(cfg.data.train_scales),
        classes=cfg.model.classes,
        class_keys=list(scheme.keys[1:]),
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    loggers = []
    if cfg.trainer.logger:
        loggers = [
            CSVLogger(run_dir, name="logs", version=""),
            TensorBoardLogger(run_dir, name="logs", version="tb", default_hp_metric=False),
        ]
    # monitor=None + save_top_k=1 keeps exactly one rolling ``last.ckpt``, rewritten every epoch
    # (``save_top_k=0, save_last=True`` only writes it when fit ends: a killed run lost everything).
    extra = list(callbacks or [])
    callbacks = [
        ModelCheckpoint(
            dirpath=ckpt_dir, filename="last", save_top_k=1, enable_version_counter=False
        ),
        EpochSeed(cfg.trainer.seed),
    ]
    if cfg.trainer.progress_bar:
        callbacks.append(TQDMProgressBar(refresh_rate=5))
    callbacks += extra
    trainer = L.Trainer(
        max_epochs=cfg.trainer.max_epochs,
        accelerator=cfg.trainer.accelerator,
        devices=cfg.trainer.devices,
        strategy=cfg.trainer.strategy,
        precision=trainer_precision(cfg.trainer.precision, cfg.trainer.accelerator),
        limit_train_batches=cfg.trainer.limit_train_batches,
        limit_val_batches=cfg.trainer.limit_val_batches,
        fast_dev_run=cfg.trainer.fast_dev_run,
        log_every_n_steps=cfg.trainer.log_every_n_steps,
        gradient_clip_val=cfg.trainer.gradient_clip_val,
        gradient_clip_algorithm=cfg.trainer.gradient_clip_algorithm,
        logger=loggers or False,
        callbacks=callbacks,
        enable_progress_bar=cfg.trainer.progress_bar,
        enable_model_summary=False,
        default_root_dir=run_dir,
    )
    trainer.fit(module, datamodule=dm, ckpt_path=str(last) if resume else None, weights_only=True)

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    csv_path = run_dir / "logs" / "metrics.csv"
    if kept_log and csv_path.is_file():
        _write_log_rows(csv_path, kept_log + _log_rows(csv_path))
    if csv_path.is_file():
        plot_curves(csv_path, run_dir / "curves.png")
        metrics["history"] = epoch_table(csv_path)
    meta = ModelMeta(
        arch=cfg.model.name,
        init_kwargs=init_kwargs,
        size=(cfg.data.image_size, cfg.data.image_size),
        mean=mean,
        std=std,
        class_names=list(scheme.class_names[1:]),
        labels=scheme.name,
        threshold=cfg.threshold,
        postprocess=cfg.postprocess,
        provenance={
            "config": cfg.name,
            "train": [dict(s) for s in cfg.data.train],
            "init_from": parent,
            "epochs": cfg.trainer.max_epochs,
            "command": command or " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:]),
        },
        metrics={k: v for k, v in metrics.items() if k.startswith("val/")},
    )
    model_dir = save_pretrained(module.net, meta, run_dir / "model")
    text = json.dumps(metrics, indent=2)
    write_atomic(run_dir / "metrics.json", lambda tmp: tmp.write_text(text))
    return {"run_dir": run_dir, "model_dir": model_dir, "metrics": metrics}
