"""The supervised method: image + mask pairs (binary or three-class), any zoo architecture."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from colonseg.data.datamodule import SegmentationDataModule
from colonseg.data.labels import SCHEMES, get_scheme
from colonseg.data.layouts import find_pairs
from colonseg.data.sources import DataSource
from colonseg.data.splits import fold_sources
from colonseg.data.synthetic import write_folder_dataset, write_neopolyp_dataset
from colonseg.data.transforms import AUGMENTATIONS
from colonseg.errors import ColonsegError
from colonseg.losses import LOSSES
from colonseg.methods.base import METHODS, Method, Stage
from colonseg.methods.supervised.config import SupervisedConfig
from colonseg.methods.supervised.module import SupervisedModule
from colonseg.models import MODELS, create_model
from colonseg.models.encoders import check_encoder, encoder_normalization
from colonseg.postprocess import PostProcess
from colonseg.registry import look_up_option

__all__ = ["Supervised"]


@METHODS.register("supervised")
class Supervised(Method):
    schema = SupervisedConfig
    curve_panels = ("loss", "dice", "accuracy", "f1")

    def validate(self, cfg: DictConfig) -> None:
        look_up_option(cfg.model.name, MODELS.names(), "model")
        check_encoder(cfg.model.encoder)
        look_up_option(cfg.loss.name, LOSSES.names(), "loss")
        look_up_option(cfg.data.augment, AUGMENTATIONS.names(), "augmentation")
        look_up_option(cfg.optim.optimizer, ["adam", "adamw"], "optimizer")
        look_up_option(cfg.optim.scheduler, ["cosine", "exponential", "none"], "scheduler")
        look_up_option(cfg.data.labels, list(SCHEMES), "label scheme")
        if cfg.loss.deep_supervision not in (True, False, "auto"):
            raise ColonsegError(
                f"loss.deep_supervision must be true, false or auto "
                f"(got {cfg.loss.deep_supervision!r})"
            )
        PostProcess.parse(cfg.postprocess)  # a bad spec fails here, before training
        channels = SCHEMES[cfg.data.labels].model_channels
        if cfg.model.classes != channels:
            raise ColonsegError(
                f"data.labels={cfg.data.labels} needs model.classes={channels} "
                f"(got {cfg.model.classes})"
            )

    def synthetic(self, cfg: DictConfig, root: Path) -> DictConfig:
        """``cfg`` on 16 generated train and 4 val images: bright discs with binary masks, or
        for ``data.labels=neopolyp`` two-class discs as red/green masks in the Kaggle layout."""
        writers = {"binary": write_folder_dataset, "neopolyp": write_neopolyp_dataset}
        look_up_option(cfg.data.labels, list(writers), "label scheme for --synthetic")
        write = writers[cfg.data.labels]
        train = write(root / "train", n=16, size=cfg.data.image_size, seed=0)
        val = write(root / "val", n=4, size=cfg.data.image_size, seed=100)
        cfg = cfg.copy()
        cfg.data.train, cfg.data.val = [DataSource(str(train))], [DataSource(str(val))]
        cfg.data.cache_dir = str(root / "cache")
        return cfg

    def sources(self, cfg: DictConfig) -> tuple[list[DataSource], list[DataSource]]:
        """The train and val sources; with ``data.fold=K``, their fold K split files."""
        train = [DataSource(**s) for s in cfg.data.train]
        val = [DataSource(**s) for s in cfg.data.val]
        return (train, val) if cfg.data.fold is None else fold_sources(train, val, cfg.data.fold)

    def datamodule(self, cfg: DictConfig, stage: Stage) -> SegmentationDataModule:
        mean, std = encoder_normalization(cfg.model.encoder)
        train, val = self.sources(cfg)
        return SegmentationDataModule(
            train=train,
            val=val,
            image_size=cfg.data.image_size,
            augment=cfg.data.augment,
            batch_size=cfg.data.batch_size,
            num_workers=cfg.data.num_workers,
            mean=mean,
            std=std,
            cache_dir=cfg.data.cache_dir,
            labels=cfg.data.labels,
            seed=cfg.seed,
        )

    def _init_kwargs(self, cfg: DictConfig) -> dict:
        return {
            "encoder": cfg.model.encoder,
            "classes": cfg.model.classes,
            **OmegaConf.to_container(cfg.model.kwargs),
        }

    def module(self, cfg: DictConfig, dm: SegmentationDataModule) -> SupervisedModule:
        net = create_model(
            cfg.model.name, pretrained=cfg.model.pretrained, **self._init_kwargs(cfg)
        )
        o, loss = cfg.optim, cfg.loss
        return SupervisedModule(
            net,
            loss=loss.name,
            optimizer=o.optimizer,
            lr=o.lr,
            weight_decay=o.weight_decay,
            scheduler=o.scheduler,
            warmup_steps=o.warmup_steps,
            encoder_lr_scale=o.encoder_lr_scale,
            gamma=o.gamma,
            step_epochs=o.step_epochs,
            threshold=cfg.threshold,
            channels_last=cfg.trainer.channels_last,
            val_names=dm.val_names,
            deep_supervision=loss.deep_supervision,
            deep_supervision_weights=(
                list(loss.deep_supervision_weights) if loss.deep_supervision_weights else None
            ),
            train_scales=list(cfg.data.train_scales),
            train_scale_mode=cfg.data.train_scale_mode,
            classes=cfg.model.classes,
            class_keys=list(get_scheme(cfg.data.labels).keys[1:]),
            class_weights=list(loss.class_weights) if loss.class_weights else None,
        )

    def training_images(self, cfg: DictConfig, dm: SegmentationDataModule) -> dict[str, list]:
        sources = self.sources(cfg)[0]
        return {s.display_name(): [p.image for p in find_pairs(s.path, s.layout, s.split)]
                for s in sources}  # fmt: skip

    def checkpoint(self, cfg: DictConfig, dm: SegmentationDataModule) -> dict:
        scheme = get_scheme(cfg.data.labels)
        return {
            "arch": cfg.model.name,
            "init_kwargs": self._init_kwargs(cfg),
            "size": (cfg.data.image_size, cfg.data.image_size),
            "mean": dm.mean,
            "std": dm.std,
            "class_names": list(scheme.class_names[1:]),
            "labels": scheme.name,
            "provenance": {"train": [vars(s) for s in self.sources(cfg)[0]]},
        }
