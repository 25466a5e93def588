"""Normal frames for MAPSeg: decoded once, SIMPO lesions pasted on the fly.

Normal frames come from a folder (``../shared/datasets/polypgen-normal/images``) or from
MAPSeg's MVTec-style layout ``<root>/<target>/train/good``. A fixed, seeded share is held out for
validation; no polyp frame and no polyp mask is ever read here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset

from colonseg.data.datamodule import normalize, worker_init
from colonseg.data.field_of_view import valid_area
from colonseg.data.io import read_image
from colonseg.data.layouts import hold_out
from colonseg.data.transforms import augment, create_augmentation
from colonseg.errors import ColonsegError
from colonseg.methods.mapseg.simpo import Simpo, image_files, load_shapes, load_textures
from colonseg.models.encoders import encoder_normalization

__all__ = [
    "MapsegDataModule",
    "NormalFrames",
    "held_out_normal",
    "load_frames",
    "memory_picks",
    "mvtec_root",
    "normal_frame_files",
    "simpo_from_config",
    "split_normal_frames",
    "split_seed",
]


def normal_frame_files(data_dir: str | Path, target: str, normal: str | None) -> list[Path]:
    """The normal training frames: ``<data_dir>/<target>/train/good`` (MVTec-style) if it exists,
    else the folder ``<data_dir>/<normal>``."""
    mvtec = Path(data_dir) / target / "train" / "good"
    folder = mvtec if mvtec.is_dir() else Path(data_dir) / (normal or "")
    if not folder.is_dir():
        raise ColonsegError(f"{folder}: no normal frames (expected {mvtec} or data.normal)")
    return image_files(folder)


def load_frames(files: Sequence[Path], size: int) -> np.ndarray:
    """The frames ``files`` resized to ``size`` × ``size``, ``(N, size, size, 3)`` uint8 RGB."""
    return np.stack(
        [cv2.resize(read_image(f), (size, size), interpolation=cv2.INTER_AREA) for f in files]
    )


class NormalFrames(Dataset):
    """Samples ``{"image", "mask"}``: a normal frame, with a SIMPO lesion (and its mask) pasted
    with probability ``simpo.p``, or always with ``force`` (the validation set, where the seed
    also fixes each frame's lesion so every epoch sees the same one), then ``augment`` (an
    augmentation name, applied to the frame and the lesion mask together)."""

    def __init__(
        self,
        files: list[Path],
        size: int,
        simpo: Simpo,
        mean: Sequence[float],
        std: Sequence[float],
        force: bool = False,
        seed: int | None = None,
        augment: str = "none",
    ) -> None:
        self.images = load_frames(files, size)
        self.areas = np.stack([valid_area(im) for im in self.images])
        self.simpo, self.mean, self.std = simpo, tuple(mean), tuple(std)
        self.force, self.seed = force, seed
        self.augment = create_augmentation(augment)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        seed = [self.seed, i] if self.seed is not None else int(torch.randint(2**31, ()).item())
        rng = np.random.default_rng(seed)
        image, mask = self.simpo(self.images[i], rng, force=self.force, area=self.areas[i])
        # the lesion and the frame together
        out = augment(self.augment, int(rng.integers(2**31)), image=image, mask=mask)
        image, mask = out["image"], out["mask"]
        return {
            "image": normalize(np.ascontiguousarray(image), self.mean, self.std),
            "mask": torch.from_numpy(np.ascontiguousarray(mask)).float()[None],
        }


def mvtec_root(cfg: DictConfig) -> Path | None:
    """``<root>/<target>`` when it is in MAPSeg's MVTec-style layout with a test set."""
    root = Path(cfg.data.root) / cfg.data.target
    return root if (root / "test").is_dir() and (root / "ground_truth").is_dir() else None


def simpo_from_config(cfg: DictConfig) -> Simpo:
    """The config's SIMPO synthesiser, with its texture and shape folders loaded."""
    d = cfg.data
    return Simpo(
        textures=load_textures(Path(d.root) / d.textures) if d.textures else [],
        shapes=load_shapes(Path(d.root) / d.shapes) if d.shapes else [],
        fills=tuple(d.simpo.fills),
        p=d.simpo.p,
        lobes=d.simpo.lobes,
        relief=d.simpo.relief,
    )


def split_seed(cfg: DictConfig) -> int:
    """The seed of the held-out frames and of their validation lesions: ``data.split_seed``,
    else ``seed`` (runs that differ only in ``seed`` can share one validation set)."""
    return cfg.seed if cfg.data.split_seed is None else cfg.data.split_seed


def split_normal_frames(cfg: DictConfig) -> tuple[list[Path], list[Path]]:
    """The normal frames to train on, and those held out (``data.val_fraction``)."""
    d = cfg.data
    files = normal_frame_files(d.root, d.target, d.normal)
    return hold_out(files, d.val_fraction, split_seed(cfg))


def memory_picks(cfg: DictConfig, n_train: int) -> np.ndarray:
    """Which of the ``n_train`` training frames fill the memory (seeded by ``seed``)."""
    rng = np.random.default_rng(cfg.seed)
    return rng.choice(n_train, cfg.model.memory_size, replace=False)


def held_out_normal(cfg: DictConfig) -> list[Path]:
    """Normal frames never trained on: the target's ``test/good`` (MVTec-style), else the
    held-out share of the normal folder; empty when there are none."""
    mvtec = mvtec_root(cfg)
    if mvtec and (mvtec / "test" / "good").is_dir():
        return image_files(mvtec / "test" / "good")
    try:
        return split_normal_frames(cfg)[1]
    except ColonsegError:
        return []


class MapsegDataModule(L.LightningDataModule):
    """Training frames with random SIMPO lesions; held-out frames each with a fixed one."""

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.mean, self.std = encoder_normalization(cfg.model.encoder)
        self.train_set: NormalFrames | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        d = self.cfg.data
        self.train_files, val_files = split_normal_frames(self.cfg)
        simpo = simpo_from_config(self.cfg)
        size, mean, std = d.image_size, self.mean, self.std
        self.train_set = NormalFrames(self.train_files, size, simpo, mean, std, augment=d.augment)
        self.val_set = NormalFrames(val_files, size, simpo, mean, std, force=True,
                                    seed=split_seed(self.cfg))  # fmt: skip

    def train_dataloader(self) -> DataLoader:
        d = self.cfg.data
        return DataLoader(self.train_set, d.batch_size, shuffle=True, drop_last=True,
                          num_workers=d.num_workers, worker_init_fn=worker_init)  # fmt: skip

    def val_dataloader(self) -> DataLoader:
        return DataLoader(
            self.val_set,
            self.cfg.data.batch_size,
            num_workers=self.cfg.data.num_workers,
            worker_init_fn=worker_init,
        )
