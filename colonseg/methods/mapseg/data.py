"""Normal frames for MAPSeg: decoded once, SIMPO lesions pasted on the fly.

Normal frames come from a folder (``../shared/datasets/polypgen-normal/images``) or from
MAPSeg's MVTec-style layout ``<root>/<target>/train/good``. A fixed, seeded share is held out for
validation; no polyp frame and no polyp mask is ever read here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from colonseg.data.datamodule import normalize
from colonseg.data.field_of_view import valid_area
from colonseg.data.io import read_image
from colonseg.data.transforms import augment, create_augmentation
from colonseg.errors import ColonsegError
from colonseg.methods.mapseg.simpo import Simpo, image_files

__all__ = ["NormalFrames", "load_frames", "normal_frame_files"]


def normal_frame_files(data_dir: str | Path, target: str, normal: str | None) -> list[Path]:
    """The normal training frames: ``<data_dir>/<target>/train/good`` (MVTec-style) if it exists,
    else the folder ``<data_dir>/<normal>``."""
    mvtec = Path(data_dir) / target / "train" / "good"
    folder = mvtec if mvtec.is_dir() else Path(data_dir) / (normal or "")
    if not folder.is_dir():
        raise ColonsegError(f"{folder}: no normal frames (expected {mvtec} or DATASET.normal)")
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
