"""MAPSeg's config in the one vocabulary. Its paper-style keys (``DATASET.target``,
``TRAIN.epochs``, ``TEST.only``, ...) are aliases of these names (``colonseg.config.ALIASES``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from colonseg.config import RunConfig, TestConfig

__all__ = ["DEMO_POSTPROCESS", "SCREEN_POSTPROCESS", "MapsegConfig"]

DEMO_POSTPROCESS = "fov,otsu=0,close=5,fill_holes,keep_largest"  # MAPSeg's demo, in the view
SCREEN_POSTPROCESS = "fov,otsu,close=5,fill_holes,keep_largest"  # Otsu floored at 0.2


@dataclass
class SimpoConfig:
    p: float = 0.5
    fills: list[str] = field(default_factory=lambda: ["colon", "texture"])
    lobes: float = 0.0
    relief: float = 0.0


@dataclass
class DataConfig:
    root: str = "../shared/datasets"
    target: str = "polyp"  # MVTec-style <root>/<target>/train/good when it exists
    normal: str | None = "polypgen-normal/images"  # else this folder of normal frames
    textures: str | None = "textures-dtd"
    shapes: str | None = None
    image_size: int = 256
    val_fraction: float = 0.1
    split_seed: int | None = None  # the held-out frames and their lesions; None: seed
    augment: str = "mapseg"
    batch_size: int = 8
    num_workers: int = 0
    simpo: SimpoConfig = field(default_factory=SimpoConfig)


@dataclass
class ModelConfig:
    name: str = "mapseg"
    encoder: str = "tf_efficientnet_lite0"
    width: int = 64
    pretrained: bool = True
    encoder_weights: str | None = None
    memory: bool = True
    memory_size: int = 30
    memory_match: str = "frame"  # frame: MemSeg's nearest frame, position by position; patch


@dataclass
class OptimConfig:
    lr: float = 3e-3
    weight_decay: float = 5e-4


@dataclass
class LossConfig:
    focal: float = 0.4
    l1: float = 0.6
    focal_gamma: float = 4.0


@dataclass
class MapsegTest(TestConfig):
    tta: str = "d4"  # the checkpoint's default test-time augmentation: none, flip or d4
    datasets: list[dict] = field(default_factory=list)


@dataclass
class MapsegConfig(RunConfig):
    method: str = "mapseg"
    name: str = "mapseg_polyp"
    postprocess: str = DEMO_POSTPROCESS
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    test: MapsegTest = field(default_factory=MapsegTest)
