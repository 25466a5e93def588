"""Training data for MSG: histology images with their SPM proposal maps (no annotation read).

Images and proposals are held in memory (GlaS train: 85 images, ~100 MB) and cropped: a random
crop of ``crop_scale`` of the image area, resized to the model's input size, flipped and
stain-jittered (hue, saturation, brightness, contrast), so each epoch sees other parts of each
gland at slightly other scales. Validation images are resized whole, as the Predictor does. With
``unsure_radius`` > 0 the background a gland encloses once its gaps are closed is marked
``UNSURE`` (:func:`~colonseg.methods.mssg.spm.mark_unsure`) and left unsupervised.
"""

from __future__ import annotations

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset

from colonseg.data.io import read_image
from colonseg.data.layouts import Pair
from colonseg.data.transforms import augment
from colonseg.errors import ColonsegError
from colonseg.methods.mssg.propose import read_proposal
from colonseg.methods.mssg.spm import mark_unsure

__all__ = ["ProposalImages"]


class ProposalImages(Dataset):
    """``{"image": (3, H, W) float, "proposal": (H, W) long in {0, 1, 2, UNSURE}, "id": str}``."""

    def __init__(
        self,
        pairs: list[Pair],
        proposal_dir: str,
        size: tuple[int, int],
        mean: tuple[float, ...],
        std: tuple[float, ...],
        train: bool = True,
        crop_scale: tuple[float, float] = (0.4, 1.0),
        unsure_radius: float = 0.0,
    ) -> None:
        self.ids = [p.id for p in pairs]
        self.images = [read_image(p.image) for p in pairs]
        self.proposals = [mark_unsure(read_proposal(proposal_dir, p.id), unsure_radius)
                          for p in pairs]  # fmt: skip
        for pair, img, prop in zip(pairs, self.images, self.proposals, strict=True):
            if img.shape[:2] != prop.shape:
                raise ColonsegError(
                    f"{pair.image}: its proposal is {prop.shape[1]}x{prop.shape[0]}, the image "
                    f"{img.shape[1]}x{img.shape[0]} (stale proposal folder?)"
                )
        h, w = size
        aspect = w / h
        if train:
            self.transform = A.Compose(
                [
                    A.RandomResizedCrop(
                        size=(h, w), scale=tuple(crop_scale), ratio=(aspect / 1.2, aspect * 1.2)
                    ),
                    A.HorizontalFlip(),
                    A.VerticalFlip(),
                    A.HueSaturationValue(8, 20, 10, p=0.5),
                    A.RandomBrightnessContrast(0.15, 0.15, p=0.5),
                    A.GaussianBlur(sigma_limit=(0.3, 1.0), p=0.1),
                ]
            )
        else:
            self.transform = A.Compose([A.Resize(h, w)])
        self.mean = np.asarray(mean, np.float32) * 255
        self.std = np.asarray(std, np.float32) * 255

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        out = augment(self.transform, image=self.images[i], mask=self.proposals[i])
        image = (out["image"].astype(np.float32) - self.mean) / self.std
        return {
            "image": torch.from_numpy(image.transpose(2, 0, 1).copy()),
            "proposal": torch.from_numpy(out["mask"].astype(np.int64)),
            "id": self.ids[i],
        }
