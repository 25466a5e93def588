"""Phase 2 of Automatic MedSAM: train the prompt module on cached embeddings, from boxes only.

``BoxEmbeddings`` serves ``{"embedding", "boxes", "mask", "id"}`` (boxes on the 256×256 mask
grid, jittered each time when asked); ``MedsamBoxModule`` decodes the learned prompts through
the frozen mask decoder and minimises :class:`~colonseg.losses.box_prior.BoxPriorLoss`. The
model is selected by ``val/box_iou`` (the boxes around the predicted regions against the true
boxes), which needs no mask; ``val/dice`` against masks is logged for information only.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from colonseg.data.boxes import mask_boxes
from colonseg.data.cache import resize_labels
from colonseg.losses.box_prior import BoxPriorLoss, box_region
from colonseg.methods.medsam_box.cache import EmbeddingCache
from colonseg.methods.medsam_box.data import (
    BoxSample,
    jitter_boxes,
    read_sample_mask,
)
from colonseg.models.medsam import AutoMedSAM

__all__ = ["GRID", "BoxEmbeddings", "MedsamBoxModule", "collate", "to_grid"]

GRID = 256  # SAM's low-resolution mask grid


def to_grid(boxes, shape: tuple[int, int], side: int = GRID):
    """Boxes in image pixels (inclusive; a numpy array or tensor) → the pixels they cover on a
    ``side × side`` grid that stretches the image (a box over the whole image covers the whole
    grid)."""
    h, w = shape
    lib = torch if isinstance(boxes, torch.Tensor) else np
    scale = lib.asarray([side / w, side / h] * 2, dtype=lib.float32)
    one = lib.asarray([0, 0, 1, 1], dtype=lib.float32)
    if lib is torch:
        scale, one = scale.to(boxes.device), one.to(boxes.device)
    out = (boxes + one) * scale - one
    return out.clip(0, side - 1).astype(np.float32) if lib is np else out.clamp(0, side - 1)


class BoxEmbeddings(Dataset):
    """Cached embeddings of ``samples`` with their boxes (and, with ``masks``, their masks at
    the grid, for reporting Dice)."""

    def __init__(
        self,
        samples: list[BoxSample],
        cache: EmbeddingCache,
        jitter: float = 0.0,
        masks: bool = False,
        seed: int = 0,
    ) -> None:
        self.samples, self.cache, self.jitter, self.masks = samples, cache, jitter, masks
        self.rng = np.random.default_rng(seed)
        self._masks: dict[int, np.ndarray | None] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def _mask(self, i: int) -> np.ndarray | None:
        if i not in self._masks:
            mask = read_sample_mask(self.samples[i])
            self._masks[i] = None if mask is None else resize_labels(mask, (GRID, GRID))
        return self._masks[i]

    def __getitem__(self, i: int) -> dict:
        s = self.samples[i]
        boxes = jitter_boxes(s.boxes, self.jitter, s.shape, self.rng)
        item = {
            "embedding": self.cache.load(s),
            "boxes": torch.from_numpy(to_grid(boxes, s.shape)),
            "id": s.id,
        }
        mask = self._mask(i) if self.masks else None
        if mask is not None:
            item["mask"] = torch.from_numpy(mask)
        return item


def collate(items: list[dict]) -> dict:
    out = {
        "embedding": torch.stack([it["embedding"] for it in items]),
        "boxes": [it["boxes"] for it in items],
        "id": [it["id"] for it in items],
    }
    if all("mask" in it for it in items):
        out["mask"] = torch.stack([it["mask"] for it in items])[:, None].float()
    return out


def box_prompted_logits(
    net: AutoMedSAM, embedding: torch.Tensor, boxes: list[torch.Tensor]
) -> torch.Tensor:
    """SAM prompted with each true box (grid coordinates), the union over an image's boxes."""
    return net.decode_union(embedding, [b * (net.input_size / GRID) for b in boxes])


def region_box_iou(pred: torch.Tensor, boxes: list[torch.Tensor]) -> torch.Tensor:
    """Per image: IoU of the area covered by boxes around the predicted regions with the area
    covered by the true boxes (``pred (B, 1, H, W)`` binary)."""
    h, w = pred.shape[-2:]
    predicted = [torch.from_numpy(mask_boxes(p[0].cpu().numpy())) for p in pred]
    a = box_region(predicted, h, w)
    b = box_region([bx.cpu() for bx in boxes], h, w)
    inter = (a * b).flatten(1).sum(1)
    union = ((a + b) > 0).float().flatten(1).sum(1)
    return inter / union.clamp_min(1.0)


