"""LightningModule of the region refiner: CE + Dice on the refined logits.

Validation logs the refined predictions' ``val/dice`` (per-image polyp Dice, classes merged),
``val/dice_<class key>`` pooled over the epoch and their mean ``val/mdice``, and the same of the
base model's own probabilities as ``val/base_*``, so every epoch shows what refining adds.
"""

from __future__ import annotations

import lightning as L
import torch
from torch import nn

from colonseg.data.labels import decide
from colonseg.errors import ColonsegError
from colonseg.losses import create_loss
from colonseg.metrics.batch import batch_confusion, class_counts, dice_per_image

__all__ = ["RefineModule"]


class RefineModule(L.LightningModule):
    """Trains ``net`` (a :class:`~colonseg.models.refiner.RegionRefiner`) on
    ``{"image", "probs", "pooled", "mask"}`` batches.

    Example:
        >>> module = RefineModule(create_model("region_refiner", classes=3), classes=3)
        >>> create_trainer(cfg, run_dir).fit(module, datamodule)   # colonseg.engine.trainer
    """

    def __init__(
        self,
        net: nn.Module,
        classes: int = 3,
        loss: str = "ce_dice",
        optimizer: str = "adamw",
        lr: float = 2e-3,
        weight_decay: float = 1e-4,
        class_keys: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net"])
        self.net = net
        self.criterion = create_loss(loss, classes=classes)
        self._val: dict[str, list[torch.Tensor]] = {}

    def forward(self, batch: dict) -> torch.Tensor:
        return self.net(batch["image"], batch["probs"], batch["pooled"])

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.criterion(self(batch), batch["mask"])
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True,
                 batch_size=len(batch["mask"]))  # fmt: skip
        return loss

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        logits = self(batch)
        target = batch["mask"]
        n = torch.tensor([float(len(target))], device=target.device)
        self._val.setdefault("loss", []).append(self.criterion(logits, target).detach()[None] * n)
        self._val.setdefault("n", []).append(n)
        truth = target[:, 0].round().to(torch.uint8)
        for prefix, probs in (("", logits.softmax(1)), ("base_", batch["probs"].float())):
            fg, classes = decide(probs, 0.5)
            counts = batch_confusion(fg[:, None], (target > 0).float(), 0.5)
            self._val.setdefault(prefix + "fg", []).append(counts)
            per_class = class_counts(classes, truth, self.hparams.classes)[None]
            self._val.setdefault(prefix + "cls", []).append(per_class)

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        v = {k: self._gathered(torch.cat(parts)) for k, parts in self._val.items()}
        self.log("val/loss", (v["loss"].sum() / v["n"].sum()).float())
        keys = self.hparams.class_keys or [str(c) for c in range(1, self.hparams.classes)]
        for prefix in ("", "base_"):
            self.log(f"val/{prefix}dice", dice_per_image(v[prefix + "fg"]).mean().float(),
                     prog_bar=not prefix)  # fmt: skip
            tp, fp, fn = v[prefix + "cls"].sum(0).unbind(1)
            dice = 2 * tp / (2 * tp + fp + fn).clamp(min=1)
            for key, value in zip(keys, dice, strict=True):
                self.log(f"val/{prefix}dice_{key}", value.float())
            self.log(f"val/{prefix}mdice", dice.mean().float(), prog_bar=not prefix)
        self._val = {}

    def _gathered(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` (rows) from every DDP process."""
        if self.trainer.world_size == 1:
            return t
        return self.all_gather(t).reshape(-1, *t.shape[1:])

    def configure_optimizers(self):
        hp = self.hparams
        optimizers = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}
        if hp.optimizer not in optimizers:
            raise ColonsegError(f"Unknown optimizer '{hp.optimizer}'. Available: adam, adamw.")
        opt = optimizers[hp.optimizer](self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        epochs = max(1, int(self.trainer.max_epochs or 1))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
