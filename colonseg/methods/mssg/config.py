"""MSSG's config in the one vocabulary: ``spm`` and ``refine`` are its own sections (the proposal
mining and the optional MedSAM refinement); the rest are the shared names."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from colonseg.config import RunConfig, TestConfig, TrainerConfig
from colonseg.methods.mssg.refine import RefineSettings
from colonseg.methods.mssg.spm import SpmSettings

__all__ = ["MssgConfig"]


@dataclass
class DataConfig:
    path: str = "../shared/datasets/glas"
    layout: str = "glas"
    train_split: str | None = "train"
    # the first split names the dataset in a shipped model's metrics: test = testA + testB
    test_splits: list[str] = field(default_factory=lambda: ["test", "testA", "testB"])
    proposals: str | None = None  # default: $COLONSEG_CACHE/mssg/spm-<settings digest>
    val_fraction: float = 0.1
    size: list[int] = field(default_factory=lambda: [352, 512])  # (H, W) model input
    crop_scale: list[float] = field(default_factory=lambda: [0.4, 1.0])
    # > 0: background enclosed by a closing of the proposal's glands with a disk of this radius
    # (pixels of a 775×522 image) is left unsupervised (spm.mark_unsure); 0: MSSG as published
    unsure_radius: float = 0.0
    batch_size: int = 4
    num_workers: int = 0


@dataclass
class ModelConfig:
    name: str = "unet"  # any segmentation_models_pytorch architecture of the zoo (paper: pspnet)
    encoder: str = "tf_efficientnet_lite0"
    pretrained: bool = True
    encoder_weights: str | None = None
    embed_dim: int = 32
    # more architecture options; the paper's PSPNet (dilated, full-depth encoder):
    # model.name=pspnet model.kwargs="{encoder_depth: 5, output_stride: 8}"
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class LossConfig:
    variation: float = 1.0
    push: float = 1.0
    margin: float = 1.0
    max_pixels: int = 1000
    omission_start: int = 3  # epochs on the raw proposals before they are refined
    omission_band: int = 7  # pixels (at the model's input size) beyond a proposal boundary
    omission_threshold: float = 0.7


@dataclass
class OptimConfig:
    lr: float = 5e-4
    weight_decay: float = 1e-4


@dataclass
class MssgTrainer(TrainerConfig):
    max_epochs: int = 20
    log_every_n_steps: int = 5
    rounds: int = 1  # > 1: self-training, each round learns the previous round's glands


@dataclass
class MssgTest(TestConfig):
    baselines: bool = True


@dataclass
class MssgConfig(RunConfig):
    method: str = "mssg"
    name: str = "mssg_glas"
    data: DataConfig = field(default_factory=DataConfig)
    spm: SpmSettings = field(default_factory=SpmSettings)
    refine: RefineSettings = field(default_factory=RefineSettings)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: MssgTrainer = field(default_factory=MssgTrainer)
    test: MssgTest = field(default_factory=MssgTest)
