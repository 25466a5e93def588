"""LightningModule for MAPSeg: focal + L1 on synthetic lesions, memory filled at the start."""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from colonseg.metrics.batch import batch_confusion, dice_per_image
from colonseg.models.mapseg import MemSegNet

__all__ = ["MapsegModule", "focal_loss"]


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 4.0) -> torch.Tensor:
    """Binary focal loss (Lin et al., ICCV 2017) on logits, mean over pixels."""
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = torch.exp(-bce)
    return ((1 - p_t) ** gamma * bce).mean()


class MapsegModule(L.LightningModule):
    """Trains a :class:`MemSegNet` on ``{"image", "mask"}`` batches of synthetic lesions.

    Loss: ``focal_weight * focal(γ) + l1_weight * |sigmoid(logits) - mask|`` (MemSeg: 0.4 / 0.6,
    γ = 4). ``memory_frames`` (clean normal frames, ``(N, S, S, 3)`` uint8 RGB) fill the memory
    when fitting starts, unless it is already filled (a resumed run). Validation logs
    ``val/dice`` on held-out normal frames with synthetic lesions — no real polyp is used for
    training or monitoring.
    """

    def __init__(
        self,
        net: MemSegNet,
        memory_frames: np.ndarray | None = None,
        lr: float = 3e-3,
        weight_decay: float = 5e-4,
        focal_weight: float = 0.4,
        l1_weight: float = 0.6,
        gamma: float = 4.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net", "memory_frames"])
        self.net, self.memory_frames = net, memory_frames
        self._val: list[torch.Tensor] = []

    def on_fit_start(self) -> None:
        bank = self.net.memory
        if bank is not None and not bool(bank.filled) and self.memory_frames is not None:
            self.net.fill_memory(self.memory_frames)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        logits = self(batch["image"]).float()
        mask = batch["mask"]
        hp = self.hparams
        loss = hp.focal_weight * focal_loss(logits, mask, hp.gamma) + hp.l1_weight * F.l1_loss(
            logits.sigmoid(), mask
        )
        self.log("train/loss", loss, prog_bar=True, on_epoch=True, batch_size=len(logits))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        logits = self(batch["image"]).float()
        self._val.append(batch_confusion(logits.sigmoid(), batch["mask"], 0.5))

    def on_validation_epoch_end(self) -> None:
        if self._val:
            self.log("val/dice", dice_per_image(torch.cat(self._val)).mean().float(), prog_bar=True)
        self._val = []

    def configure_optimizers(self):
        params = [p for p in self.net.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, self.hparams.lr, total_steps=total)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
