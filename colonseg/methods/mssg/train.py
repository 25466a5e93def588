"""``run_mssg(cfg)``: MSSG on histology with no labels — propose (SPM), train (MSG), evaluate.

``colonseg train mssg/glas`` dispatches here when a config says ``METHOD: mssg``. Steps:

1. SPM proposals for the training images (and the test images, for the SPM baseline) into a
   cache keyed by the SPM settings (:mod:`colonseg.methods.mssg.propose`);
2. MSG training of the segmenter on the training proposals; ``val_fraction`` of the training
   images held out to log ``val/proposal_miou`` (agreement with their proposals: no label);
   the last epoch is kept — no annotation is read for training or model selection;
3. ``model/`` (an ordinary colonseg checkpoint: ``predict``, ``evaluate``, the app and ONNX
   export take it), ``curves.png``, ``snapshots/`` (held-out image | proposal | prediction),
   ``test/`` (``evaluate``'s files on the test splits, ``miou`` in ``summary.json``) and
   ``test/baselines.json``: the SPM proposals alone and Kim & Kanezaki's argmax clusters (with
   the same border cue) on the test splits, and the proposals' quality on the training split.
   Annotations are read in step 3 only, to score.

With ``trainer.rounds > 1`` step 2 repeats as self-training: each further round trains afresh
on the previous round's predicted glands on the training images (border where SPM's border lies
inside them, interior elsewhere); ``round_<r>/`` keeps each round's model and curves, and a
rerun reuses the rounds before the last whose ``model/`` is there.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from colonseg.config import merge_config, save_config
from colonseg.data.cache import default_cache_dir
from colonseg.data.io import read_image, read_instances, read_mask, write_atomic, write_png
from colonseg.data.layouts import Pair, find_pairs, hold_out
from colonseg.data.sources import DataSource
from colonseg.engine.checkpoint import ModelMeta, save_pretrained
from colonseg.engine.evaluate import run_evaluate
from colonseg.engine.predict import Predictor
from colonseg.engine.train import trainer_precision
from colonseg.errors import ColonsegError
from colonseg.methods.mssg.data import ProposalImages
from colonseg.methods.mssg.module import MssgModule
from colonseg.methods.mssg.propose import (
    proposal_overlay,
    read_proposal,
    run_propose,
    settings_digest,
)
from colonseg.methods.mssg.refine import (
    BoxRefiner,
    RefineSettings,
    refined_folder,
    refined_proposal,
    run_refine,
)
from colonseg.methods.mssg.spm import (
    UNSURE,
    SpmSettings,
    mark_unsure,
    proposal_from_border,
    select_border,
)
from colonseg.metrics import ConfusionMeter, ObjectMeter, mean_iou
from colonseg.models.encoders import check_encoder, encoder_normalization
from colonseg.models.registry import MODELS, create_model
from colonseg.registry import look_up_option
from colonseg.viz.curves import plot_curves
from colonseg.viz.overlays import overlay

__all__ = ["MssgConfig", "load_mssg_config", "run_mssg"]


@dataclass
class DataSection:
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
class ModelSection:
    arch: str = "unet"  # any segmentation_models_pytorch architecture of the zoo (paper: pspnet)
    encoder: str = "tf_efficientnet_lite0"
    pretrained: bool = True
    encoder_weights: str | None = None
    embed_dim: int = 32


@dataclass
class LossSection:
    variation: float = 1.0
    push: float = 1.0
    margin: float = 1.0
    max_pixels: int = 1000
    omission_start: int = 3  # epochs on the raw proposals before they are refined
    omission_band: int = 7  # pixels (at the model's input size) beyond a proposal boundary
    omission_threshold: float = 0.7


@dataclass
class TrainerSection:
    max_epochs: int = 20
    lr: float = 5e-4
    weight_decay: float = 1e-4
    accelerator: str = "auto"
    devices: Any = "auto"
    strategy: str = "auto"
    precision: str = "auto"
    seed: int = 0
    limit_train_batches: float = 1.0
    rounds: int = 1  # > 1: self-training, each round learns the previous round's glands


@dataclass
class TestSection:
    only: bool = False
    checkpoint: str | None = None
    baselines: bool = True


@dataclass
class MssgConfig:
    METHOD: str = "mssg"
    name: str = "mssg_glas"
    out_dir: str = "runs"
    postprocess: str = ""
    data: DataSection = field(default_factory=DataSection)
    spm: SpmSettings = field(default_factory=SpmSettings)
    refine: RefineSettings = field(default_factory=RefineSettings)
    model: ModelSection = field(default_factory=ModelSection)
    loss: LossSection = field(default_factory=LossSection)
    trainer: TrainerSection = field(default_factory=TrainerSection)
    test: TestSection = field(default_factory=TestSection)


def load_mssg_config(config: str | Path, overrides: list[str] | tuple[str, ...] = ()):
    """An MSSG config (``METHOD: mssg``) with ``key=value`` overrides, validated."""
    cfg = merge_config(MssgConfig, config, overrides, "MSSG config")
    try:  # a misspelt name fails now, not after an hour of proposal mining
        look_up_option(cfg.model.arch, MODELS.names(), "model")
        check_encoder(cfg.model.encoder)
    except ColonsegError as exc:
        raise ColonsegError(f"{config}: {exc}") from None
    return cfg


def spm_settings(cfg: DictConfig) -> SpmSettings:
    return SpmSettings(**OmegaConf.to_container(cfg.spm))


def refine_settings(cfg: DictConfig) -> RefineSettings:
    return RefineSettings(**OmegaConf.to_container(cfg.refine))


def refined_dir(cfg: DictConfig) -> Path | None:
    """The MedSAM-refined proposals' folder, or None when ``refine.backbone`` is "none"."""
    return refined_folder(proposal_dir(cfg), refine_settings(cfg))