class MedsamBoxModule(L.LightningModule):
    """Trains ``net.prompt`` (the frozen SAM stays as it is) on :class:`BoxEmbeddings` batches.

    ``t_growth`` multiplies the log-barrier's ``t`` after each epoch; the learning rate drops
    ×0.1 at ``lr_drop`` of the epochs (the paper: 100 epochs, drop at 50), or with
    ``schedule="onecycle"`` follows a one-cycle schedule under AdamW. With
    ``fixed_boxes`` (no jitter) the box-prompted masks are computed once per image and kept.
    ``flip``: random flips of the cached embeddings (region prompt modules).
    """

    def __init__(
        self,
        net: AutoMedSAM,
        loss: BoxPriorLoss,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        t_growth: float = 1.1,
        lr_drop: float = 0.5,
        fixed_boxes: bool = True,
        flip: bool = False,
        schedule: str = "step",
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net", "loss"])
        self.net, self.loss = net, loss
        self._val: list[tuple[torch.Tensor, torch.Tensor | None]] = []
        self._targets: dict[str, torch.Tensor] = {}  # box-prompted masks, when boxes are fixed
        self.strict_loading = False  # the frozen SAM is not in the training checkpoint

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Keep the frozen SAM (its package's or the user's weights) out of ``last.ckpt``: a
        resumable checkpoint of the prompt module is a few MB, not the backbone's size."""
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith("net.sam.")]:
            del state[key]

    def _prompt_targets(self, emb: torch.Tensor, batch: dict) -> torch.Tensor:
        """SAM's masks from the true boxes (computed once per image unless boxes are jittered)."""
        ids = batch["id"]
        if not self.hparams.fixed_boxes or any(i not in self._targets for i in ids):
            with torch.no_grad():
                masks = (box_prompted_logits(self.net, emb, batch["boxes"]) > 0).to(torch.uint8)
            if not self.hparams.fixed_boxes:
                return masks.float()
            self._targets.update({i: m.cpu() for i, m in zip(ids, masks, strict=True)})
        return torch.stack([self._targets[i] for i in ids]).to(emb.device).float()

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.net.decode(embedding)

    def _flip(self, emb: torch.Tensor, boxes: list, target: torch.Tensor | None):
        """Random horizontal and vertical flips of embeddings, boxes and targets (``flip``;
        region prompt modules only: SAM never decodes a flipped embedding there)."""
        emb, boxes = emb.clone(), [b.clone() for b in boxes]
        target = None if target is None else target.clone()
        for i in range(len(boxes)):
            for dim, cols in ((-1, [0, 2]), (-2, [1, 3])):
                if torch.rand(()) < 0.5:
                    emb[i] = emb[i].flip(dim)
                    boxes[i][:, cols] = GRID - 1 - boxes[i][:, cols[::-1]]
                    if target is not None:
                        target[i] = target[i].flip(dim)
        return emb, boxes, target

    def _step(self, batch: dict, train: bool = False) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Logits, loss and loss parts. A region prompt module is trained on its own coarse map
        (its boxes are not differentiable): the losses see the ``64×64`` map, the boxes on that
        grid and the box-prompted masks pooled to it (soft, the share of each cell covered); the
        logits returned are still SAM's, for the validation scores."""
        emb, boxes = batch["embedding"].float(), batch["boxes"]
        w, region = self.loss.weights, self.net.prompt.mode == "region"
        target = self._prompt_targets(emb, batch) if w["prompt"] > 0 else None
        if region and train and self.hparams.flip:
            emb, boxes, target = self._flip(emb, boxes, target)
        logits = self(emb).float() if not (region and train) else None
        trained = logits
        if region:
            trained = self.net.prompt.region(emb).float()
            side = trained.shape[-1]
            boxes = [to_grid(b, (GRID, GRID), side) for b in boxes]
            target = None if target is None else F.adaptive_avg_pool2d(target, side)
        pred_box = self.net.prompt.sparse(emb) if w["box"] > 0 else None
        total, parts = self.loss(trained, boxes, target, pred_box)
        return logits, total, parts

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        _, total, parts = self._step(batch, train=True)
        n = len(batch["boxes"])
        self.log("train/loss", total, prog_bar=True, on_step=False, on_epoch=True, batch_size=n)
        for k, v in parts.items():
            self.log(f"train/{k}", v, on_step=False, on_epoch=True, batch_size=n)
        return total

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        logits, total, parts = self._step(batch)
        n = len(batch["boxes"])
        self.log("val/loss", total, on_epoch=True, batch_size=n)
        pred = (logits > 0).float()
        dice = None
        if "mask" in batch:
            m = batch["mask"]
            inter = (pred * m).flatten(1).sum(1)
            dice = (2 * inter + 1e-6) / (pred.flatten(1).sum(1) + m.flatten(1).sum(1) + 1e-6)
        self._val.append((region_box_iou(pred, batch["boxes"]), dice))

    def on_validation_epoch_end(self) -> None:
        if self._val:
            self.log("val/box_iou", torch.cat([v[0] for v in self._val]).mean(), prog_bar=True)
            dices = [v[1] for v in self._val if v[1] is not None]
            if dices:
                self.log("val/dice", torch.cat(dices).mean(), prog_bar=True)
        self._val = []

    def on_train_epoch_end(self) -> None:
        self.log("train/t", self.loss.t)
        self.loss.t *= self.hparams.t_growth

    def configure_optimizers(self):
        hp, params = self.hparams, self.net.prompt.parameters()
        epochs = max(1, int(self.trainer.max_epochs or 1))
        if hp.schedule == "onecycle":
            opt = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
            steps = int(self.trainer.estimated_stepping_batches)
            sched = torch.optim.lr_scheduler.OneCycleLR(
                opt, hp.lr, total_steps=steps, pct_start=0.1
            )
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        opt = torch.optim.Adam(params, lr=hp.lr, weight_decay=hp.weight_decay)
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, [max(1, round(epochs * hp.lr_drop))], 0.1)
        return {"optimizer": opt, "lr_scheduler": sched}
