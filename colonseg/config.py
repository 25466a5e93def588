"""Training configs: dataclass schemas, YAML loading, dotlist overrides and validation.

Example:
    >>> cfg = load_config("polyp_unet_lite0", ["trainer.max_epochs=2", "model.name=unetplusplus"])
    >>> cfg.model.name
    'unetplusplus'

A config is a YAML file path or the name of a file shipped in ``colonseg/configs/``. Unknown keys
and misspelt names fail here, before any data is read.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

from colonseg.data.datamodule import DataSource
from colonseg.errors import ColonsegError

__all__ = [
    "CONFIG_DIR",
    "TrainConfig",
    "config_method",
    "load_config",
    "merge_config",
    "resolve_config_path",
    "save_config",
]

CONFIG_DIR = Path(__file__).parent / "configs"


@dataclass
class ModelConfig:
    name: str = "unet"
    encoder: str = "tf_efficientnet_lite0"
    classes: int = 1
    pretrained: bool = True
    kwargs: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None  # fine-tune: start from this checkpoint folder or zoo name


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


@dataclass
class OptimConfig:
    loss: str = "bce_dice"
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    scheduler: str = "cosine"
    warmup_steps: int = 0
    gamma: float = 0.6
    step_epochs: int = 5
    deep_supervision: bool = False
    deep_supervision_weights: list[float] | None = None


@dataclass
class TrainerConfig:
    max_epochs: int = 10
    accelerator: str = "auto"
    devices: Any = "auto"
    strategy: str = "auto"
    precision: str = "auto"
    channels_last: bool = True
    seed: int = 0
    limit_train_batches: float = 1.0
    limit_val_batches: float = 1.0
    fast_dev_run: bool = False
    log_every_n_steps: int = 10
    gradient_clip_val: float | None = None
    gradient_clip_algorithm: str = "norm"
    logger: bool = True
    progress_bar: bool = True


@dataclass
class TrainConfig:
    name: str = "run"
    out_dir: str = "runs"
    threshold: float = 0.5
    postprocess: str = ""  # the Predictor's default post-processing spec, kept in the checkpoint
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


def config_method(config: str | Path) -> str:
    """The method a config trains: its top-level ``METHOD`` (``mapseg``), else ``supervised``."""
    try:
        data = yaml.safe_load(resolve_config_path(config).read_text()) or {}
    except yaml.YAMLError as exc:
        raise ColonsegError(f"{config}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return str(data.get("METHOD", "supervised")) if isinstance(data, dict) else "supervised"


def resolve_config_path(config: str | Path) -> Path:
    """A YAML path, or the name of a shipped config (``polyp_unet_lite0``, ``mapseg/polyp``)."""
    path = Path(config)
    if path.is_file():
        return path
    if path.parts[:1] == ("configs",) and (CONFIG_DIR / Path(*path.parts[1:])).is_file():
        return CONFIG_DIR / Path(*path.parts[1:])  # configs/mapseg/polyp.yaml, as MAPSeg writes
    shipped = sorted(
        str(p.relative_to(CONFIG_DIR).with_suffix("")) for p in CONFIG_DIR.rglob("*.yaml")
    )
    if str(config) in shipped:
        return CONFIG_DIR / f"{config}.yaml"
    close = difflib.get_close_matches(str(config), shipped, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise ColonsegError(
        f"{config}: config file not found.{hint} Shipped configs: {', '.join(shipped)}"
    )


def _node_type(cfg: DictConfig, key: str) -> type | None:
    node = OmegaConf.select(cfg, key)
    return OmegaConf.get_type(node) if isinstance(node, DictConfig) else None


def merge_config(
    schema: type,
    config: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    what: str = "config",
) -> DictConfig:
    """Load a YAML config onto a dataclass ``schema`` and apply ``key=value`` overrides; unknown
    or misspelt keys fail with a did-you-mean naming the file (``invalid <what>: ...``)."""
    path = resolve_config_path(config)
    try:
        loaded = OmegaConf.load(path)
    except yaml.YAMLError as exc:
        raise ColonsegError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(schema), loaded)
        for item in overrides:
            key = item.split("=", 1)[0]
            try:
                value = OmegaConf.select(OmegaConf.from_dotlist([item]), key)
            except yaml.YAMLError as exc:
                problem = str(exc).splitlines()[0]
                raise ColonsegError(f"override '{item}': not a valid value ({problem})") from None
            # a plain dict is replaced, not merged (`model.kwargs={}` empties it); lists always
            # are, and schema nodes merge so that their values are validated
            replace = isinstance(value, DictConfig) and _node_type(cfg, key) is dict
            OmegaConf.update(cfg, key, value, merge=not replace)
        OmegaConf.resolve(cfg)
    except (ConfigKeyError, ConfigAttributeError, ValidationError) as exc:
        msg = str(exc).splitlines()[0]
        key = getattr(exc, "key", None)
        parent = getattr(exc, "parent_node", None)
        if key is not None and isinstance(parent, DictConfig) and "did you mean" not in msg.lower():
            close = difflib.get_close_matches(str(key), list(parent.keys()), n=1)
            keys = ", ".join(str(k) for k in parent.keys())
            msg += f". Did you mean '{close[0]}'?" if close else f" (keys: {keys})"
        raise ColonsegError(f"{path}: invalid {what}: {msg}") from None
    return cfg


def load_config(config: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """Load a supervised training config (:class:`TrainConfig`), apply ``key=value`` overrides
    and validate the names it uses (model, loss, augmentation, ...)."""
    path = resolve_config_path(config)
    cfg = merge_config(TrainConfig, path, overrides)
    from colonseg.data.labels import SCHEMES
    from colonseg.data.transforms import AUGMENTATIONS
    from colonseg.losses import LOSSES
    from colonseg.models import MODELS
    from colonseg.models.encoders import check_encoder
    from colonseg.registry import look_up_option

    try:
        look_up_option(cfg.model.name, MODELS.names(), "model")
        check_encoder(cfg.model.encoder)
        look_up_option(cfg.optim.loss, LOSSES.names(), "loss")
        look_up_option(cfg.data.augment, AUGMENTATIONS.names(), "augmentation")
        look_up_option(cfg.optim.optimizer, ["adam", "adamw"], "optimizer")
        look_up_option(cfg.optim.scheduler, ["cosine", "exponential", "none"], "scheduler")
        look_up_option(cfg.data.labels, list(SCHEMES), "label scheme")
    except ValueError as exc:
        raise ColonsegError(f"{path}: {exc}") from None
    from colonseg.postprocess import PostProcess

    PostProcess.parse(cfg.postprocess)  # a bad spec fails here, before training
    channels = SCHEMES[cfg.data.labels].model_channels
    if cfg.model.classes != channels:
        raise ColonsegError(
            f"{path}: data.labels={cfg.data.labels} needs model.classes={channels} "
            f"(got {cfg.model.classes})"
        )
    return cfg


def save_config(cfg: DictConfig, path: str | Path) -> None:
    from colonseg.data.io import write_atomic

    text = OmegaConf.to_yaml(cfg)
    write_atomic(path, lambda tmp: tmp.write_text(text))