def proposal_dir(cfg: DictConfig) -> Path:
    """Where the proposals for these SPM settings live (shared by runs with the same settings)."""
    if cfg.data.proposals:
        return Path(cfg.data.proposals)
    return default_cache_dir() / "mssg" / f"spm-{settings_digest(spm_settings(cfg))}"


def _test_sources(cfg: DictConfig) -> list[DataSource]:
    d = cfg.data
    name = Path(d.path).resolve().name
    return [DataSource(d.path, s, d.layout, f"{name}:{s}") for s in d.test_splits]


def _binary_scores(pairs: list[Pair], masks: dict[str, np.ndarray]) -> dict[str, float]:
    """MSSG's mIoU, Dice and the object metrics of given gland masks against the annotations."""
    pooled, objects, dice = ConfusionMeter(2), ObjectMeter(), []
    for p in pairs:
        truth, pred = read_mask(p.mask), masks[p.id]
        pooled.update(pred, truth)
        objects.update(pred, read_instances(p.mask))
        inter, total = float((pred & truth).sum()), float(pred.sum() + truth.sum())
        dice.append(2 * inter / total if total else 1.0)
    return {"n": len(pairs), **mean_iou(pooled.matrix), "dice": float(np.mean(dice)),
            **objects.compute()}  # fmt: skip


def _argmax_glands(folder: Path, pair: Pair, hole_max: float) -> np.ndarray:
    """Kim & Kanezaki's argmax segmentation turned into glands by SPM's own border cue."""
    labels = cv2.imread(str(folder / "argmax" / f"{pair.id}.png"), cv2.IMREAD_UNCHANGED)
    gray = cv2.cvtColor(read_image(pair.image), cv2.COLOR_RGB2GRAY)
    return proposal_from_border(select_border(gray, labels), hole_max) > 0


def _baselines(cfg: DictConfig, folder: Path) -> dict:
    d, out = cfg.data, {}
    hole_max, refined = spm_settings(cfg).hole_max, refined_dir(cfg)
    groups = [(f"{Path(d.path).resolve().name}:{s}", s) for s in d.test_splits]
    if d.train_split:
        groups.append((f"{Path(d.path).resolve().name}:{d.train_split} (pseudo-masks)",
                       d.train_split))  # fmt: skip
    for name, split in groups:
        pairs = find_pairs(d.path, d.layout, split)
        proposals = {p.id: read_proposal(folder, p.id) > 0 for p in pairs}
        out[name] = {"spm_proposals": _binary_scores(pairs, proposals)}
        if refined is not None:
            glands = {p.id: read_proposal(refined, p.id) > 0 for p in pairs}
            out[name]["spm_medsam_refined"] = _binary_scores(pairs, glands)
        argmax = {p.id: _argmax_glands(folder, p, hole_max) for p in pairs}
        out[name]["kim_kanezaki_argmax"] = _binary_scores(pairs, argmax)
        if d.unsure_radius > 0 and split == d.train_split:  # on what MSG is supervised with
            out[name]["unsure"] = _unsure_report(pairs, refined or folder, d.unsure_radius)
    return out


