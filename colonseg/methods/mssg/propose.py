"""``run_propose``: SPM over a folder of images, cached and resumable (with the MedSAM
refinement, :func:`colonseg.methods.mssg.refine.run_propose_folder` is what ``colonseg mssg
propose`` runs).

The output folder holds, per image id: ``proposals/<id>.png`` (values 0 background, 1 border,
2 interior: what MSG trains on), ``overlays/<id>.jpg`` (border green, interior yellow, to look
at), ``clusters/<id>.png`` (k-means cluster ids) and ``argmax/<id>.png`` (Kim & Kanezaki's own
segmentation, a baseline). ``spm.json`` records the settings and, per image, the SHA-256 of its
file: a rerun skips images whose file and settings are unchanged, so a killed run resumes.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from colonseg.data.io import file_digest, read_image, write_atomic, write_png
from colonseg.data.layouts import Pair
from colonseg.methods.mssg.spm import SpmSettings, propose
from colonseg.viz.overlays import overlay

__all__ = [
    "load_manifest",
    "proposal_overlay",
    "read_proposal",
    "run_propose",
    "settings_digest",
    "write_proposal",
]

BORDER_COLOUR, INTERIOR_COLOUR = (0, 220, 0), (255, 220, 0)
_FOLDERS = ("proposals", "clusters", "argmax", "overlays")


def proposal_overlay(image: np.ndarray, proposal: np.ndarray) -> np.ndarray:
    """The image with the border proposal in green and the interior in yellow."""
    out = overlay(image, proposal == 2, INTERIOR_COLOUR)
    return overlay(out, proposal == 1, BORDER_COLOUR)


def read_proposal(folder: str | Path, image_id: str) -> np.ndarray:
    """A proposal map ``(H, W) uint8`` in {0, 1, 2} written by :func:`run_propose`."""
    path = Path(folder) / "proposals" / f"{image_id}.png"
    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise FileNotFoundError(f"{path}: no proposal (run `colonseg mssg propose` first)")
    return arr


def write_proposal(out: Path, image_id: str, image: np.ndarray, proposal: np.ndarray) -> None:
    """``out/proposals/<id>.png`` and its overlay ``out/overlays/<id>.jpg``, each atomically."""
    write_png(out / "proposals" / f"{image_id}.png", proposal)
    picture = cv2.cvtColor(proposal_overlay(image, proposal), cv2.COLOR_RGB2BGR)
    write_atomic(
        out / "overlays" / f"{image_id}.jpg",
        lambda tmp: cv2.imwrite(str(tmp), picture, [cv2.IMWRITE_JPEG_QUALITY, 90]),
    )


def settings_digest(settings) -> str:
    """12 hex digits naming a settings dataclass: the folder suffix of what it produced."""
    key = json.dumps(asdict(settings), sort_keys=True).encode()
    return hashlib.sha256(key).hexdigest()[:12]


def load_manifest(path: Path, settings: dict) -> dict:
    """A cache manifest ``{"settings", "images"}``; empty when absent or made with other
    settings."""
    manifest = json.loads(path.read_text()) if path.is_file() else {}
    if manifest.get("settings") != settings:
        manifest = {"settings": settings, "images": {}}
    return manifest


def run_propose(
    pairs: list[Pair],
    out_dir: str | Path,
    settings: SpmSettings | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> dict:
    """Run SPM on every image of ``pairs`` not done yet (masks are never read).

    Returns:
        ``{"computed": n, "cached": m, "seconds_per_image": s}``, ``s`` the median over all
        ``pairs`` (cached ones too) of the seconds each took when it was computed: the median,
        as images computed while other work shared the CPU take several times longer.
    """
    settings = settings or SpmSettings()
    out = Path(out_dir)
    manifest_path = out / "spm.json"
    manifest = load_manifest(manifest_path, asdict(settings))
    done = manifest["images"]
    todo = []
    for pair in pairs:
        entry = done.get(pair.id)
        fresh = entry and all((out / f / f"{pair.id}.{'jpg' if f == 'overlays' else 'png'}")
                              .is_file() for f in _FOLDERS)  # fmt: skip
        if not fresh or entry["sha256"] != file_digest(pair.image):
            todo.append(pair)
    seconds = []
    for pair in tqdm(todo, desc="SPM proposals", disable=not progress or not todo):
        image = read_image(pair.image)
        start = time.perf_counter()
        result = propose(image, settings, device)
        seconds.append(time.perf_counter() - start)
        write_proposal(out, pair.id, image, result.proposal)
        write_png(out / "clusters" / f"{pair.id}.png", result.clusters)
        write_png(out / "argmax" / f"{pair.id}.png", result.argmax.astype(np.uint8))
        done[pair.id] = {
            "sha256": file_digest(pair.image),
            "seconds": round(seconds[-1], 2),
            "iterations": len(result.losses),
            "final_loss": round(result.losses[-1], 4) if result.losses else None,
        }
        text = json.dumps(manifest, indent=1)
        write_atomic(manifest_path, lambda tmp, t=text: tmp.write_text(t))
    spent = [done[p.id]["seconds"] for p in pairs if p.id in done]  # cached ones included
    return {
        "computed": len(todo),
        "cached": len(pairs) - len(todo),
        "seconds_per_image": float(np.median(spent)) if spent else 0.0,
    }
