"""MAPSeg: train on normal frames with SIMPO lesions; evaluate on polyp sets as anomalies.

The checkpoint is an ordinary colonseg checkpoint of the ``mapseg`` architecture whose default
post-processing is MAPSeg's demo — plain Otsu threshold, 5×5 closing, hole filling, largest
region — inside the field of view. Plain Otsu always finds a region, also in a normal frame: to
screen frames, use ``--postprocess fov,otsu,close=5,fill_holes,keep_largest`` (Otsu never below
0.2), whose false-positive area on normal frames is reported as ``fp_area_screen``.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from colonseg.data.io import read_image
from colonseg.data.sources import DataSource
from colonseg.data.synthetic import write_folder_dataset, write_normal_frames
from colonseg.errors import ColonsegError
from colonseg.methods.base import METHODS, Method, Stage
from colonseg.methods.mapseg.config import SCREEN_POSTPROCESS, MapsegConfig
from colonseg.methods.mapseg.data import (
    MapsegDataModule,
    held_out_normal,
    memory_picks,
    mvtec_root,
)
from colonseg.methods.mapseg.module import MapsegModule
from colonseg.metrics import AUROCMeter
from colonseg.models.encoders import check_encoder
from colonseg.models.mapseg import MemSegNet
from colonseg.postprocess import PostProcess
from colonseg.registry import look_up_option

__all__ = ["Mapseg"]


def _frame_scores(
    predictor: Any, files: list[Path], screen: PostProcess
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per frame, from one prediction: the image-level anomaly score (highest lesion
    probability, as ``evaluate``'s per-case ``peak``), the predicted area fraction after the
    default post-processing, and after ``screen`` (another post-processing)."""
    scores, areas, screened = [], [], []
    for f in files:
        image = read_image(f)
        out = predictor.predict(image)
        scores.append(float(out.prob.max()))
        areas.append(float(out.mask.mean()))
        prob = screen.restrict(out.prob[None], image)[0]
        raw = (prob >= predictor.threshold).astype(np.uint8)
        screened.append(float(screen(prob, raw)[0].mean()))
    return np.array(scores), np.array(areas), np.array(screened)


def _image_auroc(polyp: np.ndarray, normal: np.ndarray) -> float:
    meter = AUROCMeter()
    meter.update(np.concatenate([polyp, normal]), np.arange(len(polyp) + len(normal)) < len(polyp))
    return meter.compute()


