"""What an Automatic MedSAM run shows while it trains: ``snapshots/`` of validation images after
each epoch, ``training_history.json`` and ``loss_curves.png``; and the box-given baselines."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import lightning as L
import numpy as np
import torch

from colonseg.data.boxes import mask_boxes
from colonseg.data.io import write_atomic, write_png
from colonseg.losses.box_prior import box_region
from colonseg.methods.medsam_box.cache import EmbeddingCache
from colonseg.methods.medsam_box.data import (
    BoxSample,
    read_sample,
    read_sample_mask,
)
from colonseg.methods.medsam_box.module import GRID, box_prompted_logits, to_grid
from colonseg.metrics import binary_metrics
from colonseg.models.medsam import AutoMedSAM
from colonseg.viz.curves import epoch_table, plot_curves
from colonseg.viz.overlays import GREEN, RED, compare, heatmap

__all__ = ["TrainingViews", "evaluate_baselines", "snapshot"]


def _draw_boxes(image: np.ndarray, boxes: np.ndarray, color) -> np.ndarray:
    out = image.copy()
    for x0, y0, x1, y1 in np.round(boxes).astype(int):
        cv2.rectangle(out, (x0, y0), (x1, y1), color, 2)
    return out


def snapshot(
    image: np.ndarray, true_boxes: np.ndarray, mask: np.ndarray | None, prob: np.ndarray
) -> np.ndarray:
    """One row: image with the true box (green) and the box around the prediction (red), the true
    mask, the soft mask as a heat map, the binary mask, and the prediction over the truth."""
    pred = (prob >= 0.5).astype(np.uint8)
    boxed = _draw_boxes(_draw_boxes(image, true_boxes, GREEN), mask_boxes(pred), RED)
    gray = lambda m: np.repeat((m * 255).astype(np.uint8)[..., None], 3, axis=2)  # noqa: E731
    truth = mask if mask is not None else np.zeros_like(pred)
    panels = [boxed, gray(truth), heatmap(image, prob), gray(pred), compare(image, pred, truth)]
    if mask is not None:
        dice = 2 * (pred & truth).sum() / max(int(pred.sum() + truth.sum()), 1)
        cv2.putText(panels[-1], f"Dice {dice:.3f}", (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7,
                    (255, 255, 255), 2)  # fmt: skip
    return np.concatenate(panels, axis=1)


class TrainingViews(L.Callback):
    """After each epoch (rank 0): ``snapshots/epoch_NNN.png`` of ``samples`` decoded from their
    cached embeddings, ``training_history.json`` and ``loss_curves.png``."""

    def __init__(self, run_dir: Path, cache: EmbeddingCache, samples: list[BoxSample]) -> None:
        self.run_dir, self.cache, self.samples = run_dir, cache, samples

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not trainer.is_global_zero or not self.samples:
            return
        rows = [self._row(module.net, s, module.device) for s in self.samples]
        name = f"epoch_{trainer.current_epoch + 1:03d}.png"
        write_png(self.run_dir / "snapshots" / name, np.concatenate(rows, 0))

    def _row(self, net: AutoMedSAM, s: BoxSample, device) -> np.ndarray:
        image, mask = read_sample(s)
        small = cv2.resize(image, (GRID, GRID), interpolation=cv2.INTER_AREA)
        if mask is not None:
            mask = cv2.resize(mask, (GRID, GRID), interpolation=cv2.INTER_NEAREST)
        scale = np.array([GRID / image.shape[1], GRID / image.shape[0]] * 2, np.float32)
        with torch.no_grad():  # the cached embedding: no encoder pass
            emb = self.cache.load(s)[None].float().to(device)
            prob = net.decode(emb).float().sigmoid()[0, 0].cpu().numpy()
        return snapshot(small, s.boxes * scale, mask, prob)

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.current_epoch > 0:  # the previous epoch's logs are written by now
            self._history(trainer)

    def on_fit_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._history(trainer)

    def _history(self, trainer: L.Trainer) -> None:
        if not trainer.is_global_zero:
            return
        csv_path = self.run_dir / "logs" / "metrics.csv"
        if trainer.logger is not None:
            trainer.logger.save()
        if csv_path.is_file():
            history = [{"epoch": e + 1, **row} for e, row in epoch_table(csv_path).items()]
            text = json.dumps(history, indent=2)
            write_atomic(self.run_dir / "training_history.json", lambda tmp: tmp.write_text(text))
            plot_curves(csv_path, self.run_dir / "loss_curves.png", ("loss", "box_iou", "dice"))


def evaluate_baselines(
    net: AutoMedSAM, cache: EmbeddingCache, samples: list[BoxSample], device: str
) -> dict:
    """Dice/IoU/precision/recall at full resolution of two box-given references: SAM prompted
    with the true boxes (``box_prompt``, the upper bound) and the boxes filled (``box_as_mask``)."""
    rows: dict[str, list[dict]] = {"box_prompt": [], "box_as_mask": []}
    for s in samples:
        mask = read_sample_mask(s)
        if mask is None:
            continue
        h, w = mask.shape
        grid = torch.from_numpy(to_grid(s.boxes, (h, w)))
        with torch.no_grad():
            emb = cache.load(s)[None].float().to(device)
            logits = box_prompted_logits(net, emb, [grid])[0, 0].float().cpu().numpy()
        prob = cv2.resize(logits, (w, h), interpolation=cv2.INTER_LINEAR)
        rows["box_prompt"].append(binary_metrics((prob > 0).astype(np.uint8), mask))
        filled = box_region([torch.from_numpy(s.boxes)], h, w)[0, 0].numpy().astype(np.uint8)
        rows["box_as_mask"].append(binary_metrics(filled, mask))
    keys = ("dice", "iou", "precision", "recall")
    return {
        name: {"n": len(r), **{k: float(np.nanmean([x[k] for x in r])) for k in keys}}
        for name, r in rows.items()
        if r
    }
