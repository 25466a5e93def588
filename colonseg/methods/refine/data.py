"""Training triples of the refiner: image, a base model's out-of-fold class probabilities, mask.

Each source's probabilities come from the base model named for it, computed once at the data's
training size and cached (``<cache_dir>/refine/probs_<key>.npz``, float16; the key covers the
model's weights, its settings and every image's digest). A base model whose recorded training
images (``trained_on``) include any image of its source is refused: its probabilities there are
in-fold — confident and right far more often than on new images — and a refiner trained on them
learns to trust the base model too much.

Example:
    >>> dm = RefineDataModule(cfg, open_model=Predictor.from_pretrained)
    >>> dm.prepare_data(); dm.setup("fit")
    >>> batch = next(iter(dm.train_dataloader()))  # image, probs, pooled, mask, id
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import Dataset

from colonseg.data.cache import default_cache_dir, load_resized_pairs
from colonseg.data.datamodule import SegmentationDataModule, normalize
from colonseg.data.io import image_digest, write_atomic
from colonseg.data.labels import get_scheme
from colonseg.data.layouts import Pair, find_pairs
from colonseg.data.sources import DataSource
from colonseg.errors import ColonsegError
from colonseg.models.refiner import region_pool

__all__ = [
    "MAX_IN_FOLD",
    "REFINER_MEAN",
    "REFINER_STD",
    "RefineDataModule",
    "RefineDataset",
    "check_out_of_fold",
]

REFINER_MEAN = (0.5, 0.5, 0.5)
REFINER_STD = (0.5, 0.5, 0.5)


MAX_IN_FOLD = 0.02  # share of a source's images a base model may have seen (duplicates)


def check_out_of_fold(
    trained_on: dict[str, list[str]], digests: Sequence[str], what: str
) -> list[int]:
    """The indices of ``digests`` that the base model trained on: a few (at most
    ``MAX_IN_FOLD``, byte-identical duplicates across the folds, as BKAI has) are returned to be
    left out; more is refused (one line naming ``what``): the wrong base model for the source."""
    seen = {d for ds in trained_on.values() for d in ds}
    overlap = [i for i, d in enumerate(digests) if d in seen]
    if len(overlap) > MAX_IN_FOLD * len(digests):
        raise ColonsegError(
            f"{what}: the base model trained on {len(overlap)} of its {len(digests)} images, so "
            "its probabilities there are not out-of-fold; name a model that did not train on them"
        )
    return overlap


class RefineDataset(Dataset):
    """Samples ``{"image", "probs", "pooled", "mask", "id"}``; with ``augment``, the same random
    flip and rot90 on all of them (region pooling is taken after it)."""

    def __init__(
        self,
        images: np.ndarray,
        probs: np.ndarray,
        masks: np.ndarray,
        ids: list[str],
        augment: bool = False,
    ) -> None:
        self.images, self.probs, self.masks, self.ids = images, probs, masks, ids
        self.augment = augment

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, item: int | tuple[int, int]) -> dict:
        i, seed = item if isinstance(item, tuple) else (item, None)
        image, probs, mask = self.images[i], self.probs[i].astype(np.float32), self.masks[i]
        if self.augment:
            rng = np.random.default_rng(seed)
            k, flip = int(rng.integers(4)), bool(rng.integers(2))
            image, mask, probs = (np.rot90(image, k), np.rot90(mask, k),
                                  np.rot90(probs, k, axes=(1, 2)))  # fmt: skip
            if flip:
                image, mask, probs = image[:, ::-1], mask[:, ::-1], probs[:, :, ::-1]
        probs = np.ascontiguousarray(probs)
        return {
            "image": normalize(image, REFINER_MEAN, REFINER_STD),
            "probs": torch.from_numpy(probs),
            "pooled": torch.from_numpy(region_pool(probs)),
            "mask": torch.from_numpy(np.ascontiguousarray(mask)).float()[None],
            "id": self.ids[i],
        }


def _model_tag(predictor: Any) -> str:
    """What identifies a base model's probabilities: its weights and the Predictor's settings."""
    h = hashlib.sha256(predictor.settings().encode())
    h.update(repr((predictor.meta.mean, predictor.meta.std)).encode())
    for name, tensor in predictor.model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _base_probs(
    predictor: Any, images: np.ndarray, digests: list[str], cache: Path, batch_size: int = 16
) -> np.ndarray:
    """The base model's class probabilities ``(N, C, S, S)`` float16 of resized ``images``."""
    key = hashlib.sha256(f"{_model_tag(predictor)}|{images.shape}|{','.join(digests)}".encode())
    path = cache / "refine" / f"probs_{key.hexdigest()[:20]}.npz"
    if path.is_file():
        with np.load(path) as z:
            return z["probs"]
    chunks = []
    for i in range(0, len(images), batch_size):
        x = predictor.preprocess(list(images[i : i + batch_size]))
        chunks.append(predictor.predict_torch(x).cpu().numpy().astype(np.float16))
    probs = np.concatenate(chunks)
    write_atomic(path, lambda tmp: np.savez(tmp, probs=probs))
    return probs


