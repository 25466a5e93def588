"""MSSG on histology with no labels: propose (SPM), optionally refine, train (MSG), evaluate.

1. SPM proposals for the training images (and the test images, for the baselines) into a cache
   keyed by the SPM settings; each proposal gland's box refined by frozen LiteMedSAM unless
   ``refine.backbone`` is ``none`` (the data module's ``prepare_data``);
2. MSG training of the segmenter on the (refined) proposals; ``data.val_fraction`` of the
   training images held out to log ``val/proposal_miou`` (agreement with their proposals: no
   label); the last epoch is kept — no annotation is read for training or model selection;
3. ``test/``: ``evaluate``'s files on the test splits (``miou`` in ``summary.json``),
   ``baselines.json`` and ``snapshots/`` (held-out image | proposal | prediction).

With ``trainer.rounds > 1`` step 2 repeats as self-training: each further round trains afresh
on the previous round's predicted glands on the training images (border where SPM's border lies
inside them, interior elsewhere; refined by MedSAM like the proposals).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from colonseg.data.cache import default_cache_dir
from colonseg.data.datamodule import worker_init
from colonseg.data.io import read_image, write_atomic, write_png
from colonseg.data.layouts import Pair, find_pairs, hold_out
from colonseg.data.sources import DataSource
from colonseg.data.synthetic import write_glas_dataset
from colonseg.device import resolve_device
from colonseg.methods.base import METHODS, Method, Stage
from colonseg.methods.mssg.baselines import baselines, write_snapshots
from colonseg.methods.mssg.config import MssgConfig
from colonseg.methods.mssg.data import ProposalImages
from colonseg.methods.mssg.module import MssgModule
from colonseg.methods.mssg.propose import read_proposal, settings_digest
from colonseg.methods.mssg.refine import (
    BoxRefiner,
    RefineSettings,
    propose_and_refine,
    refined_folder,
    refined_proposal,
)
from colonseg.methods.mssg.spm import SpmSettings
from colonseg.models import MODELS, create_model
from colonseg.models.encoders import check_encoder, encoder_normalization
from colonseg.registry import look_up_option

__all__ = ["Mssg", "MssgDataModule", "proposal_dir", "refined_dir"]


def spm_settings(cfg: DictConfig) -> SpmSettings:
    return SpmSettings(**OmegaConf.to_container(cfg.spm))


def refine_settings(cfg: DictConfig) -> RefineSettings:
    return RefineSettings(**OmegaConf.to_container(cfg.refine))


def proposal_dir(cfg: DictConfig) -> Path:
    """Where the proposals for these SPM settings live (shared by runs with the same settings)."""
    if cfg.data.proposals:
        return Path(cfg.data.proposals)
    return default_cache_dir() / "mssg" / f"spm-{settings_digest(spm_settings(cfg))}"


def refined_dir(cfg: DictConfig) -> Path | None:
    """The MedSAM-refined proposals' folder, or None when ``refine.backbone`` is "none"."""
    return refined_folder(proposal_dir(cfg), refine_settings(cfg))


def _test_sources(cfg: DictConfig) -> list[DataSource]:
    d = cfg.data
    name = Path(d.path).resolve().name
    return [DataSource(d.path, s, d.layout, f"{name}:{s}") for s in d.test_splits]


def propose(cfg: DictConfig, pairs: list[Pair], device: str) -> dict:
    """SPM proposals (and their MedSAM refinement) for ``pairs``, and for the test splits when
    the baselines are asked for; cached. Returns ``run_propose``'s report."""
    to_propose = list(pairs)
    if cfg.test.baselines:
        for source in _test_sources(cfg):
            if Path(source.path).is_dir():
                to_propose += find_pairs(source.path, source.layout, source.split)
    unique = list({p.id: p for p in to_propose}.values())
    spm, refine = spm_settings(cfg), refine_settings(cfg)
    return propose_and_refine(unique, proposal_dir(cfg), spm, refine, device)["propose"]


def _method_words(backbone: str) -> str:
    """What the checkpoint says it is: MSSG as published, or assisted by a foundation model."""
    if backbone == "none":
        return (
            "mssg as published (SPM proposals + MSG grouping; no annotation, no foundation model)"  # noqa: E501
        )
    return (f"mssg with {backbone} refinement (SPM proposals refined by {backbone}, a foundation "
            "model trained with masks on public medical images, then MSG grouping; no GlaS "
            "annotation used)")  # fmt: skip


