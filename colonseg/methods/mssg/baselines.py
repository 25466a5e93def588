"""What an MSSG run reports beside its model: the label-free baselines on the test splits (SPM
proposals, their MedSAM refinement, Kim & Kanezaki's argmax), the pseudo-masks' quality on the
training split, and snapshots. Annotations are read here to score only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from colonseg.data.io import read_image, read_instances, read_mask, write_atomic
from colonseg.data.layouts import Pair, find_pairs
from colonseg.methods.mssg.propose import proposal_overlay, read_proposal
from colonseg.methods.mssg.spm import UNSURE, mark_unsure, proposal_from_border, select_border
from colonseg.metrics import ConfusionMeter, ObjectMeter, mean_iou
from colonseg.viz.overlays import overlay

__all__ = ["baselines", "binary_scores", "write_snapshots"]


def binary_scores(pairs: list[Pair], masks: dict[str, np.ndarray]) -> dict[str, float]:
    """MSSG's mIoU, Dice and the object metrics of given gland masks against the annotations."""
    pooled, objects, dice = ConfusionMeter(2), ObjectMeter(), []
    for p in pairs:
        truth, pred = read_mask(p.mask), masks[p.id]
        pooled.update(pred, truth)
        objects.update(pred, read_instances(p.mask))
        inter, total = float((pred & truth).sum()), float(pred.sum() + truth.sum())
        dice.append(2 * inter / total if total else 1.0)
    return {"n": len(pairs), **mean_iou(pooled.matrix), "dice": float(np.mean(dice)),
            **objects.compute()}  # fmt: skip


def _argmax_glands(folder: Path, pair: Pair, hole_max: float) -> np.ndarray:
    """Kim & Kanezaki's argmax segmentation turned into glands by SPM's own border cue."""
    labels = cv2.imread(str(folder / "argmax" / f"{pair.id}.png"), cv2.IMREAD_UNCHANGED)
    gray = cv2.cvtColor(read_image(pair.image), cv2.COLOR_RGB2GRAY)
    return proposal_from_border(select_border(gray, labels), hole_max) > 0


def _unsure_report(pairs: list[Pair], folder: Path, radius: float) -> dict[str, float]:
    """How much of the training images MSG leaves unsupervised, and how much of that the
    annotation calls gland (a report: nothing is chosen by it)."""
    unsure = gland = total = 0
    for p in pairs:
        region = mark_unsure(read_proposal(folder, p.id), radius) == UNSURE
        unsure += int(region.sum())
        gland += int((region & read_mask(p.mask)).sum())
        total += region.size
    return {"fraction_of_pixels": unsure / total, "annotated_gland": gland / max(unsure, 1)}


def baselines(d: Any, folder: Path, refined: Path | None, hole_max: float) -> dict:
    """Per test split (and the training split's pseudo-masks): the baselines' scores. ``d`` is
    the config's ``data`` section; ``folder`` the SPM proposals; ``refined`` their refinement."""
    name, out = Path(d.path).resolve().name, {}
    groups = [(f"{name}:{s}", s) for s in d.test_splits]
    if d.train_split:
        groups.append((f"{name}:{d.train_split} (pseudo-masks)", d.train_split))
    for group, split in groups:
        pairs = find_pairs(d.path, d.layout, split)
        proposals = {p.id: read_proposal(folder, p.id) > 0 for p in pairs}
        out[group] = {"spm_proposals": binary_scores(pairs, proposals)}
        if refined is not None:
            glands = {p.id: read_proposal(refined, p.id) > 0 for p in pairs}
            out[group]["spm_medsam_refined"] = binary_scores(pairs, glands)
        argmax = {p.id: _argmax_glands(folder, p, hole_max) for p in pairs}
        out[group]["kim_kanezaki_argmax"] = binary_scores(pairs, argmax)
        if d.unsure_radius > 0 and split == d.train_split:  # on what MSG is supervised with
            out[group]["unsure"] = _unsure_report(pairs, refined or folder, d.unsure_radius)
    return out


def write_snapshots(predictor: Any, pairs: list[Pair], folder: Path, out: Path) -> None:
    """``out/<id>.jpg``: image | proposal | prediction, for a few held-out training images."""
    for pair in pairs:
        image = read_image(pair.image)
        proposal = read_proposal(folder, pair.id)
        pred = predictor.predict(image).mask > 0
        strip = np.concatenate([image, proposal_overlay(image, proposal), overlay(image, pred)], 1)
        write_atomic(
            out / f"{pair.id}.jpg",
            lambda tmp, s=strip: cv2.imwrite(str(tmp), cv2.cvtColor(s, cv2.COLOR_RGB2BGR)),
        )
