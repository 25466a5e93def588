"""The refine method's config: images, masks and each source's out-of-fold base model."""

from __future__ import annotations

from dataclasses import dataclass, field

from colonseg.config import RunConfig, TrainerConfig
from colonseg.data.sources import DataSource

__all__ = ["RefineConfig"]


@dataclass
class RefinerModelConfig:
    name: str = "region_refiner"
    width: int = 24


@dataclass
class RefineDataConfig:
    train: list[DataSource] = field(default_factory=list)
    val: list[DataSource] = field(default_factory=list)
    image_size: int = 352  # the base models' input size: the refiner sees their resolution
    batch_size: int = 8
    num_workers: int = 0
    cache_dir: str | None = None  # also holds the base models' cached probabilities
    labels: str = "neopolyp"


@dataclass
class RefineSection:
    """``base_models[i]``: the checkpoint (folder or zoo name) whose probabilities on
    ``data.train[i]`` the refiner learns from — one that did NOT train on it (out of fold);
    ``val_base``: the same for every ``data.val`` source; ``tta``: the base models' test-time
    augmentation (None: each one's default)."""

    base_models: list[str] = field(default_factory=list)
    val_base: str | None = None
    tta: str | None = None


@dataclass
class RefineOptim:
    optimizer: str = "adamw"
    lr: float = 2e-3
    weight_decay: float = 1e-4


@dataclass
class RefineLoss:
    name: str = "ce_dice"


@dataclass
class RefineConfig(RunConfig):
    method: str = "refine"
    model: RefinerModelConfig = field(default_factory=RefinerModelConfig)
    data: RefineDataConfig = field(default_factory=RefineDataConfig)
    refine: RefineSection = field(default_factory=RefineSection)
    optim: RefineOptim = field(default_factory=RefineOptim)
    loss: RefineLoss = field(default_factory=RefineLoss)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