class RefineDataModule(SegmentationDataModule):
    """Train on the union of ``data.train`` (each with its own base model); validate on each
    ``data.val`` source (with ``refine.val_base``). ``open_model`` is the engine's
    ``Predictor.from_pretrained``."""

    def __init__(self, cfg: DictConfig, open_model: Callable[..., Any]) -> None:
        d = cfg.data
        super().__init__(
            train=[DataSource(**s) for s in d.train],
            val=[DataSource(**s) for s in d.val],
            image_size=d.image_size,
            batch_size=d.batch_size,
            num_workers=d.num_workers,
            mean=REFINER_MEAN,
            std=REFINER_STD,
            cache_dir=d.cache_dir,
            labels=d.labels,
            seed=cfg.seed,
        )
        self.open_model, self.tta = open_model, cfg.refine.tta
        self.train_bases = list(cfg.refine.base_models)
        self.val_base = cfg.refine.val_base
        self.classes = get_scheme(d.labels).model_channels

    def _triples(self, source: DataSource, base: str, what: str) -> tuple:
        """Images, base probabilities, masks and ids of one source (probabilities cached)."""
        pairs: list[Pair] = find_pairs(source.path, source.layout, source.split)
        digests = [image_digest(p.image) for p in pairs]
        size = self.image_size
        predictor = self.open_model(base, size=size, tta=self.tta, postprocess="none")
        meta = predictor.meta
        channels = get_scheme(meta.labels).model_channels
        if channels != self.classes:
            raise ColonsegError(
                f"{what} = {base}: a {meta.labels} model ({channels} channels); the refiner "
                f"refines {self.labels} ({self.classes} classes)"
            )
        where = f"{what} = {base} on {source.display_name()}"
        seen = check_out_of_fold(meta.trained_on, digests, where)
        if seen:  # duplicates of frames the base model trained on: left out
            print(f"warning: {where}: {len(seen)} image(s) identical to the base model's training "
                  "images left out")  # fmt: skip
            pairs = [p for i, p in enumerate(pairs) if i not in set(seen)]
            digests = [d for i, d in enumerate(digests) if i not in set(seen)]
        images, masks = load_resized_pairs(pairs, size, self.cache_dir, self.labels)
        cache = Path(self.cache_dir) if self.cache_dir else default_cache_dir()
        probs = _base_probs(predictor, images, digests, cache)
        return images, probs, masks, [p.id for p in pairs]

    def prepare_data(self) -> None:
        self.setup()

    def setup(self, stage: str | None = None) -> None:
        if hasattr(self, "train_set"):
            return
        pairs = zip(self.train_sources, self.train_bases, strict=True)
        train = [self._triples(s, b, f"refine.base_models[{i}]") for i, (s, b) in enumerate(pairs)]
        images, probs, masks, ids = (list(x) for x in zip(*train, strict=True))
        self.train_set = RefineDataset(
            np.concatenate(images), np.concatenate(probs), np.concatenate(masks),
            [i for part in ids for i in part], augment=True,
        )  # fmt: skip
        val = [self._triples(s, self.val_base, "refine.val_base") for s in self.val_sources]
        self.val_names = [s.display_name() for s in self.val_sources]
        self.val_sets = [RefineDataset(*v) for v in val]
