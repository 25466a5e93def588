"""Grouped K-fold splits: frames of one video (or patient) never on both sides of a split.

CVC-ClinicDB's 612 frames come from 29 video sequences; a random split (the PraNet split
included) puts near-identical frames of one polyp in train and test, and flatters every model.
:func:`make_folds` assigns whole groups to folds instead. The files it writes (one stem per
line, in the dataset's order) follow nnU-Net's five-fold convention:

- ``fold{K}_val.txt``: fold K, held out. Every frame is in exactly one fold's val, so the five
  val scores together cover the dataset once (cross-validation).
- ``fold{K}_train.txt``: the other folds.
- ``fold{K}_tune.txt`` (only with ``val > 0``): a share ``val`` of fold K's training frames,
  whole groups, moved out of ``fold{K}_train``: a validation set for model selection (early
  stopping, the threshold) that leaves ``fold{K}_val`` untouched, so the fold's score is not
  chosen on the data it reports. Default 0: nnU-Net's plain folds.

Groups come from, in order: a CSV of ``stem,group`` rows (``--groups``; a header row is allowed);
the frame → sequence table in CVC-ClinicDB's ``ORIGINAL_README.txt`` in the dataset root; else
none (every frame its own group), with a warning that frames of one video may cross folds.

``train`` reads the folds with ``data.fold=K`` (:func:`fold_sources`).

Example:
    >>> folds = make_folds(["1", "2", "3", "4"], {"1": "a", "2": "a", "3": "b", "4": "c"}, folds=2)
    >>> save_folds(folds, "dataset/splits")   # fold0_train.txt, fold0_val.txt, fold1_...
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from colonseg.data.io import IMAGE_EXTENSIONS, image_digest, write_atomic
from colonseg.data.layouts import find_pairs
from colonseg.data.sources import DataSource
from colonseg.errors import ColonsegError

__all__ = [
    "CLINICDB_README",
    "Fold",
    "fold_sources",
    "load_groups",
    "make_folds",
    "parse_sequence_table",
    "run_split",
    "save_folds",
]

CLINICDB_README = "ORIGINAL_README.txt"
_FOLD_FILE = re.compile(r"fold\d+_(train|val|tune)\.txt")
# "|   104 to 126    |	 6 	|": first frame, last frame, sequence (tabs and spacing vary)
_TABLE_ROW = re.compile(r"(\d+)\s*(?:to|-)\s*(\d+)\s*\|\s*(\d+)\s*\|")


@dataclass(frozen=True)
class Fold:
    """The stems of one fold: ``train``, held-out ``val``, and ``tune`` (carved from train)."""

    train: list[str]
    val: list[str]
    tune: list[str]


def make_folds(
    stems: Sequence[str],
    groups: Mapping[str, str] | None = None,
    folds: int = 5,
    val: float = 0.0,
    seed: int = 0,
) -> list[Fold]:
    """Split ``stems`` into ``folds`` grouped folds (see the module docstring).

    Groups go, largest first (equal sizes in a ``seed``-ed order), to the fold with the fewest
    frames so far, so folds differ in size by at most about one group.

    Args:
        stems: the dataset's ids, unique; each file lists them in this order.
        groups: stem → group (video, patient); None: every stem its own group.
        folds: number of folds, at least 2 and at most the number of groups.
        val: share of each fold's training frames held out as ``tune`` (whole groups), in [0, 1).
        seed: orders groups of equal size, and picks the tune groups.

    Raises:
        ColonsegError: duplicate stems, stems without a group, too few groups, a bad ``val``.
    """
    stems = list(stems)
    if len(set(stems)) != len(stems):
        raise ColonsegError("make_folds: duplicate stems")
    groups = dict(groups) if groups is not None else {s: s for s in stems}
    missing = [s for s in stems if s not in groups]
    if missing:
        raise ColonsegError(f"{len(missing)} stems have no group: {missing[:3]}")
    members: dict[str, list[str]] = {}
    for s in stems:
        members.setdefault(groups[s], []).append(s)
    if not 2 <= folds <= len(members):
        raise ColonsegError(f"folds={folds}: between 2 and the number of groups "
                            f"({len(members)} groups of {len(stems)} stems)")  # fmt: skip
    if not 0 <= val < 1:
        raise ColonsegError(f"val={val}: the tune share must be in [0, 1)")
    rng = np.random.default_rng(seed)
    names = list(members)
    order = sorted(rng.permutation(len(names)), key=lambda i: -len(members[names[i]]))
    fold_of, sizes = {}, [0] * folds
    for i in order:
        k = min(range(folds), key=lambda f: sizes[f])
        fold_of[names[i]] = k
        sizes[k] += len(members[names[i]])
    out = []
    for k in range(folds):
        held = [g for g in names if fold_of[g] == k]
        rest = [g for g in names if fold_of[g] != k]
        tune = _tune_groups(rest, members, val, np.random.default_rng([seed, k]))
        out.append(Fold(
            train=[s for s in stems if fold_of[groups[s]] != k and groups[s] not in tune],
            val=[s for s in stems if groups[s] in held],
            tune=[s for s in stems if groups[s] in tune],
        ))  # fmt: skip
    return out


def _tune_groups(
    groups: list[str], members: dict[str, list[str]], share: float, rng: np.random.Generator
) -> set[str]:
    """Groups (in a random order) whose frames come closest to ``share`` of ``groups``' frames;
    at least one when ``share > 0``, never all."""
    if share <= 0 or len(groups) < 2:
        return set()
    target = share * sum(len(members[g]) for g in groups)
    chosen: set[str] = set()
    n = 0
    for i in rng.permutation(len(groups)):
        g = groups[i]
        if len(chosen) < len(groups) - 1 and (
            not chosen or abs(n + len(members[g]) - target) < abs(n - target)
        ):
            chosen.add(g)
            n += len(members[g])
    return chosen


def save_folds(folds: list[Fold], out_dir: str | Path, overwrite: bool = False) -> list[Path]:
    """Write ``fold{K}_train.txt``, ``fold{K}_val.txt`` (and ``fold{K}_tune.txt`` when not empty)
    into ``out_dir``, atomically. Rewriting identical files is allowed; changing split files
    that runs may have used needs ``overwrite`` (which also removes fold files not rewritten).

    Raises:
        ColonsegError: fold files exist with other content and ``overwrite`` is False.
    """
    out_dir = Path(out_dir)
    texts = {}
    for k, fold in enumerate(folds):
        for part in ("train", "val", "tune"):
            stems = getattr(fold, part)
            if stems or part != "tune":
                texts[f"fold{k}_{part}.txt"] = "".join(f"{s}\n" for s in stems)
    old = [p for p in out_dir.glob("fold*_*.txt") if _FOLD_FILE.fullmatch(p.name)]
    changed = sorted(p.name for p in old if texts.get(p.name) != p.read_text())
    if changed and not overwrite:
        raise ColonsegError(
            f"{out_dir}: split files exist and differ ({', '.join(changed[:4])}); runs may use "
            "them: pass --overwrite to replace them, or --out another folder"
        )
    for p in old:
        if p.name not in texts:
            p.unlink()
    return [write_atomic(out_dir / name, lambda tmp, t=text: tmp.write_text(t))
            for name, text in texts.items()]  # fmt: skip


def parse_sequence_table(text: str) -> dict[int, str]:
    """Frame number → sequence name (``seq6``) from CVC-ClinicDB's README table, whose rows
    read ``|  104 to 126  |  6  |``. An empty dict when the text has no such table.

    Raises:
        ColonsegError: a row whose range is reversed, or frames listed in two rows.
    """
    table: dict[int, str] = {}
    for first, last, seq in _TABLE_ROW.findall(text):
        first, last = int(first), int(last)
        if first > last:
            raise ColonsegError(f"sequence table: frames {first} to {last} are reversed")
        twice = [f for f in range(first, last + 1) if f in table]
        if twice:
            raise ColonsegError(f"sequence table: frame {twice[0]} is listed twice")
        table |= dict.fromkeys(range(first, last + 1), f"seq{int(seq)}")
    return table


def load_groups(
    root: str | Path, stems: Sequence[str], groups_csv: str | Path | None = None
) -> tuple[dict[str, str] | None, str]:
    """The group of every stem, and where it came from (see the module docstring); ``(None,
    "")`` when the dataset says nothing.

    Raises:
        ColonsegError: a CSV or README that does not give every stem a group, or that names
            stems the dataset does not have.
    """
    root = Path(root)
    if groups_csv is not None:
        return _csv_groups(Path(groups_csv), stems), Path(groups_csv).name
    readme = root / CLINICDB_README
    table = parse_sequence_table(readme.read_bytes().decode("latin-1")) if readme.is_file() else {}
    if not table:
        return None, ""
    groups = {}
    for s in stems:
        if not s.isdigit() or int(s) not in table:
            raise ColonsegError(f"{readme}: frame '{s}' is not in its frame → sequence table; "
                                "pass --groups CSV (stem,group)")  # fmt: skip
        groups[s] = table[int(s)]
    return groups, f"the sequence table of {CLINICDB_README}"


def _csv_groups(path: Path, stems: Sequence[str]) -> dict[str, str]:
    if not path.is_file():
        raise ColonsegError(f"{path}: groups CSV not found")
    known = set(stems)
    with path.open(newline="", encoding="utf-8-sig") as f:
        rows = [r for r in csv.reader(f) if any(c.strip() for c in r)]
    if rows and rows[0] and _stem(rows[0][0]) not in known:
        rows = rows[1:]  # a header row
    groups: dict[str, str] = {}
    for n, row in enumerate(rows, start=1):
        if len(row) < 2 or not row[1].strip():
            raise ColonsegError(f"{path}: row {n} is not 'stem,group': {','.join(row)[:60]}")
        stem = _stem(row[0])
        if stem in groups and groups[stem] != row[1].strip():
            raise ColonsegError(f"{path}: stem '{stem}' is given two groups")
        groups[stem] = row[1].strip()
    unknown = [s for s in groups if s not in known]
    if unknown:
        raise ColonsegError(f"{path}: {len(unknown)} stems have no image in the dataset: "
                            f"{unknown[:3]}")  # fmt: skip
    missing = [s for s in stems if s not in groups]
    if missing:
        raise ColonsegError(f"{path}: {len(missing)} images have no group: {missing[:3]}")
    return groups


def _stem(name: str) -> str:
    name = name.strip()
    return Path(name).stem if Path(name).suffix.lower() in IMAGE_EXTENSIONS else name


def join_duplicates(
    stems: Sequence[str], digests: Sequence[str], groups: Mapping[str, str] | None
) -> dict[str, str] | None:
    """Merge the groups of frames whose images are byte-identical (``digests``): a duplicate on
    both sides of a split is leakage, whatever the video table says. ``None`` stays ``None``
    when no frame repeats (every frame its own group)."""
    by_digest: dict[str, list[str]] = {}
    for stem, digest in zip(stems, digests, strict=True):
        by_digest.setdefault(digest, []).append(stem)
    repeats = [same for same in by_digest.values() if len(same) > 1]
    if not repeats:
        return None if groups is None else dict(groups)
    group = dict(groups) if groups is not None else {s: s for s in stems}
    parent: dict[str, str] = {}

    def root(g: str) -> str:
        while parent.get(g, g) != g:
            g = parent[g]
        return g

    for same in repeats:
        first = root(group[same[0]])
        for stem in same[1:]:
            other = root(group[stem])
            if other != first:
                parent[other] = first
    return {s: root(g) for s, g in group.items()}


def run_split(
    path: str | Path,
    folds: int = 5,
    val: float = 0.0,
    seed: int = 0,
    groups_csv: str | Path | None = None,
    out: str | Path | None = None,
    layout: str = "auto",
    overwrite: bool = False,
    within: str | None = None,
) -> dict:
    """Make and write a dataset's folds (``colonseg datasets split``); ``within`` folds only the
    images of that split (a name or file), so that a fixed test split stays out of every fold.

    Returns:
        ``{"out", "n_stems", "n_groups", "groups_from" ("" when ungrouped), "folds": [{"train",
        "val", "tune": number of stems, "val_groups": number of groups}]}``.
    """
    root = Path(path)
    pairs = find_pairs(root, layout, split=within, require_masks=False)
    stems = [p.id for p in pairs]
    groups, source = load_groups(root, stems, groups_csv)
    groups = join_duplicates(stems, [image_digest(p.image) for p in pairs], groups)
    result = make_folds(stems, groups, folds, val, seed)
    out_dir = Path(out) if out is not None else root / "splits"
    save_folds(result, out_dir, overwrite)
    group_of = groups or {s: s for s in stems}
    return {
        "out": str(out_dir),
        "n_stems": len(stems),
        "n_groups": len(set(group_of.values())),
        "groups_from": source,
        "folds": [{"train": len(f.train), "val": len(f.val), "tune": len(f.tune),
                   "val_groups": len({group_of[s] for s in f.val})} for f in result],
    }  # fmt: skip


def fold_sources(
    train: Sequence[DataSource], val: Sequence[DataSource], fold: int
) -> tuple[list[DataSource], list[DataSource]]:
    """The sources of ``data.fold=K``: each source reads ``fold{K}_train.txt`` (train sources)
    or ``fold{K}_val.txt`` (val sources) from its dataset's ``splits/``, or from the folder its
    ``split`` names (folds written elsewhere with ``--out``). A source whose ``split`` is a file
    or a split name keeps it (an external test set). No val sources: the train sources' fold
    val.

    Raises:
        ColonsegError: a negative fold, a fold file that does not exist, or no training
            source that reads fold files (every one names its own split: the fold would be
            ignored).
    """
    if fold < 0:
        raise ColonsegError(f"data.fold={fold}: folds are numbered from 0")
    folded = [s for s in train if _fold_dir(s) is not None]
    if not folded:
        names = ", ".join(f"{s.path} (split {s.split})" for s in train)
        raise ColonsegError(
            f"data.fold={fold}: no training source reads fold files ({names}); drop their split "
            "(or make it the folder `datasets split --out` wrote)"
        )
    if not val:
        val = folded
    return ([_with_fold(s, fold, "train") for s in train],
            [_with_fold(s, fold, "val") for s in val])  # fmt: skip


def _fold_dir(source: DataSource) -> Path | None:
    """Where a source's fold files are, or None when it names its own split file."""
    root = Path(source.path)
    if source.split is None:
        return root / "splits"
    for d in (Path(source.split), root / source.split):
        if d.is_dir():
            return d
    return None


def _with_fold(source: DataSource, fold: int, part: str) -> DataSource:
    folder = _fold_dir(source)
    if folder is None:
        return source
    file = folder / f"fold{fold}_{part}.txt"
    if not file.is_file():
        raise ColonsegError(
            f"{file}: not found; data.fold={fold} reads fold files: run colonseg datasets split "
            f"{source.path} --folds 5 first"
        )
    return DataSource(source.path, str(file), source.layout, source.name)
