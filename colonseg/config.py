"""The one config vocabulary: shared sections, the alias table, YAML loading and overrides.

Every method's config has the same top-level keys — ``method``, ``name``, ``out_dir``, ``seed``,
``threshold``, ``postprocess`` — and the same sections: ``data``, ``model`` (``model.name`` picks
the architecture), ``optim``, ``loss``, ``trainer`` (:class:`TrainerConfig`, the engine's) and
``test`` (:class:`TestConfig`). A method's schema (``colonseg/methods/<m>/config.py``) subclasses
:class:`RunConfig` and fills the sections with its own keys.

Paper-style keys (MAPSeg's ``DATASET.target``, ``TRAIN.epochs``, ``TEST.only``) and the keys of
older colonseg configs are *aliases*: :data:`ALIASES` maps each onto its name here, in YAML files
and in ``key=value`` overrides alike. There is no second schema.

Example:
    >>> apply_aliases({"EXP_NAME": "x", "TRAIN": {"epochs": 3}})
    {'name': 'x', 'trainer': {'max_epochs': 3}}
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

from colonseg.errors import ColonsegError

__all__ = [
    "ALIASES",
    "CONFIG_DIR",
    "RunConfig",
    "TestConfig",
    "TrainerConfig",
    "apply_aliases",
    "flatten",
    "list_configs",
    "merge_config",
    "read_config",
    "resolve_alias",
    "resolve_config_path",
    "save_config",
]

CONFIG_DIR = Path(__file__).parent / "configs"

#: Alias → name, matched on dotted keys: an exact key first, else its longest aliased prefix
#: (``DATASET.target`` → ``data.target`` through ``DATASET``). MAPSeg's paper keys, then the
#: names of older colonseg configs (their run folders' ``config.yaml`` still load).
ALIASES: dict[str, str] = {
    # MAPSeg (paper-style, upper case)
    "METHOD": "method",
    "EXP_NAME": "name",
    "RESULT_DIR": "out_dir",
    "DATASET.data_dir": "data.root",
    "DATASET.resize": "data.image_size",
    "DATASET": "data",
    "SIMPO": "data.simpo",
    "MEMORY.enabled": "model.memory",
    "MEMORY.nb_memory_sample": "model.memory_size",
    "MEMORY.match": "model.memory_match",
    "MODEL": "model",
    "TRAIN.epochs": "trainer.max_epochs",
    "TRAIN.lr": "optim.lr",
    "TRAIN.weight_decay": "optim.weight_decay",
    "TRAIN.batch_size": "data.batch_size",
    "TRAIN.num_workers": "data.num_workers",
    "TRAIN.focal_weight": "loss.focal",
    "TRAIN.l1_weight": "loss.l1",
    "TRAIN.focal_gamma": "loss.focal_gamma",
    "TRAIN.seed": "seed",
    "TRAIN": "trainer",
    "TEST": "test",
    # older colonseg configs
    "trainer.seed": "seed",
    "optim.loss": "loss.name",
    "optim.deep_supervision": "loss.deep_supervision",
    "optim.deep_supervision_weights": "loss.deep_supervision_weights",
    "model.arch": "model.name",  # MSSG
    "trainer.lr": "optim.lr",  # MSSG
    "trainer.weight_decay": "optim.weight_decay",  # MSSG
    "trainer.snapshots": "data.snapshots",  # Automatic MedSAM
}


@dataclass
class TrainerConfig:
    """What the engine's one Trainer takes (every method): Lightning's own options, plus

    - ``checkpoint_minutes``: the rolling ``checkpoints/last.ckpt`` is also written every this many
      minutes of training, and on Ctrl-C / SIGTERM (0: at epoch ends only);
    - ``checkpoint_every``: every this many epochs a usable model in ``checkpoints/epoch_NNN/``;
    - ``monitor``: ``model/`` is the epoch with the highest value of this logged metric (e.g.
      ``val/box_iou``); empty: the last epoch;
    - ``ema_decay``: keep an exponential moving average of the weights, updated after every
      optimiser step with this decay (e.g. 0.99), and make it the model: validation, ``model/``
      and every checkpoint hold the average (0: off).
    """

    max_epochs: int = 10
    accelerator: str = "auto"
    devices: Any = "auto"
    strategy: str = "auto"
    precision: str = "auto"
    limit_train_batches: float = 1.0
    limit_val_batches: float = 1.0
    fast_dev_run: bool = False
    log_every_n_steps: int = 10
    gradient_clip_val: float | None = None
    gradient_clip_algorithm: str = "norm"
    channels_last: bool = False
    checkpoint_minutes: float = 10.0
    checkpoint_every: int = 0
    monitor: str | None = None
    ema_decay: float = 0.0
    logger: bool = True
    progress_bar: bool = True


@dataclass
class TestConfig:
    """``only``: evaluate ``checkpoint`` (default: the run's ``model/``) instead of training;
    ``after_training``: evaluate the method's test sets when training ends."""

    only: bool = False
    checkpoint: str | None = None
    after_training: bool = True


@dataclass
class RunConfig:
    """The top-level keys every method shares; a method's schema adds its sections."""

    method: str = "supervised"
    name: str = "run"
    out_dir: str = "runs"
    seed: int = 0
    threshold: float = 0.5
    postprocess: str = ""  # the Predictor's default post-processing, kept in the checkpoint
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    test: TestConfig = field(default_factory=TestConfig)


def resolve_alias(key: str) -> str:
    """The name of a dotted key: an exact alias, else its longest aliased prefix, else itself."""
    if key in ALIASES:
        return ALIASES[key]
    parts = key.split(".")
    for i in range(len(parts) - 1, 0, -1):
        head = ".".join(parts[:i])
        if head in ALIASES:
            return resolve_alias(".".join([ALIASES[head], *parts[i:]]))
    return key


def apply_aliases(data: dict) -> dict:
    """A YAML mapping with every aliased key renamed (nested keys are matched as dotted keys)."""
    out: dict = {}
    for key, value in flatten(data).items():
        node = out
        *parents, last = resolve_alias(key).split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return out


def flatten(data: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``; lists and empty mappings are leaves."""
    flat: dict = {}
    for k, v in data.items():
        if isinstance(v, dict) and v:
            flat.update(flatten(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def list_configs() -> list[str]:
    """The shipped configs by name (``polyp_unet_lite0``, ``mapseg/polyp``)."""
    return sorted(
        str(p.relative_to(CONFIG_DIR).with_suffix("")) for p in CONFIG_DIR.rglob("*.yaml")
    )


def resolve_config_path(config: str | Path) -> Path:
    """A YAML path, or the name of a shipped config (``polyp_unet_lite0``, ``mapseg/polyp``)."""
    path = Path(config)
    if path.is_file():
        return path
    if path.parts[:1] == ("configs",) and (CONFIG_DIR / Path(*path.parts[1:])).is_file():
        return CONFIG_DIR / Path(*path.parts[1:])  # configs/mapseg/polyp.yaml, as MAPSeg writes
    shipped = list_configs()
    if str(config) in shipped:
        return CONFIG_DIR / f"{config}.yaml"
    close = difflib.get_close_matches(str(config), shipped, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise ColonsegError(
        f"{config}: config file not found.{hint} Shipped configs: {', '.join(shipped)}"
    )


def read_config(config: str | Path) -> dict:
    """A config file's mapping with every alias renamed (not yet merged onto a schema)."""
    path = resolve_config_path(config)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ColonsegError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ColonsegError(f"{path}: a config is a mapping of keys, got {type(data).__name__}")
    return apply_aliases(data)


def _node_type(cfg: DictConfig, key: str) -> type | None:
    node = OmegaConf.select(cfg, key)
    return OmegaConf.get_type(node) if isinstance(node, DictConfig) else None


def merge_config(
    schema: type, data: dict, overrides: list[str] | tuple[str, ...] = (), source: str = "config"
) -> DictConfig:
    """Merge a (renamed) config mapping onto a dataclass ``schema`` and apply ``key=value``
    overrides (aliases allowed); unknown or misspelt keys fail with a did-you-mean naming
    ``source``."""
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.create(data))
        for item in overrides:
            if "=" not in item:
                raise ColonsegError(f"override '{item}': expected key=value")
            raw_key, raw_value = item.split("=", 1)
            key = resolve_alias(raw_key)
            try:
                value = OmegaConf.select(OmegaConf.from_dotlist([f"{key}={raw_value}"]), key)
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
        raise ColonsegError(f"{source}: invalid config: {msg}") from None
    return cfg


def save_config(cfg: DictConfig, path: str | Path) -> None:
    from colonseg.data.io import write_atomic

    text = OmegaConf.to_yaml(cfg)
    write_atomic(path, lambda tmp: tmp.write_text(text))
