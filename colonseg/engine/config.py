"""``load_config``: a config file (or shipped name) + ``key=value`` overrides → the validated
config of its method, in the one vocabulary of :mod:`colonseg.config`.

Example:
    >>> cfg = load_config("polyp_unet_lite0", ["trainer.max_epochs=2", "model.name=unetplusplus"])
    >>> cfg = load_config("configs/mapseg/polyp.yaml", ["DATASET.target=polyp", "TEST.only=True"])
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from colonseg.config import merge_config, read_config, resolve_alias, resolve_config_path
from colonseg.errors import ColonsegError
from colonseg.methods import METHODS

__all__ = ["QUICK", "load_config"]

#: ``--quick``: one epoch of two batches (two validation batches), no test-set evaluation.
QUICK = (
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=2",
    "test.after_training=false",
)


def load_config(
    config: str | Path, overrides: list[str] | tuple[str, ...] = (), quick: bool = False
) -> DictConfig:
    """Load a config onto its method's schema (``method:``, default supervised), apply the
    overrides (aliases allowed) and validate every name it uses; ``quick`` makes it a smoke run
    named ``<name>-quick``."""
    path = resolve_config_path(config)
    data = read_config(path)
    method = str(data.get("method", "supervised"))
    for item in overrides:  # `method=...` on the command line picks the schema too
        if resolve_alias(item.split("=", 1)[0]) == "method":
            method = item.split("=", 1)[1]
    try:
        cls = METHODS.get(method)
    except ColonsegError as exc:
        raise ColonsegError(f"{path}: {exc}") from None
    cfg = merge_config(cls.schema, data, [*overrides, *(QUICK if quick else ())], str(path))
    if quick:
        cfg.name = f"{cfg.name}-quick"
    try:
        decay = cfg.trainer.ema_decay
        if not 0.0 <= decay < 1.0:
            raise ColonsegError(f"trainer.ema_decay={decay}: a decay in (0, 1), or 0")
        cls().validate(cfg)
    except ColonsegError as exc:
        raise ColonsegError(f"{path}: {exc}") from None
    return cfg
