"""LightningModule for MSG: a segmenter trained on SPM proposals with the grouping losses.

Loss per batch: ``BCE + Dice`` of the gland logits against the (refined) proposal, plus
``variation ·`` :func:`~colonseg.losses.grouping.variation_loss` and ``push ·``
:func:`~colonseg.losses.grouping.push_loss` on L2-normalised embeddings from a 1×1 projection of
the decoder's last features (the input of the segmentation head, so any segmentation_models_pytorch
architecture works). From epoch ``omission_start`` on, the proposal is refined by
:func:`~colonseg.losses.grouping.omission_refine` before it supervises. Pixels the proposal
marks ``UNSURE`` are neither gland nor background: no loss term sees them. The projection is used
in training only; the saved model is the plain segmenter.

Validation needs no label either: ``val/proposal_miou`` is the agreement (MSSG's mIoU) of the
prediction with the proposals of held-out training images.
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from segmentation_models_pytorch.losses import DiceLoss
from torch import nn

from colonseg.errors import ColonsegError
from colonseg.losses.grouping import omission_refine, push_loss, variation_loss
from colonseg.methods.mssg.spm import UNSURE
from colonseg.metrics import mean_iou

__all__ = ["MssgModule", "supervised_loss"]


def supervised_loss(
    logits: torch.Tensor, target: torch.Tensor, known: torch.Tensor, dice: DiceLoss
) -> torch.Tensor:
    """``BCE + Dice`` of gland logits ``(B, H, W)`` against ``target`` on the ``known`` pixels
    only (``dice`` built with ``ignore_index=UNSURE``)."""
    target = target.float()
    bce = F.binary_cross_entropy_with_logits(logits, target, known.float(), reduction="sum")
    masked = torch.where(known, target, float(UNSURE))
    return bce / known.sum().clamp(min=1) + dice(logits[:, None], masked[:, None])


class MssgModule(L.LightningModule):
    def __init__(
        self,
        net: nn.Module,
        embed_dim: int = 32,
        variation: float = 1.0,
        push: float = 1.0,
        margin: float = 1.0,
        max_pixels: int = 1000,
        omission_start: int = 3,
        omission_band: int = 7,
        omission_threshold: float = 0.7,
        lr: float = 5e-4,
        weight_decay: float = 1e-4,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net"])
        head = getattr(net, "segmentation_head", None)
        if head is None or not isinstance(head[0], nn.Conv2d):
            raise ColonsegError(
                f"MSG needs a segmentation_models_pytorch architecture (unet, unetplusplus, "
                f"deeplabv3plus, pspnet); {type(net).__name__} has no segmentation_head"
            )
        self.net = net
        self.proj = nn.Conv2d(head[0].in_channels, embed_dim, 1)
        self._features: torch.Tensor | None = None
        head.register_forward_hook(self._keep_features)
        self.dice = DiceLoss("binary", ignore_index=UNSURE)
        self._generator = torch.Generator().manual_seed(seed)
        self._val = torch.zeros(2, 2, dtype=torch.long)

    def _keep_features(self, module, inputs, output) -> None:
        self._features = inputs[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def embed(self) -> torch.Tensor:
        """Normalised embeddings of the last forward pass."""
        return F.normalize(self.proj(self._features).float(), dim=1)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        hp = self.hparams
        logits = self(batch["image"]).float()[:, 0]
        emb = self.embed()
        proposal = batch["proposal"]
        if emb.shape[-2:] != proposal.shape[-2:]:  # e.g. PSPNet: features at 1/8
            emb = F.interpolate(emb, size=proposal.shape[-2:], mode="bilinear")
        gland, known = (proposal == 1) | (proposal == 2), proposal != UNSURE
        background = known & ~gland
        target = gland
        if self.current_epoch >= hp.omission_start:
            target = omission_refine(gland, logits.sigmoid(), emb.detach(), hp.omission_band,
                                     hp.omission_threshold, background)  # fmt: skip
        seg = supervised_loss(logits, target, known, self.dice)
        var = variation_loss(emb, proposal, hp.max_pixels, self._generator)
        push = push_loss(emb, gland, hp.margin, hp.max_pixels, self._generator, background)
        loss = seg + hp.variation * var + hp.push * push
        n = len(logits)
        self.log("train/loss", loss, prog_bar=True, on_epoch=True, on_step=False, batch_size=n)
        self.log("train/seg", seg, on_epoch=True, on_step=False, batch_size=n)
        self.log("train/variation", var, on_epoch=True, on_step=False, batch_size=n)
        self.log("train/push", push, on_epoch=True, on_step=False, batch_size=n)
        added = ((target > 0) & known & ~gland).sum() / gland.numel()
        self.log("train/omission_added", added, on_epoch=True, on_step=False, batch_size=n)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        pred = (self(batch["image"]).float()[:, 0] > 0).long().cpu()
        proposal = batch["proposal"].cpu()
        known = proposal != UNSURE
        truth = ((proposal == 1) | (proposal == 2)).long()
        pairs = (truth * 2 + pred)[known]
        self._val += torch.bincount(pairs, minlength=4).reshape(2, 2)

    def on_validation_epoch_end(self) -> None:
        if self._val.sum():
            score = mean_iou(self._val.numpy())["miou"]
            self.log("val/proposal_miou", score, prog_bar=True)
        self._val = torch.zeros(2, 2, dtype=torch.long)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(
            self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, self.trainer.max_epochs))
        return {"optimizer": opt, "lr_scheduler": sched}
