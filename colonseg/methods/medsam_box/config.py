"""Automatic MedSAM's config in the one vocabulary (boxes to train, no box to predict)."""

from __future__ import annotations

from dataclasses import dataclass, field

from colonseg.config import RunConfig, TrainerConfig
from colonseg.data.sources import DataSource

__all__ = ["MedsamBoxConfig"]


@dataclass
class ModelConfig:
    name: str = "automedsam"
    backbone: str = "litemedsam"  # or medsam_vit_b (give sam_checkpoint)
    sam_checkpoint: str | None = None
    num_points: int = 1
    sparse: str = "tokens"  # tokens (the paper), box (one regressed box), region (coarse map)
    max_boxes: int = 3  # sparse=region: the most boxes (regions) per image
    min_area: float = 0.01  # sparse=region: smaller regions get no box (but the largest)


@dataclass
class DataConfig:
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
    snapshots: int = 4  # validation images drawn after each epoch


@dataclass
class LossConfig:
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
class OptimConfig:
    lr: float = 1e-3
    weight_decay: float = 1e-4
    lr_drop: float = 0.5  # schedule=step: ×0.1 after this share of the epochs
    schedule: str = "step"  # step (Adam) or onecycle (AdamW, 10 % warm-up, cosine decay)


@dataclass
class MedsamTrainer(TrainerConfig):
    checkpoint_every: int = 5
    monitor: str | None = "val/box_iou"


@dataclass
class MedsamBoxConfig(RunConfig):
    method: str = "medsam_box"
    name: str = "automedsam"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: MedsamTrainer = field(default_factory=MedsamTrainer)