def _unsure_report(pairs: list[Pair], folder: Path, radius: float) -> dict[str, float]:
    """How much of the training images MSG leaves unsupervised, and how much of that the
    annotation calls gland (a report: nothing is chosen by it)."""
    unsure = gland = total = 0
    for p in pairs:
        region = mark_unsure(read_proposal(folder, p.id), radius) == UNSURE
        unsure += int(region.sum())
        gland += int((region & read_mask(p.mask)).sum())
        total += region.size
    return {"fraction_of_pixels": unsure / total, "annotated_gland": gland / max(unsure, 1)}


def _snapshots(predictor: Predictor, pairs: list[Pair], folder: Path, out: Path) -> None:
    for pair in pairs:
        image = read_image(pair.image)
        proposal = read_proposal(folder, pair.id)
        pred = predictor.predict(image).mask > 0
        strip = np.concatenate([image, proposal_overlay(image, proposal), overlay(image, pred)], 1)
        write_atomic(
            out / f"{pair.id}.jpg",
            lambda tmp, s=strip: cv2.imwrite(str(tmp), cv2.cvtColor(s, cv2.COLOR_RGB2BGR)),
        )


def _evaluate(cfg: DictConfig, model_dir: Path, folder: Path, out: Path) -> dict:
    sources = [s for s in _test_sources(cfg) if Path(s.path).is_dir()]
    if not sources:
        return {}
    predictor = Predictor.from_pretrained(model_dir)
    summary = run_evaluate(predictor, sources, out, progress=False, title=f"MSSG: {model_dir}")
    if cfg.test.baselines:
        text = json.dumps(_baselines(cfg, folder), indent=2)
        write_atomic(out / "baselines.json", lambda tmp: tmp.write_text(text))
    return summary


def _train_round(cfg, train_pairs, val_pairs, folder: Path, out: Path) -> tuple[MssgModule, dict]:
    """One MSG training from ImageNet weights on the proposals in ``folder``; logs under
    ``out``."""
    d, t = cfg.data, cfg.trainer
    L.seed_everything(t.seed, workers=True, verbose=False)
    mean, std = encoder_normalization(cfg.model.encoder)
    size = (int(d.size[0]), int(d.size[1]))
    train_set = ProposalImages(train_pairs, folder, size, mean, std, True, tuple(d.crop_scale),
                               d.unsure_radius)  # fmt: skip
    val_set = ProposalImages(val_pairs, folder, size, mean, std, False,
                             unsure_radius=d.unsure_radius)  # fmt: skip
    net = create_model(
        cfg.model.arch,
        encoder=cfg.model.encoder,
        classes=1,
        pretrained=cfg.model.pretrained,
        encoder_weights=cfg.model.encoder_weights,
    )
    module = MssgModule(
        net,
        embed_dim=cfg.model.embed_dim,
        lr=t.lr,
        weight_decay=t.weight_decay,
        seed=t.seed,
        **OmegaConf.to_container(cfg.loss),
    )
    trainer = L.Trainer(
        max_epochs=t.max_epochs,
        accelerator=t.accelerator,
        devices=t.devices,
        strategy=t.strategy,
        precision=trainer_precision(t.precision, t.accelerator),
        limit_train_batches=t.limit_train_batches,
        logger=CSVLogger(out, name="logs", version=""),
        callbacks=[ModelCheckpoint(out / "checkpoints", "last", save_top_k=1)],
        enable_progress_bar=sys.stderr.isatty(),
        enable_model_summary=False,
        log_every_n_steps=5,
        default_root_dir=out,
    )
    loader = DataLoader(train_set, d.batch_size, shuffle=True, drop_last=True,
                        num_workers=d.num_workers)  # fmt: skip
    val_loader = DataLoader(val_set, d.batch_size, num_workers=d.num_workers) if val_pairs else None
    trainer.fit(module, loader, val_loader)
    if (out / "logs" / "metrics.csv").is_file():
        plot_curves(out / "logs" / "metrics.csv", out / "curves.png",
                    ("loss", "seg", "variation", "push", "proposal_miou"))  # fmt: skip
    return module, {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}


def _next_proposals(
    predictor: Predictor, pairs: list[Pair], folder: Path, out: Path, refiner: BoxRefiner | None
) -> None:
    """Self-training: the model's glands on the training images (each one's box refined by
    MedSAM when ``refiner`` is given) become the next proposals; their border is where SPM's
    border lies inside them, the rest of each gland is interior."""
    for pair in pairs:
        image = read_image(pair.image)
        gland = predictor.predict(image).mask > 0
        if refiner is not None:
            gland = refiner.glands(image, gland)
        write_png(out / "proposals" / f"{pair.id}.png",
                  refined_proposal(read_proposal(folder, pair.id), gland))  # fmt: skip


