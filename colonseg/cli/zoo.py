"""``colonseg models``: the shipped checkpoints as a table, read from their ``config.json`` alone
(json only, no torch), so listing the zoo is instant."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["ZOO_DIR", "print_zoo", "zoo_rows"]

ZOO_DIR = Path(__file__).resolve().parents[1] / "weights"
COLUMNS = ("name", "method", "architecture", "data", "headline metrics")
_EXTRA_METRICS = {  # shown after each test set's dice, for the first test set
    "supervised": ("dice_neo", "dice_non"),
    "mapseg": ("pixel_auroc",),
    "medsam_box": (),
    "mssg": ("miou", "object_f1"),
}
_DATA_SUBFOLDERS = {"images", "frames", "train", "test"}  # a source's dataset is above these


def _members(cfg: dict) -> list[dict]:
    return cfg["init_kwargs"].get("members", []) if cfg["arch"] == "ensemble" else [cfg]


def method_of(cfg: dict) -> str:
    """The method that trained a checkpoint, from its architecture and classes."""
    arch = _members(cfg)[0]["arch"] if _members(cfg) else cfg["arch"]
    if arch == "mapseg":
        return "mapseg"
    if arch == "automedsam":
        return "medsam_box"
    return "mssg" if cfg.get("class_names") == ["gland"] else "supervised"


def architecture_of(cfg: dict) -> str:
    """``unet tf_efficientnet_lite0``; an ensemble of equal members ``2x mapseg …``."""
    if cfg["arch"] == "ensemble":
        parts = [architecture_of(m) for m in _members(cfg)]
        if len(set(parts)) == 1:
            return f"{len(parts)}x {parts[0]}"
        return " + ".join(parts)
    kw = cfg.get("init_kwargs", {})
    part = kw.get("encoder") or kw.get("backbone")
    return f"{cfg['arch']} {part}" if part else cfg["arch"]


def _dataset(path: str) -> str:
    parts = [p for p in Path(path).parts if p not in ("", ".", "..")]
    while len(parts) > 1 and parts[-1] in _DATA_SUBFOLDERS:
        parts.pop()
    return parts[-1] if parts else path


def data_of(provenance: dict, method: str) -> str:
    """What a checkpoint was trained on: datasets, split, and the labels it did without."""
    members = provenance.get("ensemble_of")
    if members:
        found = sorted({data_of(m.get("provenance", {}), method) for m in members})
        return " | ".join(found)
    train, notes = provenance.get("train"), []
    if isinstance(train, list) and train:
        names = " + ".join(dict.fromkeys(_dataset(s["path"]) for s in train))
        notes += list(dict.fromkeys(s["split"] for s in train if s.get("split")))
    elif isinstance(train, dict) and train.get("source"):
        names = _dataset(train["source"])
        notes += [train["split"]] if train.get("split") else []
        if train.get("normal_frames"):
            notes.append(f"{train['normal_frames']} normal frames")
        if train.get("images"):
            notes.append(f"{train['images']} images")
    else:
        return "-"
    refine = (provenance.get("refine") or {}).get("backbone", "none")
    notes += {
        "mapseg": ["no polyp labels"],
        "medsam_box": ["boxes only", "frozen LiteMedSAM (learnt from masks)"],
        "mssg": ["no labels"] if refine == "none" else
                ["no GlaS labels", f"{refine} refinement (learnt from masks)"],
    }.get(method, [])  # fmt: skip
    return f"{names}: {', '.join(notes)}" if notes else names


def headline_of(metrics: dict, method: str) -> list[str]:
    """Two or three numbers: dice on each test set, then the method's own measures."""
    sets = list(dict.fromkeys(k.split("/")[0] for k in metrics if "/" in k))
    shown = [f"{s} dice {metrics[f'{s}/dice']:.3f}" for s in sets if f"{s}/dice" in metrics]
    for key in _EXTRA_METRICS.get(method, ()):
        if sets and f"{sets[0]}/{key}" in metrics:
            shown.append(f"{sets[0]} {key} {metrics[f'{sets[0]}/{key}']:.3f}")
    return shown[:3]


def zoo_rows(zoo: Path = ZOO_DIR) -> list[tuple[str, str, str, str, str]]:
    """One row per shipped checkpoint, in name order: the cells of :data:`COLUMNS`."""
    rows = []
    for path in sorted(zoo.glob("*/config.json")):
        cfg = json.loads(path.read_text())
        method = method_of(cfg)
        headline = headline_of(cfg.get("metrics", {}), method)
        rows.append((
            path.parent.name,
            method,
            architecture_of(cfg),
            data_of(cfg.get("provenance", {}), method),
            "\n".join(headline) or "-",
        ))  # fmt: skip
    return rows


def print_zoo() -> None:
    """Print :func:`zoo_rows` as a table that wraps to the terminal's width."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_lines=True, collapse_padding=True)
    for title in COLUMNS:  # names are never cut; at 80 columns long words fold, never "…"
        table.add_column(title, no_wrap=title == "name", overflow="fold")
    for row in zoo_rows():
        table.add_row(*row)
    Console(highlight=False).print(table)
