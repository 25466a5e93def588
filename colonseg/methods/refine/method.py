"""The refine method: train a region refiner on base models' out-of-fold class probabilities.

Each ``data.train[i]`` comes with ``refine.base_models[i]``, a three-class model that did not
train on it (checked against the model's recorded training images); ``data.val`` sources use
``refine.val_base``. The run's ``model/`` is an ordinary colonseg checkpoint of the
``region_refiner`` architecture, applied with ``--postprocess refine=<run>/model``
(:mod:`colonseg.postprocess`).
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from colonseg.data.labels import SCHEMES, get_scheme
from colonseg.data.layouts import find_pairs
from colonseg.data.sources import DataSource
from colonseg.data.synthetic import write_neopolyp_dataset
from colonseg.errors import ColonsegError
from colonseg.losses import LOSSES
from colonseg.methods.base import METHODS, Method, Stage
from colonseg.methods.refine.config import RefineConfig
from colonseg.methods.refine.data import REFINER_MEAN, REFINER_STD, RefineDataModule
from colonseg.methods.refine.module import RefineModule
from colonseg.models import create_model
from colonseg.registry import look_up_option

__all__ = ["Refine"]

SYNTHETIC_BASE = "neopolyp_unet_lite0"  # a zoo model that never saw the generated images


@METHODS.register("refine")
class Refine(Method):
    schema = RefineConfig
    curve_panels = ("loss", "dice", "mdice", "base_mdice")

    def validate(self, cfg: DictConfig) -> None:
        look_up_option(cfg.model.name, ["region_refiner"], "refiner")
        look_up_option(cfg.loss.name, LOSSES.names(), "loss")
        look_up_option(cfg.optim.optimizer, ["adam", "adamw"], "optimizer")
        look_up_option(cfg.data.labels, list(SCHEMES), "label scheme")
        if not SCHEMES[cfg.data.labels].multiclass:
            raise ColonsegError(
                f"data.labels={cfg.data.labels}: the refiner refines multi-class models' class "
                "probabilities (labels: neopolyp)"
            )
        if not 1 <= cfg.model.width <= 256:
            raise ColonsegError(f"model.width={cfg.model.width} (1 to 256)")
        n, bases = len(cfg.data.train), list(cfg.refine.base_models)
        if not n or len(bases) != n:
            raise ColonsegError(
                f"refine.base_models lists {len(bases)} models for {n} data.train sources: name "
                "one per source, each a model that did not train on it"
            )
        if cfg.postprocess:
            raise ColonsegError("postprocess: a refiner is itself a post-processing step (drop it)")
        if cfg.data.val and not cfg.refine.val_base:
            raise ColonsegError("data.val needs refine.val_base (a model that did not train on it)")

    def synthetic(self, cfg: DictConfig, root: Path) -> DictConfig:
        """``cfg`` on two generated folds of 8 images and 4 val images (two-class discs at 64²),
        with the zoo's ``neopolyp_unet_lite0`` as every base model."""
        size = 64
        folds = [write_neopolyp_dataset(root / f"fold{k}", n=8, size=size, seed=50 * k)
                 for k in range(2)]  # fmt: skip
        val = write_neopolyp_dataset(root / "val", n=4, size=size, seed=100)
        cfg = cfg.copy()
        cfg.data.train = [DataSource(str(f)) for f in folds]
        cfg.data.val = [DataSource(str(val))]
        cfg.data.image_size, cfg.data.batch_size = size, 4
        cfg.data.cache_dir = str(root / "cache")
        cfg.refine.base_models = [SYNTHETIC_BASE] * 2
        cfg.refine.val_base = SYNTHETIC_BASE
        return cfg

    def datamodule(self, cfg: DictConfig, stage: Stage) -> RefineDataModule:
        if stage.open_model is None:
            raise ColonsegError("refine: the engine gave no way to open the base models")
        return RefineDataModule(cfg, stage.open_model)

    def _init_kwargs(self, cfg: DictConfig) -> dict:
        return {"classes": get_scheme(cfg.data.labels).model_channels, "width": cfg.model.width,
                "mean": list(REFINER_MEAN), "std": list(REFINER_STD)}  # fmt: skip

    def module(self, cfg: DictConfig, dm: RefineDataModule) -> RefineModule:
        kwargs = self._init_kwargs(cfg)
        return RefineModule(
            create_model("region_refiner", **kwargs),
            classes=kwargs["classes"],
            loss=cfg.loss.name,
            optimizer=cfg.optim.optimizer,
            lr=cfg.optim.lr,
            weight_decay=cfg.optim.weight_decay,
            class_keys=list(get_scheme(cfg.data.labels).keys[1:]),
        )

    def evaluate_model(self, cfg: DictConfig, model_dir: Path) -> str:
        """A refiner is a post-processing step: evaluated on its validation base model."""
        return f"--model {cfg.refine.val_base or 'MODEL'} --postprocess refine={model_dir}"

    def training_images(self, cfg: DictConfig, dm: RefineDataModule) -> dict[str, list]:
        return {s.display_name(): [p.image for p in find_pairs(s.path, s.layout, s.split)]
                for s in dm.train_sources}  # fmt: skip

    def checkpoint(self, cfg: DictConfig, dm: RefineDataModule) -> dict:
        scheme = get_scheme(cfg.data.labels)
        return {
            "arch": "region_refiner",
            "init_kwargs": self._init_kwargs(cfg),
            "size": (cfg.data.image_size, cfg.data.image_size),
            "mean": REFINER_MEAN,
            "std": REFINER_STD,
            "class_names": list(scheme.class_names[1:]),
            "labels": scheme.name,
            "provenance": {
                "train": [vars(s) for s in dm.train_sources],
                "base_models": list(cfg.refine.base_models),
                "val_base": cfg.refine.val_base,
            },
        }
