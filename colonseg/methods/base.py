"""``Method``: the small surface every training method gives the one engine, and ``METHODS``.

A method (``colonseg/methods/<m>/method.py``) says what its config looks like, which
LightningDataModule and LightningModule train it, what its checkpoint records and what it
evaluates beyond the standard test sets. It never builds a Trainer, parses arguments or prints:
``colonseg.engine.train.run_train`` does all of that, the same way for every method.

Example:
    >>> @METHODS.register("mine")
    ... class Mine(Method):
    ...     schema = MineConfig
    ...     def datamodule(self, cfg, stage): ...
    ...     def module(self, cfg, dm): ...
    ...     def checkpoint(self, cfg, dm): ...
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig

from colonseg.config import RunConfig
from colonseg.data.sources import DataSource
from colonseg.errors import ColonsegError
from colonseg.registry import Registry

__all__ = ["METHODS", "Method", "Stage"]

METHODS = Registry("method")


class Stage:
    """One training of a method's run: the folder it writes, its number among the method's
    rounds (1 for most methods), from the second round on a predictor of the previous round's
    model (MSSG's self-training), and ``open_model``: the engine's
    ``Predictor.from_pretrained`` (zoo name or checkpoint folder → Predictor), for methods that
    learn from trained models' predictions (the refiner's base models)."""

    def __init__(
        self, out: Path, number: int = 1, previous: Any = None, open_model: Any = None
    ) -> None:
        self.out, self.number, self.previous = out, number, previous
        self.open_model = open_model


class Method(ABC):
    """Base class: a method gives ``datamodule``, ``module`` and ``checkpoint`` and overrides the
    other hooks where it differs. ``schema`` is a :class:`~colonseg.config.RunConfig`
    subclass; ``curve_panels`` the logged names that ``curves.png`` plots."""

    schema: type = RunConfig
    curve_panels: tuple[str, ...] = ("loss", "dice")

    def validate(self, cfg: DictConfig) -> None:  # noqa: B027 - optional hook, nothing to check
        """Check names and combinations before any data is read (raise ColonsegError)."""

    def synthetic(self, cfg: DictConfig, root: Path) -> DictConfig:
        """``cfg`` on generated data written under ``root`` (``colonseg train --synthetic``)."""
        raise ColonsegError(f"--synthetic: the {cfg.method} method has no generated data")

    def rounds(self, cfg: DictConfig) -> int:
        """How many trainings one run makes (each from scratch; see :class:`Stage`)."""
        return 1

    @abstractmethod
    def datamodule(self, cfg: DictConfig, stage: Stage) -> L.LightningDataModule:
        """The LightningDataModule of one training (``stage``)."""

    @abstractmethod
    def module(self, cfg: DictConfig, dm: L.LightningDataModule) -> L.LightningModule:
        """The LightningModule; its ``net`` attribute is the model the checkpoint stores."""

    @abstractmethod
    def checkpoint(self, cfg: DictConfig, dm: L.LightningDataModule) -> dict:
        """What the checkpoint records: :class:`~colonseg.engine.checkpoint.ModelMeta` fields
        (``arch``, ``init_kwargs``, ``size``, ``mean``, ``std``, ...) and ``provenance`` extras.
        The engine adds the run's name, method, epochs, command and metrics."""

    def training_images(self, cfg: DictConfig, dm: L.LightningDataModule) -> dict[str, list]:
        """The image files the model learns from, per dataset name (recorded in the checkpoint
        as digests, so that ``evaluate`` can warn when it scores them)."""
        return {}

    def callbacks(self, cfg: DictConfig, dm: L.LightningDataModule, out: Path) -> list:
        """Extra Lightning callbacks (snapshots, ...)."""
        return []

    def test_sources(self, cfg: DictConfig) -> list[DataSource]:
        """Labelled sets the finished model is evaluated on (missing folders are skipped)."""
        return []

    def evaluate_model(self, cfg: DictConfig, model_dir: Path) -> str:
        """How ``colonseg evaluate`` names the finished model (its ``--model`` and options)."""
        return f"--model {model_dir}"

    def predictor_options(self, cfg: DictConfig) -> dict:
        """Options of the Predictor that evaluates the finished model (``tta``, ...)."""
        return {}

    def evaluate_extra(self, cfg: DictConfig, predictor: Any, summary: dict, out: Path) -> dict:
        """More evaluation after the standard one (baselines, ...): entries to add to the
        result (``summary`` may be updated in place)."""
        return {}