class MssgDataModule(L.LightningDataModule):
    """Training images with their proposals: round 1 the (refined) SPM proposals, made in
    ``prepare_data``; later rounds the previous round's glands, written there into the round's
    folder."""

    def __init__(self, cfg: DictConfig, stage: Stage) -> None:
        super().__init__()
        self.cfg, self.stage = cfg, stage
        d = cfg.data
        self.pairs = find_pairs(d.path, d.layout, d.train_split, require_masks=False)
        self.train_pairs, self.val_pairs = hold_out(self.pairs, d.val_fraction, cfg.seed)
        self.folder = proposal_dir(cfg)
        first = refined_dir(cfg) or self.folder
        self.supervision = first if stage.number == 1 else stage.out
        self.mean, self.std = encoder_normalization(cfg.model.encoder)
        self.report: dict = {}
        self.train_set: ProposalImages | None = None

    def prepare_data(self) -> None:
        device = resolve_device(self.cfg.trainer.accelerator)
        self.report = propose(self.cfg, self.pairs, device)
        if self.stage.number > 1:
            refining = refined_dir(self.cfg) is not None
            refiner = BoxRefiner(refine_settings(self.cfg), device) if refining else None
            for pair in self.pairs:
                image = read_image(pair.image)
                gland = self.stage.previous.predict(image).mask > 0
                if refiner is not None:
                    gland = refiner.glands(image, gland)
                proposal = refined_proposal(read_proposal(self.folder, pair.id), gland)
                write_png(self.stage.out / "proposals" / f"{pair.id}.png", proposal)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        d = self.cfg.data
        size, radius = (int(d.size[0]), int(d.size[1])), d.unsure_radius
        self.train_set = ProposalImages(self.train_pairs, self.supervision, size, self.mean,
                                        self.std, True, tuple(d.crop_scale), radius)  # fmt: skip
        self.val_set = ProposalImages(self.val_pairs, self.supervision, size, self.mean,
                                      self.std, False, unsure_radius=radius)  # fmt: skip

    def train_dataloader(self) -> DataLoader:
        d = self.cfg.data
        return DataLoader(self.train_set, d.batch_size, shuffle=True, drop_last=True,
                          num_workers=d.num_workers, worker_init_fn=worker_init)  # fmt: skip

    def val_dataloader(self) -> DataLoader | list:
        d = self.cfg.data
        if not self.val_pairs:
            return []
        return DataLoader(self.val_set, d.batch_size, num_workers=d.num_workers,
                          worker_init_fn=worker_init)  # fmt: skip


@METHODS.register("mssg")
class Mssg(Method):
    schema = MssgConfig
    curve_panels = ("loss", "seg", "variation", "push", "proposal_miou")

    def validate(self, cfg: DictConfig) -> None:
        # a misspelt name fails now, not after an hour of proposal mining
        look_up_option(cfg.model.name, MODELS.names(), "model")
        check_encoder(cfg.model.encoder)
        refine_settings(cfg)  # refuses an unknown backbone

    def synthetic(self, cfg: DictConfig, root: Path) -> DictConfig:
        """``cfg`` on a generated GlaS-layout set (8 train, 2 + 2 test images of 96 × 128),
        its proposals cached beside it, at most 3 epochs."""
        parts = {"train": 8, "testA": 2, "testB": 2}
        cfg = cfg.copy()
        cfg.data.path = str(write_glas_dataset(root / "glas", parts))
        cfg.data.proposals = str(root / "spm")
        cfg.data.size = [96, 128]
        cfg.trainer.max_epochs = min(cfg.trainer.max_epochs, 3)
        return cfg

    def rounds(self, cfg: DictConfig) -> int:
        return cfg.trainer.rounds

    def datamodule(self, cfg: DictConfig, stage: Stage) -> MssgDataModule:
        return MssgDataModule(cfg, stage)

    def module(self, cfg: DictConfig, dm: MssgDataModule) -> MssgModule:
        m = cfg.model
        net = create_model(m.name, encoder=m.encoder, classes=1, pretrained=m.pretrained,
                           encoder_weights=m.encoder_weights,
                           **OmegaConf.to_container(m.kwargs))  # fmt: skip
        return MssgModule(net, embed_dim=m.embed_dim, lr=cfg.optim.lr,
                          weight_decay=cfg.optim.weight_decay, seed=cfg.seed,
                          **OmegaConf.to_container(cfg.loss))  # fmt: skip

    def training_images(self, cfg: DictConfig, dm: MssgDataModule) -> dict[str, list]:
        name = Path(cfg.data.path).resolve().name
        return {f"{name}:{cfg.data.train_split}": [p.image for p in dm.pairs]}

    def checkpoint(self, cfg: DictConfig, dm: MssgDataModule) -> dict:
        d = cfg.data
        return {
            "arch": cfg.model.name,
            "init_kwargs": {
                "encoder": cfg.model.encoder,
                "classes": 1,
                **OmegaConf.to_container(cfg.model.kwargs),
            },  # fmt: skip
            "size": (int(d.size[0]), int(d.size[1])),
            "mean": dm.mean,
            "std": dm.std,
            "class_names": ["gland"],
            "provenance": {
                "method": _method_words(cfg.refine.backbone),
                "train": {
                    "images": len(dm.train_pairs),
                    "source": str(d.path),
                    "split": d.train_split,
                },  # fmt: skip
                "spm": asdict(spm_settings(cfg)),
                "spm_seconds_per_image": dm.report.get("seconds_per_image"),
                "refine": asdict(refine_settings(cfg)),
            },
        }

    def test_sources(self, cfg: DictConfig) -> list[DataSource]:
        return _test_sources(cfg)

    def evaluate_extra(self, cfg: DictConfig, predictor: Any, summary: dict, out: Path) -> dict:
        """``baselines.json`` (proposals computed first where missing) and ``snapshots/``."""
        d = cfg.data
        pairs = find_pairs(d.path, d.layout, d.train_split, require_masks=False)
        folder, refined = proposal_dir(cfg), refined_dir(cfg)
        result = {}
        if cfg.test.baselines:
            propose(cfg, pairs, resolve_device(cfg.trainer.accelerator))
            result["baselines"] = baselines(d, folder, refined, spm_settings(cfg).hole_max)
            text = json.dumps(result["baselines"], indent=2)
            write_atomic(out / "baselines.json", lambda tmp: tmp.write_text(text))
        held_out = hold_out(pairs, d.val_fraction, cfg.seed)[1][:4]
        if all((folder / "proposals" / f"{p.id}.png").is_file() for p in held_out):
            write_snapshots(predictor, held_out, refined or folder, out / "snapshots")
        return result