def _propose_and_refine(cfg: DictConfig, pairs: list[Pair], folder: Path, device: str) -> dict:
    """SPM proposals (and their MedSAM refinement) for the training pairs, and for the test
    splits when the baselines are asked for; cached. Returns ``run_propose``'s report."""
    to_propose = list(pairs)
    if cfg.test.baselines:
        for source in _test_sources(cfg):
            if Path(source.path).is_dir():
                to_propose += find_pairs(source.path, source.layout, source.split)
    unique = list({p.id: p for p in to_propose}.values())
    spm = run_propose(unique, folder, spm_settings(cfg), device)
    refined = refined_dir(cfg)
    if refined is not None:
        run_refine(unique, folder, refined, refine_settings(cfg), device)
    return spm


def run_mssg(cfg: DictConfig, command: str | None = None) -> dict:
    """Propose, train and evaluate (or with ``test.only`` evaluate); returns
    ``{"run_dir", "model_dir", "metrics", "summary"}``."""
    run_dir = Path(cfg.out_dir) / cfg.name
    folder = proposal_dir(cfg)
    d, t = cfg.data, cfg.trainer
    gpu = t.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    device = "cuda" if gpu else "cpu"
    if cfg.test.only:
        if cfg.test.baselines:
            pairs = find_pairs(d.path, d.layout, d.train_split, require_masks=False)
            _propose_and_refine(cfg, pairs, folder, device)
        model_dir = Path(cfg.test.checkpoint or run_dir / "model")
        summary = _evaluate(cfg, model_dir, folder, run_dir / "test")
        return {"model_dir": model_dir, "summary": summary}
    pairs = find_pairs(d.path, d.layout, d.train_split, require_masks=False)
    spm = _propose_and_refine(cfg, pairs, folder, device)
    refined = refined_dir(cfg)
    train_pairs, val_pairs = hold_out(pairs, d.val_fraction, t.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    supervision = refined or folder
    for r in range(1, t.rounds + 1):
        out = run_dir if t.rounds == 1 else run_dir / f"round_{r}"
        if r > 1:
            refiner = BoxRefiner(refine_settings(cfg), device) if refined else None
            _next_proposals(Predictor.from_pretrained(model_dir), pairs, folder, out, refiner)
            supervision = out
        if r < t.rounds and (out / "model" / "config.json").is_file():
            model_dir = out / "model"  # an earlier round of a resumed run
            continue
        module, metrics = _train_round(cfg, train_pairs, val_pairs, supervision, out)
        mean, std = encoder_normalization(cfg.model.encoder)
        meta = ModelMeta(
            arch=cfg.model.arch,
            init_kwargs={"encoder": cfg.model.encoder, "classes": 1},
            size=(int(d.size[0]), int(d.size[1])),
            mean=mean,
            std=std,
            class_names=["gland"],
            postprocess=cfg.postprocess,
            provenance={
                "config": cfg.name,
                "method": "mssg (SPM proposals, MedSAM box refinement unless refine.backbone "
                "is none, MSG grouping; no annotation used)",
                "train": {
                    "images": len(train_pairs),
                    "source": str(d.path),
                    "split": d.train_split,
                },  # fmt: skip
                "spm": asdict(spm_settings(cfg)),
                "spm_seconds_per_image": spm["seconds_per_image"],
                "refine": asdict(refine_settings(cfg)),
                "epochs": t.max_epochs,
                "round": r,
                "command": command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            },
            metrics={k: v for k, v in metrics.items() if k.startswith("val/")},
        )
        model_dir = save_pretrained(module.net, meta, out / "model")
    if t.rounds > 1:
        shutil.copytree(model_dir, run_dir / "model", dirs_exist_ok=True)
        model_dir = run_dir / "model"
    write_atomic(run_dir / "metrics.json", lambda tmp: tmp.write_text(json.dumps(metrics)))
    predictor = Predictor.from_pretrained(model_dir)
    _snapshots(predictor, val_pairs[:4], refined or folder, run_dir / "snapshots")
    summary = _evaluate(cfg, model_dir, folder, run_dir / "test")
    return {"run_dir": run_dir, "model_dir": model_dir, "metrics": metrics, "summary": summary}
