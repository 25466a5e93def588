"""Training data: resized arrays in memory → albumentations → normalised tensors.

Example:
    >>> dm = SegmentationDataModule(train=[DataSource(path=".../kvasir-seg", split="pranet_train")])
    >>> dm.setup("fit"); batch = next(iter(dm.train_dataloader()))
    >>> batch["image"].shape, batch["mask"].shape   # (B, 3, S, S), (B, 1, S, S)

Masks are class maps under the label scheme ``labels`` (``binary``: {0, 1}; ``neopolyp``: 0..2).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import albumentations as A
import cv2
import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.seed import pl_worker_init_function
from torch.utils.data import DataLoader, Dataset, Sampler

from colonseg.data.cache import load_resized_pairs
from colonseg.data.layouts import find_pairs
from colonseg.data.sources import DataSource
from colonseg.data.transforms import augment, create_augmentation

__all__ = [
    "ArraySegmentationDataset",
    "EpochShuffle",
    "SegmentationDataModule",
    "end_with_parent",
    "normalize",
    "prepare_images",
    "worker_init",
]


def end_with_parent(worker_id: int = 0) -> None:
    """In a DataLoader worker: ask Linux to end this process when its parent dies, so a killed
    run (``kill -9``) leaves no data-loading process behind (a no-op elsewhere)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def worker_init(worker_id: int) -> None:
    """A training DataLoader worker's ``worker_init_fn``: :func:`end_with_parent`, then the seeds
    Lightning gives workers after ``seed_everything(workers=True)`` (it adds them only to loaders
    without a ``worker_init_fn``)."""
    end_with_parent()
    if int(os.environ.get("PL_SEED_WORKERS", 0)):
        pl_worker_init_function(worker_id)


def normalize(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(..., H, W, 3) uint8`` → ``(..., 3, H, W) float32`` normalised with ``mean``/``std``."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
    x = (x - torch.tensor(mean)) / torch.tensor(std)
    return x.movedim(-1, -3).contiguous()


def prepare_images(
    images: Sequence[np.ndarray], size: tuple[int, int], mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """RGB uint8 images of any sizes → ``(B, 3, H, W)`` at ``size`` (H, W), area-resized and
    normalised: what every model sees at inference (and what cached embeddings are made of)."""
    h, w = size
    batch = np.stack([cv2.resize(im, (w, h), interpolation=cv2.INTER_AREA) for im in images])
    return normalize(batch, mean, std)


class ArraySegmentationDataset(Dataset):
    """Samples ``{"image", "mask", "id"}`` from in-memory arrays, augmented on the fly."""

    def __init__(
        self,
        images: np.ndarray,
        masks: np.ndarray,
        ids: list[str],
        mean: Sequence[float],
        std: Sequence[float],
        transform: A.Compose | None = None,
    ) -> None:
        self.images, self.masks, self.ids = images, masks, ids
        self.mean, self.std, self.transform = tuple(mean), tuple(std), transform

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, item: int | tuple[int, int]) -> dict:
        """``item``: an index, or ``(index, augmentation seed)`` from :class:`EpochShuffle`."""
        i, seed = item if isinstance(item, tuple) else (item, None)
        image, mask = self.images[i], self.masks[i]
        if self.transform is not None:
            out = augment(self.transform, seed, image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        return {
            "image": normalize(image, self.mean, self.std),
            "mask": torch.from_numpy(np.ascontiguousarray(mask)).float()[None],
            "id": self.ids[i],
        }


class EpochShuffle(Sampler):
    """Shuffle with a generator seeded by ``(seed, epoch)`` and give every sample its own
    augmentation seed from the same generator: an epoch's batches and augmentations depend on
    nothing else — not on worker count, not on what ran before — so a run resumed at an epoch
    replays it exactly. Lightning calls :meth:`set_epoch` before each epoch."""

    def __init__(self, size: int, seed: int = 0) -> None:
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.size, generator=g).tolist()
        seeds = torch.randint(2**31, (self.size,), generator=g).tolist()
        return iter(zip(order, seeds, strict=True))


def _load(
    sources: Sequence[DataSource], size: int, cache_dir: str | None, labels: str
) -> list[tuple]:
    loaded = []
    for s in sources:
        pairs = find_pairs(s.path, s.layout, s.split)
        images, masks = load_resized_pairs(pairs, size, cache_dir, labels)
        loaded.append((Path(s.path).name, images, masks, [p.id for p in pairs]))
    return loaded


class SegmentationDataModule(L.LightningDataModule):
    """Train on the union of ``train`` sources; validate on each ``val`` source separately."""

    def __init__(
        self,
        train: Sequence[DataSource],
        val: Sequence[DataSource] = (),
        image_size: int = 256,
        augment: str = "polyp",
        batch_size: int = 16,
        num_workers: int = 0,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
        cache_dir: str | None = None,
        labels: str = "binary",
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.seed = seed
        self.labels = labels
        self.train_sources, self.val_sources = list(train), list(val)
        self.image_size, self.augment = image_size, augment
        self.batch_size, self.num_workers = batch_size, num_workers
        self.mean, self.std, self.cache_dir = tuple(mean), tuple(std), cache_dir
        self.val_names: list[str] = []

    def setup(self, stage: str | None = None) -> None:
        if hasattr(self, "train_set"):
            return
        train = _load(self.train_sources, self.image_size, self.cache_dir, self.labels)
        self.train_set = ArraySegmentationDataset(
            np.concatenate([im for _, im, _, _ in train]),
            np.concatenate([m for _, _, m, _ in train]),
            [i for *_, ids in train for i in ids],
            self.mean,
            self.std,
            create_augmentation(self.augment),
        )
        val = _load(self.val_sources, self.image_size, self.cache_dir, self.labels)
        self.val_names = [name for name, *_ in val]
        self.val_sets = [
            ArraySegmentationDataset(im, m, ids, self.mean, self.std) for _, im, m, ids in val
        ]

    def _loader(self, ds: Dataset, shuffle: bool) -> DataLoader:
        # several processes: Lightning's DistributedSampler shuffles by (seed, epoch) itself
        distributed = self.trainer is not None and self.trainer.world_size > 1
        sampler = EpochShuffle(len(ds), self.seed) if shuffle and not distributed else None
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            drop_last=shuffle and len(ds) > self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,  # EpochShuffle hands them their seeds
            worker_init_fn=worker_init,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> list[DataLoader]:
        return [self._loader(ds, shuffle=False) for ds in self.val_sets]
