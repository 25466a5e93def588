"""LightningModule for fully supervised segmentation: binary masks or multi-class class maps.

Validation logs ``val/dice`` (per-image Dice of polyp vs background, classes merged; ``dice_seg``
for multi-class models) and, for multi-class models, ``val/dice_<class key>`` pooled over the
epoch (e.g. ``val/dice_neo``, ``val/dice_non``).
"""

from __future__ import annotations

import math
import time

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from colonseg.data.labels import decide
from colonseg.errors import ColonsegError
from colonseg.losses import DeepSupervisionLoss, create_loss
from colonseg.metrics.batch import batch_confusion, class_counts, dice_per_image

__all__ = ["SupervisedModule"]


class SupervisedModule(L.LightningModule):
    """Trains ``net`` on ``{"image", "mask"}`` batches; logs ``train/loss``, ``val/dice`` etc.

    ``deep_supervision``: ``True`` applies the loss (any of them, ``ce_dice`` for several
    classes too) to every output of ``net.forward_with_aux``; ``"auto"``: when ``net`` has it.

    Example:
        >>> module = SupervisedModule(create_model("unet"), loss="bce_dice")
        >>> create_trainer(cfg, run_dir).fit(module, datamodule)   # colonseg.engine.trainer
    """

    def __init__(
        self,
        net: nn.Module,
        loss: str = "bce_dice",
        optimizer: str = "adamw",
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        scheduler: str = "cosine",
        warmup_steps: int = 0,
        encoder_lr_scale: float = 1.0,
        gamma: float = 0.6,
        step_epochs: int = 5,
        threshold: float = 0.5,
        channels_last: bool = True,
        val_names: list[str] | None = None,
        deep_supervision: bool | str = False,
        deep_supervision_weights: list[float] | None = None,
        train_scales: list[float] | None = None,
        train_scale_mode: str = "all",
        classes: int = 1,
        class_keys: list[str] | None = None,
        class_weights: list[float] | None = None,
    ) -> None:
        super().__init__()
        if deep_supervision == "auto":  # resolved first, so the saved hparams say what was done
            deep_supervision = hasattr(net, "forward_with_aux")
        self.save_hyperparameters(ignore=["net"])
        self.net = net.to(memory_format=torch.channels_last) if channels_last else net
        if class_weights is not None and loss != "ce_dice":
            raise ColonsegError(f"loss.class_weights: only ce_dice weighs classes, not {loss}")
        weights = {} if class_weights is None else {"class_weights": list(class_weights)}
        self.criterion = create_loss(loss, classes=classes, **weights)
        if deep_supervision and not hasattr(net, "forward_with_aux"):
            raise ColonsegError(
                f"{net.__class__.__name__} has no auxiliary outputs: set deep_supervision=false"
            )
        self.ds_loss = (
            DeepSupervisionLoss(self.criterion, deep_supervision_weights)
            if deep_supervision
            else None
        )
        self.train_scales = list(train_scales or [1.0])
        if encoder_lr_scale != 1.0 and not hasattr(net, "encoder"):
            raise ColonsegError(
                f"optim.encoder_lr_scale: {net.__class__.__name__} has no pretrained encoder"
            )
        if not 0.0 <= encoder_lr_scale <= 1.0:
            raise ColonsegError(
                f"optim.encoder_lr_scale: a factor in [0, 1], not {encoder_lr_scale}"
            )
        if train_scale_mode not in ("all", "one"):
            raise ColonsegError(f"data.train_scale_mode: all or one, not {train_scale_mode!r}")
        self._val_counts: dict[int, list[torch.Tensor]] = {}
        self._val_class_counts: list[torch.Tensor] = []
        self._train_counts: list[torch.Tensor] = []
        self._val_loss: list[tuple[float, int]] = []

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self._prep(x))

    def _loss(self, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training loss (deep supervision when enabled) and the main logits."""
        if self.ds_loss is None:
            logits = self(images).float()
            return self.criterion(logits, masks), logits
        outputs = [o.float() for o in self.net.forward_with_aux(self._prep(images))]
        return self.ds_loss(outputs, masks), outputs[0]

    def on_fit_start(self) -> None:
        self._t0 = time.perf_counter() - getattr(self, "_elapsed_before", 0.0)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["elapsed_s"] = time.perf_counter() - getattr(self, "_t0", time.perf_counter())

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._elapsed_before = float(checkpoint.get("elapsed_s", 0.0))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        images, masks = batch["image"], batch["mask"]
        losses, logits = [], None
        scales = self.train_scales  # PraNet's multi-scale training: every batch at each scale
        if self.hparams.train_scale_mode == "one":  # or one drawn per batch (the seeded RNG)
            scales = [scales[int(torch.randint(len(scales), ()))]]
        for scale in scales:
            if scale == 1.0:
                loss, logits = self._loss(images, masks)
            else:
                size = [max(32, round(d * scale / 32) * 32) for d in images.shape[-2:]]
                if self.hparams.classes == 1:
                    scaled = F.interpolate(
                        masks.float(), size, mode="bilinear", align_corners=False
                    )
                else:  # class indices must not be blended
                    scaled = F.interpolate(masks.float(), size, mode="nearest")
                loss, _ = self._loss(
                    F.interpolate(images, size=size, mode="bilinear", align_corners=False), scaled
                )
            losses.append(loss)
        loss = torch.stack(losses).mean()
        if logits is None:  # no unit scale: score the batch at its own size
            with torch.no_grad():
                logits = self(images).float()
        self.log(
            "train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(logits)
        )
        fg, _ = self._decide(logits.detach())
        self._train_counts.append(batch_confusion(fg, (masks > 0).float(), self.hparams.threshold))
        return loss

    def _decide(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits → polyp probability ``(B, 1, H, W)`` and class map ``(B, H, W)``."""
        probs = logits.sigmoid() if self.hparams.classes == 1 else logits.softmax(1)
        fg, classes = decide(probs, self.hparams.threshold)
        return fg[:, None], classes

    def on_train_epoch_end(self) -> None:
        if self._train_counts:
            self._log_counts("train", torch.cat(self._train_counts))
        self._train_counts = []

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        logits = self(batch["image"]).float()
        loss = self.criterion(logits, batch["mask"])
        self._val_loss.append((float(loss) * len(logits), len(logits)))
        fg, classes = self._decide(logits)
        target = batch["mask"]
        counts = batch_confusion(fg, (target > 0).float(), self.hparams.threshold)
        self._val_counts.setdefault(dataloader_idx, []).append(counts)
        if self.hparams.classes > 1:
            self._val_class_counts.append(
                class_counts(classes, target[:, 0].round().to(torch.uint8), self.hparams.classes)
            )

    def on_validation_epoch_end(self) -> None:
        names = self.hparams.val_names or []
        all_counts = []
        for idx, parts in sorted(self._val_counts.items()):
            counts = torch.cat(parts)
            all_counts.append(counts)
            if len(self._val_counts) > 1 and idx < len(names):
                dice = dice_per_image(self._gathered(counts)).mean().float()
                self.log(f"val/dice_{names[idx]}", dice)
        if all_counts:
            self._log_counts("val", torch.cat(all_counts))
        if hasattr(self, "_t0"):  # wall-clock minutes of training so far, for time-to-Dice curves
            self.log("time/minutes", (time.perf_counter() - self._t0) / 60.0, sync_dist=True)
        if self._val_loss:
            total, n = map(sum, zip(*self._val_loss, strict=True))
            self.log("val/loss", total / max(n, 1), sync_dist=True)
        if self._val_class_counts:  # pooled over the epoch, as NeoUNet reports dice_neo/dice_non
            tp, fp, fn = self._gathered(torch.stack(self._val_class_counts)).sum(0).unbind(1)
            dice = 2 * tp / (2 * tp + fp + fn).clamp(min=1)
            keys = self.hparams.class_keys or [str(c) for c in range(1, self.hparams.classes)]
            for key, value in zip(keys, dice, strict=True):
                self.log(f"val/dice_{key}", value.float())
        self._val_counts, self._val_loss, self._val_class_counts = {}, [], []

    def _gathered(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` (per-image rows) from every DDP process, so each logs the whole epoch's
        metrics (the samplers give every process the same number of images)."""
        if self.trainer.world_size == 1:
            return t
        return self.all_gather(t).reshape(-1, *t.shape[1:])

    def _log_counts(self, stage: str, c: torch.Tensor) -> None:
        c = self._gathered(c)
        tp, fp, fn, tn = c.sum(0)
        dice = dice_per_image(c).mean()
        acc = (tp + tn) / c.sum().clamp(min=1)
        f1 = 2 * tp / (2 * tp + fp + fn).clamp(min=1)  # pooled over the epoch
        self.log(f"{stage}/dice", dice.float(), prog_bar=stage == "val")
        self.log(f"{stage}/accuracy", acc.float())
        self.log(f"{stage}/f1", f1.float())

    def _param_groups(self) -> list[dict]:
        """One group, or with ``encoder_lr_scale`` the pretrained encoder at ``lr × scale``
        and the rest at ``lr`` (discriminative fine-tuning: ImageNet features move less)."""
        trainable = [p for p in self.parameters() if p.requires_grad]
        scale = self.hparams.encoder_lr_scale
        if scale == 1.0:
            return [{"params": trainable}]
        in_encoder = {id(p) for p in self.net.encoder.parameters()}
        encoder = [p for p in trainable if id(p) in in_encoder]
        rest = [p for p in trainable if id(p) not in in_encoder]
        return [{"params": rest}, {"params": encoder, "lr": self.hparams.lr * scale}]

    def configure_optimizers(self):
        hp = self.hparams
        params = self._param_groups()
        if hp.optimizer == "adamw":
            opt = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
        elif hp.optimizer == "adam":
            opt = torch.optim.Adam(params, lr=hp.lr, weight_decay=hp.weight_decay)
        else:
            raise ColonsegError(f"Unknown optimizer '{hp.optimizer}'. Available: adam, adamw.")
        if hp.scheduler == "none":
            return opt
        if hp.scheduler == "exponential":  # the NeoPolyp recipe: ×gamma every step_epochs epochs
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=hp.step_epochs, gamma=hp.gamma)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
        if hp.scheduler != "cosine":
            raise ColonsegError(
                f"Unknown scheduler '{hp.scheduler}'. Available: cosine, exponential, none."
            )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warm = min(hp.warmup_steps, total - 1)

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
