"""The supervised method's config: image + mask pairs, any architecture of the zoo."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from colonseg.config import RunConfig, TrainerConfig
from colonseg.data.sources import DataSource

__all__ = ["SupervisedConfig"]


@dataclass
class ModelConfig:
    name: str = "unet"
    encoder: str = "tf_efficientnet_lite0"
    classes: int = 1
    pretrained: bool = True
    kwargs: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None  # fine-tune: start from this checkpoint folder or zoo name
    # start only the encoder from this checkpoint (any architecture with the same encoder)
    init_encoder_from: str | None = None


@dataclass
class DataConfig:
    train: list[DataSource] = field(default_factory=list)
    val: list[DataSource] = field(default_factory=list)
    image_size: int = 256
    augment: str = "polyp"
    batch_size: int = 16
    num_workers: int = 0
    cache_dir: str | None = None
    labels: str = "binary"  # label scheme: binary, or neopolyp (3 classes, RGB masks)
    train_scales: list[float] = field(default_factory=lambda: [1.0])
    # all: every batch at each scale (PraNet; costs the sum of the scales' areas); one: each
    # batch at one scale drawn at random (about one scale's cost)
    train_scale_mode: str = "all"
    fold: int | None = None  # K: fold{K}_train / fold{K}_val split files (colonseg.data.splits)


@dataclass
class OptimConfig:
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    scheduler: str = "cosine"
    warmup_steps: int = 0
    encoder_lr_scale: float = 1.0  # the pretrained encoder learns at lr × this (supervised)
    gamma: float = 0.6
    step_epochs: int = 5


@dataclass
class LossConfig:
    name: str = "bce_dice"
    deep_supervision: Any = False  # true, false, or auto: on for models with side outputs
    deep_supervision_weights: list[float] | None = None
    class_weights: list[float] | None = None  # ce_dice: cross-entropy weight per class


@dataclass
class SupervisedTrainer(TrainerConfig):
    channels_last: bool = True


@dataclass
class SupervisedConfig(RunConfig):
    method: str = "supervised"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    trainer: SupervisedTrainer = field(default_factory=SupervisedTrainer)