@METHODS.register("mapseg")
class Mapseg(Method):
    schema = MapsegConfig
    curve_panels = ("loss", "dice")

    def validate(self, cfg: DictConfig) -> None:
        look_up_option(cfg.model.name, ["mapseg"], "model for method mapseg")
        look_up_option(cfg.test.tta, ["none", "flip", "d4"], "test-time augmentation")
        look_up_option(cfg.model.memory_match, ["frame", "patch"], "memory match")
        check_encoder(cfg.model.encoder)
        PostProcess.parse(cfg.postprocess)

    def synthetic(self, cfg: DictConfig, root: Path) -> DictConfig:
        """``cfg`` on 32 generated normal frames (a quarter held out) and 4 frames with discs
        to test on, at 64² and at most 3 epochs."""
        write_normal_frames(root, n=32, size=72)
        write_folder_dataset(root / "polyps", n=4, size=64, seed=100)
        cfg = cfg.copy()
        d = cfg.data
        d.root, d.target, d.normal, d.textures, d.shapes = (
            str(root),
            "-",
            "normal",
            "textures",
            None,
        )
        d.image_size, d.val_fraction = 64, 0.25
        cfg.model.memory_size = min(cfg.model.memory_size, 8)
        cfg.test.datasets = [{"path": "polyps"}]
        cfg.trainer.max_epochs = min(cfg.trainer.max_epochs, 3)
        return cfg

    def datamodule(self, cfg: DictConfig, stage: Stage) -> MapsegDataModule:
        return MapsegDataModule(cfg)

    def _init_kwargs(self, cfg: DictConfig) -> dict:
        m = cfg.model
        return {
            "encoder": m.encoder,
            "classes": 1,
            "size": cfg.data.image_size,
            "memory_size": m.memory_size,
            "memory": m.memory,
            "memory_match": m.memory_match,
            "width": m.width,
        }

    def module(self, cfg: DictConfig, dm: MapsegDataModule) -> MapsegModule:
        m = cfg.model
        net = MemSegNet(
            pretrained=m.pretrained, encoder_weights=m.encoder_weights, **self._init_kwargs(cfg)
        )
        frames = None
        if m.memory:
            if len(dm.train_set) < m.memory_size:
                raise ColonsegError(
                    f"model.memory_size={m.memory_size} but only {len(dm.train_set)} training "
                    "frames"
                )
            frames = dm.train_set.images[memory_picks(cfg, len(dm.train_set))]
        return MapsegModule(
            net,
            frames,
            lr=cfg.optim.lr,
            weight_decay=cfg.optim.weight_decay,
            focal_weight=cfg.loss.focal,
            l1_weight=cfg.loss.l1,
            gamma=cfg.loss.focal_gamma,
        )

    def training_images(self, cfg: DictConfig, dm: MapsegDataModule) -> dict[str, list]:
        return {Path(dm.train_files[0]).parent.name: list(dm.train_files)}  # normal frames

    def checkpoint(self, cfg: DictConfig, dm: MapsegDataModule) -> dict:
        m, size = cfg.model, cfg.data.image_size
        return {
            "arch": "mapseg",
            "init_kwargs": self._init_kwargs(cfg),
            "size": (size, size),
            "mean": dm.mean,
            "std": dm.std,
            "tta": cfg.test.tta,
            # the frozen offline ImageNet encoder comes from its package, not from the file
            "packaged": ["encoder"] if m.pretrained and not m.encoder_weights else [],
            "provenance": {
                "method": "mapseg (normal frames + SIMPO; no polyp label used)",
                "train": {
                    "normal_frames": len(dm.train_files),
                    "source": str(dm.train_files[0].parent),
                },
                "simpo": OmegaConf.to_container(cfg.data.simpo),
            },
        }

    def test_sources(self, cfg: DictConfig) -> list[DataSource]:
        """The ``test.datasets`` (under ``data.root``), and an MVTec-style target's test set."""
        root = Path(cfg.data.root)
        sources = [
            DataSource(str(root / d["path"]), d.get("split"), d.get("layout", "auto"))
            for d in cfg.test.datasets
        ]
        mvtec = mvtec_root(cfg)
        return sources + ([DataSource(str(mvtec), layout="mvtec")] if mvtec else [])

    def predictor_options(self, cfg: DictConfig) -> dict:
        return {"tta": cfg.test.tta}

    def evaluate_extra(self, cfg: DictConfig, predictor: Any, summary: dict, out: Path) -> dict:
        """``image_auroc`` (each test set's frames against the held-out normal frames) and a
        ``normal:held-out`` entry: the false-positive area and the share of frames with any, on
        the held-out normal frames, after the default post-processing and after the screening
        one."""
        held_out = held_out_normal(cfg)
        if not held_out:
            return {}
        screen = PostProcess.parse(SCREEN_POSTPROCESS)
        normal, areas, screened = _frame_scores(predictor, held_out, screen)
        normal = normal.round(6)  # as the test frames' peaks in per_case.csv: no false ties
        with open(out / "per_case.csv", newline="") as f:
            peaks = [(row["dataset"], float(row["peak"])) for row in csv.DictReader(f)]
        for name in summary:
            polyp = np.array([peak for dataset, peak in peaks if dataset == name])
            summary[name]["image_auroc"] = _image_auroc(polyp, normal)
        summary["normal:held-out"] = {
            "n": len(held_out),
            "fp_area": float(np.mean(areas)),
            "fp_frames": float(np.mean(areas > 0)),
            "fp_area_screen": float(np.mean(screened)),
            "fp_frames_screen": float(np.mean(screened > 0)),
        }
        return {}
