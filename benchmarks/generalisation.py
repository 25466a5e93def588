"""Generalisation benchmark: a training config tested in hospitals it has never seen.

Run:
    .venv/bin/python benchmarks/generalisation.py polyp_unet_lite0 --out runs/gen/unet_lite0
    .venv/bin/python benchmarks/generalisation.py polyp_unet_lite0 data.augment=endoscope \\
        --out runs/gen/endoscope --epochs 16 [--folds kvasir,clinicdb,bkai,pranet] [--dry-run]
    .venv/bin/python benchmarks/generalisation.py --out runs/gen/endoscope \\
        --compare runs/gen/unet_lite0      # paired bootstrap: endoscope − unet_lite0
    .venv/bin/python benchmarks/generalisation.py --out runs/gen/endoscope \\
        --archive benchmarks/results/generalisation/endoscope  # per-image scores, to commit
    .venv/bin/python benchmarks/generalisation.py polyp_unet_lite0 --negatives A,B \\
        --out runs/gen/negatives_ab        # + PolypGen centres A, B normal frames as negatives

Folds (leave one dataset out over the three labelled polyp sets, plus the PraNet protocol):

    kvasir    train CVC-ClinicDB + BKAI-IGH        → test Kvasir-SEG, all frames
    clinicdb  train Kvasir-SEG + BKAI-IGH          → test CVC-ClinicDB, all frames
    bkai      train Kvasir-SEG + CVC-ClinicDB      → test BKAI-IGH, all frames
    pranet    the config's own data (PraNet train) → test BKAI-IGH, all frames

A recipe is judged on the mean over the three leave-one-out folds (``pranet`` is reported beside
it, not in it). The protocol:

- the held-out set is tested on all its frames; training uses all frames of the other two (no
  split file: splits are for in-domain benchmarks);
- no validation set (``data.val=[]``): the supervised method needs none, and the shipped configs
  select no epoch (the last one is the model). A held-out set is never seen during training, not
  even as a monitor, so configs that select an epoch (``trainer.monitor``) are refused;
- BKAI-IGH masks (red neoplastic, green non-neoplastic) are read as binary, both classes polyp
  (the colour rule of ``colonseg.data.mask_encodings``), so ``data.labels`` must be ``binary``;
- ``colonseg evaluate --threshold 0.5`` on the held-out folder; ``mdice_256`` (the PraNet mean
  over 256 thresholds) and ``dice`` (Dice at 0.5) per image, averaged, from its ``summary.json``;
  the fold then checks, by the image digests its checkpoint records, that none of the test frames
  was trained on (``seen_in_training``);
- ``normal_polyp``: the share of PolypGen's normal frames (``polypgen-normal``: 893 frames of
  polyp-free mucosa from several centres, none of them trained on) in which ``colonseg predict``
  finds a polyp (``predictions.csv``): the false alarms a model raises in hospitals it has not
  seen; skipped when that folder is missing. With ``--negatives A,B`` the normal frames of those
  PolypGen centres are added to every leave-one-out fold's training set as negatives (empty
  masks: the ``negatives`` layout), and ``normal_polyp`` counts only the other centres' frames;
- ``train_minutes``: wall-clock minutes of the ``colonseg train`` calls (start-up and data
  caching included), summed over an interrupted fold's resumed calls.

Folds are resumable: a fold with ``<out>/<fold>/eval/summary.json`` is skipped, one whose training
finished is only evaluated, one with ``checkpoints/last.ckpt`` resumes. ``<out>/<fold>`` is the
fold's ``colonseg train`` run dir; ``<out>/table.md`` and ``<out>/results.json`` are rewritten
after every fold. ``--compare OTHER_OUT`` prints, per fold and for the leave-one-out mean, the
paired bootstrap 95 % interval of the per-image ``mdice_256`` difference (this − other).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from paired_dice import bootstrap_means, paired, read_dice

from colonseg.config import resolve_alias
from colonseg.data.io import write_atomic
from colonseg.data.layouts import find_pairs
from colonseg.data.sources import DataSource
from colonseg.errors import ColonsegError

SETS = {"kvasir": "kvasir-seg", "clinicdb": "cvc-clinicdb", "bkai": "bkai-neopolyp"}
NORMAL = "polypgen-normal"  # polyp-free frames of other centres: false alarms
CENTRES = ("A", "B", "C")  # PolypGen's centres with named normal frames (centre_X__...)
LEAVE_ONE_OUT = tuple(SETS)
FOLDS = [*LEAVE_ONE_OUT, "pranet"]
FIXED = ("name", "out_dir", "data.train", "data.val")  # set by the benchmark for every fold


@dataclass
class Fold:
    """One training set → one held-out set. ``train`` empty: the config's own data."""

    name: str
    train: list[str]
    test: str

    @property
    def leave_one_out(self) -> bool:
        return bool(self.train)


def create_folds(names: list[str], data: str) -> list[Fold]:
    """The folds ``names`` over the dataset folders under ``data``."""
    folds = []
    for name in names:
        if name == "pranet":
            folds.append(Fold(name, [], f"{data}/{SETS['bkai']}"))
        else:
            train = [f"{data}/{SETS[k]}" for k in LEAVE_ONE_OUT if k != name]
            folds.append(Fold(name, train, f"{data}/{SETS[name]}"))
    return folds


def centre_prefixes(centres: list[str]) -> tuple[str, ...]:
    return tuple(f"centre_{c}__" for c in centres)


def write_negatives_split(data: str, centres: list[str], out: Path) -> Path:
    """``<out>/negatives_train.txt``: the stems of the PolypGen normal frames of ``centres``."""
    images = Path(data, NORMAL, "images")
    stems = sorted(p.stem for p in images.iterdir() if p.name.startswith(centre_prefixes(centres)))
    if not stems:
        raise SystemExit(f"error: --negatives: no normal frames of centres {centres} in {images}")
    path = out / "negatives_train.txt"
    text = "".join(f"{s}\n" for s in stems)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda tmp: tmp.write_text(text))
    return path


def train_overrides(
    fold: Fold,
    user: list[str],
    epochs: int | None,
    out: Path,
    negatives: Path | None = None,
    data: str = "",
) -> list[str]:
    """The fold's ``colonseg train`` overrides: the user's, then the fold's own (with
    ``negatives``, a split file of PolypGen normal frames, those frames as negatives)."""
    own = [f"name={fold.name}", f"out_dir={out}"]
    if fold.leave_one_out:  # all frames of each set; paths as JSON strings (valid YAML scalars)
        sources = [f"{{path: {json.dumps(p)}}}" for p in fold.train]
        if negatives is not None:
            sources.append(f"{{path: {json.dumps(f'{data}/{NORMAL}')}, layout: negatives, "
                           f"split: {json.dumps(str(negatives))}}}")  # fmt: skip
        own += [f"data.train=[{', '.join(sources)}]", "data.val=[]"]
    epochs_ = [f"trainer.max_epochs={epochs}"] if epochs is not None else []
    return [*user, *own, *epochs_, "trainer.progress_bar=false"]


def evaluate_args(fold: Fold, out: Path) -> list[str]:
    model, results = str(out / fold.name / "model"), str(out / fold.name / "eval")
    return [
        "evaluate",
        "--model",
        model,
        "--data",
        fold.test,
        "--threshold",
        "0.5",
        "--out",
        results,
    ]


def normal_args(fold: Fold, out: Path, data: str) -> list[str]:
    model, results = str(out / fold.name / "model"), str(out / fold.name / "normal")
    return ["predict", f"{data}/{NORMAL}/images", "--model", model, "--out", results]


def normal_polyp(out: Path, fold: Fold, trained: tuple[str, ...] = ()) -> float | None:
    """The share of normal frames in which the fold's model found a polyp, over the frames of
    centres not trained on (``trained``: their name prefixes); None: not run."""
    path = out / fold.name / "normal" / "predictions.csv"
    if not path.is_file():
        return None
    with path.open() as fh:
        flags = [int(row["polyp"]) for row in csv.DictReader(fh)
                 if not Path(row["file"]).name.startswith(trained)]  # fmt: skip
    return sum(flags) / len(flags) if flags else None


def shown(args: list[str]) -> str:
    return " ".join(["colonseg", *map(shlex.quote, args)])


def check_fold(config: str, overrides: list[str], fold: Fold) -> tuple[dict[str, int], int]:
    """Load and validate the fold's config (typos fail here, before any training); return its
    training sources as ``{display name: frames}`` and the number of test frames."""
    from colonseg.engine.config import load_config  # imports torch: not for --compare

    try:
        cfg = load_config(config, overrides)
        if cfg.method != "supervised" or cfg.data.labels != "binary":
            raise ColonsegError(
                f"{config}: the benchmark trains binary supervised models "
                f"(got method={cfg.method}, data.labels={cfg.data.labels})"
            )
        if fold.leave_one_out and cfg.trainer.monitor:
            raise ColonsegError(
                f"{config}: trainer.monitor={cfg.trainer.monitor} selects an "
                "epoch, and the leave-one-out folds have no validation set"
            )
        sources = [DataSource(**s) for s in cfg.data.train]
        trained_on = {s.display_name(): len(find_pairs(s.path, s.layout, s.split)) for s in sources}
        return trained_on, len(find_pairs(fold.test))
    except ColonsegError as exc:
        raise SystemExit(f"error: fold {fold.name}: {exc}") from None


def colonseg(args: list[str]) -> None:
    """Run ``colonseg ARGS`` in a fresh process (memory, GPU included, is freed between folds).

    Stopped by Ctrl-C (which reaches both processes) or SIGTERM (passed on), this one waits for
    the child to write its ``last.ckpt`` before stopping too, so that a rerun resumes the fold.
    """
    child = subprocess.Popen([sys.executable, "-m", "colonseg", *args])

    def stop(signum: int, frame: object) -> None:
        child.send_signal(signal.SIGTERM)
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        code = child.wait()
    except BaseException:
        child.wait()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    if code:
        raise SystemExit(f"error: `{shown(args)}` exited with {code} (rerun to resume)")


def seen_in_training(fold: Fold, out: Path) -> int:
    from colonseg.engine.checkpoint import ModelMeta
    from colonseg.engine.evaluate import trained_on_overlap

    model = out / fold.name / "model"
    meta = ModelMeta.from_json(json.loads((model / "config.json").read_text()), model)
    return trained_on_overlap(meta, [DataSource(fold.test)])[0]


def run_fold(
    fold: Fold,
    config: str,
    overrides: list[str],
    out: Path,
    dry_run: bool,
    data: str,
    trained: tuple[str, ...] = (),
) -> dict:
    run, train = out / fold.name, ["train", config, *overrides]
    trained_on, test_frames = check_fold(config, overrides, fold)
    print(
        f"# {fold.name}: train {' + '.join(f'{k} ({n})' for k, n in trained_on.items())}"
        f"{', no validation' if fold.leave_one_out else ''}; test "
        f"{Path(fold.test).name}, all {test_frames} frames",
        flush=True,
    )
    record_path = run / "fold.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    if record.get("command", shown(train)) != shown(train):
        raise SystemExit(
            f"error: {run} was trained by `{record['command']}`, not this command "
            "(use another --out)"
        )
    done = (run / "eval" / "summary.json").is_file()
    print(shown(train) + ("  # done" if done else ""))
    print(shown(evaluate_args(fold, out)) + ("  # done" if done else ""), flush=True)
    if Path(data, NORMAL, "images").is_dir():
        normal_done = "  # done" if normal_polyp(out, fold) is not None else ""
        print(shown(normal_args(fold, out, data)) + normal_done, flush=True)
    if dry_run:
        return {}
    if not done:
        if not (run / "metrics.json").is_file():  # run_train writes it when training ends
            resume = (run / "checkpoints" / "last.ckpt").is_file()
            minutes = record.get("train_minutes", 0.0) if resume else 0.0
            run.mkdir(parents=True, exist_ok=True)
            start = time.monotonic()
            try:
                colonseg([*train, "--resume"] if resume else train)
            finally:  # an interrupted call's minutes count when the fold resumes
                minutes += (time.monotonic() - start) / 60
                record = {"command": shown(train), "train_minutes": minutes}
                text = json.dumps(record, indent=2)
                write_atomic(record_path, lambda tmp: tmp.write_text(text))
        colonseg(evaluate_args(fold, out))
    if normal_polyp(out, fold) is None and Path(data, NORMAL, "images").is_dir():
        colonseg(normal_args(fold, out, data))
    summary = next(iter(json.loads((run / "eval" / "summary.json").read_text()).values()))
    return {
        "fold": fold.name,
        "trained_on": trained_on,
        "tested_on": Path(fold.test).name,
        "test_frames": test_frames,
        "mdice_256": summary["mdice_256"],
        "dice": summary["dice"],
        "normal_polyp": normal_polyp(out, fold, trained),
        "train_minutes": record.get("train_minutes"),
        "seen_in_training": seen_in_training(fold, out),
        "train_command": shown(train),
        "evaluate_command": shown(evaluate_args(fold, out)),
    }


def leave_one_out_mean(rows: dict[str, dict]) -> dict | None:
    """Mean over the three leave-one-out folds; None until all three are done."""
    if not all(k in rows for k in LEAVE_ONE_OUT):
        return None
    mean = {k: float(np.mean([rows[f][k] for f in LEAVE_ONE_OUT])) for k in ("mdice_256", "dice")}
    normal = [rows[f].get("normal_polyp") for f in LEAVE_ONE_OUT]
    mean["normal_polyp"] = float(np.mean(normal)) if None not in normal else None
    minutes = [rows[f]["train_minutes"] for f in LEAVE_ONE_OUT]
    mean["train_minutes"] = float(np.mean(minutes)) if None not in minutes else None
    return mean


def _row(label: str, r: dict, trained: str = "", frames: str = "", test: str = "") -> str:
    minutes = f"{r['train_minutes']:.1f}" if r.get("train_minutes") is not None else "–"
    normal = f"{r['normal_polyp']:.1%}" if r.get("normal_polyp") is not None else "–"
    return (
        f"| {label} | {trained} | {frames} | {test} | {r['mdice_256']:.3f} | "
        f"{r['dice']:.3f} | {normal} | {minutes} |"
    )


def table(rows: dict[str, dict], mean: dict | None, title: str) -> str:
    lines = [
        f"{title}",
        "",
        "| fold | trained on (all frames) | frames | tested on (all frames) | mDice256 | "
        "Dice@0.5 | normal frames called polyp | train min |",
        "|---|---|---:|---|---:|---:|---:|---:|",
    ]
    for name in [*LEAVE_ONE_OUT, "mean", "pranet"]:
        if name == "mean" and mean is not None:
            lines.append(_row("**mean, leave one out**", mean))
        elif name in rows:
            r = rows[name]
            test = f"{r['tested_on']} ({r['test_frames']})"
            total = str(sum(r["trained_on"].values()))
            lines.append(_row(name, r, " + ".join(r["trained_on"]), total, test))
    seen = {k: r["seen_in_training"] for k, r in rows.items() if r["seen_in_training"]}
    if seen:
        lines += ["", f"**Warning**: test frames found in training (by digest): {seen}"]
    lines += ["", "Commands:", ""]
    for r in rows.values():
        lines += [f"- `{r['train_command']}`", f"  `{r['evaluate_command']}`"]
    return "\n".join(lines) + "\n"


def compare(out: Path, other: Path, folds: list[str]) -> str:
    """Per fold and for the leave-one-out mean: this run's per-image mDice256 minus the other's
    on the same frames, with a paired bootstrap 95 % interval (``paired_dice.py``'s)."""
    lines = [
        f"`{out}` − `{other}`, per-image mDice256 on the held-out frames:",
        "",
        "| fold | held out | n | mDice256 | other | Δ | 95 % CI | better / worse (> 0.01) |",
        "|---|---|---:|---:|---:|---:|---|---|",
    ]
    diffs = {}
    for name in folds:
        runs = [out / name / "eval", other / name / "eval"]
        if not all((r / "per_case.csv").is_file() for r in runs):
            lines.append(f"| {name} | not evaluated in both | | | | | | |")
            continue
        (dataset, mine), (_, theirs) = (next(iter(read_dice(r, "mdice_256").items())) for r in runs)
        ids = sorted(set(mine) & set(theirs))
        a, b = np.array([theirs[i] for i in ids]), np.array([mine[i] for i in ids])
        s, diffs[name] = paired(a, b), b - a
        lines.append(
            f"| {name} | {dataset} | {len(ids)} | {b.mean():.4f} | {a.mean():.4f} | "
            f"{s['mean']:+.4f} | {s['lo']:+.4f} … {s['hi']:+.4f} | "
            f"{s['better']} / {s['worse']} |"
        )
    if all(k in diffs for k in LEAVE_ONE_OUT):  # each fold resampled on its own frames
        loo = [diffs[k] for k in LEAVE_ONE_OUT]
        boots = np.mean([bootstrap_means(d, seed=i) for i, d in enumerate(loo)], axis=0)
        lo, hi = np.percentile(boots, [2.5, 97.5])
        better = sum(int((d > 0.01).sum()) for d in loo)
        worse = sum(int((d < -0.01).sum()) for d in loo)
        delta = float(np.mean([d.mean() for d in loo]))
        lines.append(
            f"| **mean, leave one out** | | {sum(map(len, loo))} | | | **{delta:+.4f}** "
            f"| {lo:+.4f} … {hi:+.4f} | {better} / {worse} |"
        )
    return "\n".join(lines)


ARCHIVED = ("dataset", "id", "dice", "mdice_256")  # per image: what --compare and a reader need


def archive(out: Path, dest: Path, folds: list[str]) -> list[Path]:
    """Copy ``out``'s table, results and the per-image scores of each evaluated fold
    (``ARCHIVED`` columns only, a few tens of kB a fold) into ``dest``, laid out like ``out``, so
    that a later run can ``--compare`` against it after ``out`` (gitignored, on one machine) is
    gone. Returns the files written."""
    written = []
    for name in ("table.md", "results.json"):
        if (out / name).is_file():
            dest.mkdir(parents=True, exist_ok=True)
            text = (out / name).read_text()
            write_atomic(dest / name, lambda tmp, text=text: tmp.write_text(text))
            written.append(dest / name)
    for name in folds:
        source = out / name / "eval" / "per_case.csv"
        if not source.is_file():
            continue
        with source.open(newline="") as f:
            rows = [[row[k] for k in ARCHIVED] for row in csv.DictReader(f)]
        target = dest / name / "eval" / "per_case.csv"
        target.parent.mkdir(parents=True, exist_ok=True)

        def write(tmp: Path, rows=rows) -> None:
            with tmp.open("w", newline="") as f:
                csv.writer(f).writerows([ARCHIVED, *rows])

        write_atomic(target, write)
        written.append(target)
    if not written:
        raise SystemExit(f"error: --archive: nothing evaluated in {out}")
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("config", nargs="?", help="YAML file or shipped config name")
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="colonseg train overrides"
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--folds", default=",".join(FOLDS), help="comma-separated, of " + ",".join(FOLDS)
    )
    parser.add_argument("--epochs", type=int, help="trainer.max_epochs (default: the config's)")
    parser.add_argument(
        "--data",
        default=os.environ.get("COLONSEG_DATA", "../shared/datasets"),
        help="folder holding kvasir-seg/, cvc-clinicdb/, bkai-neopolyp/",
    )
    parser.add_argument(
        "--negatives",
        default="",
        metavar="CENTRES",
        help="PolypGen centres (of A,B,C) whose normal frames train as negatives, e.g. A,B",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument(
        "--compare",
        type=Path,
        metavar="OTHER_OUT",
        help="paired bootstrap of this --out against another; runs nothing",
    )
    parser.add_argument(
        "--archive",
        type=Path,
        metavar="DIR",
        help="copy this --out's tables and per-image scores into DIR (small enough to commit, "
        "and --compare reads it); runs nothing",
    )
    args = parser.parse_args(argv)
    folds = [f.strip() for f in args.folds.split(",") if f.strip()]
    unknown = [f for f in folds if f not in FOLDS]
    if unknown or not folds:
        parser.error(f"--folds: unknown {unknown}; choose from {','.join(FOLDS)}")
    if args.compare:
        print(compare(args.out, args.compare, folds))
        return
    if args.archive:
        for path in archive(args.out, args.archive, folds):
            print(path)
        return
    if args.config is None:
        parser.error("CONFIG is required (except with --compare or --archive)")
    fixed = [o for o in args.overrides if resolve_alias(o.split("=", 1)[0]) in FIXED]
    if fixed:
        parser.error(f"{', '.join(fixed)}: the benchmark sets {', '.join(FIXED)} for each fold")
    centres = [c.strip().upper() for c in args.negatives.split(",") if c.strip()]
    if set(centres) - set(CENTRES) or len(set(centres)) == len(CENTRES):
        parser.error(f"--negatives: some of {','.join(CENTRES)}, not all (got {args.negatives})")
    if centres and "pranet" in folds:
        parser.error("--negatives: the pranet fold trains on the config's own data")
    negatives = write_negatives_split(args.data, centres, args.out) if centres else None
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    rows = results.get("folds", {})
    for fold in create_folds(folds, args.data):
        overrides = train_overrides(fold, args.overrides, args.epochs, args.out, negatives,
                                    args.data)  # fmt: skip
        row = run_fold(fold, args.config, overrides, args.out, args.dry_run, args.data,
                       centre_prefixes(centres))  # fmt: skip
        if args.dry_run:
            continue
        rows[fold.name] = row
        mean = leave_one_out_mean(rows)
        results = {
            "config": args.config,
            "overrides": args.overrides,
            "epochs": args.epochs,
            "negatives": centres,
            "folds": rows,
            "mean_leave_one_out": mean,
        }
        title = f"`{args.config}` {' '.join(args.overrides)}".rstrip()
        if centres:
            title += (f" + negatives: PolypGen centres {', '.join(centres)} (normal frames "
                      "called polyp: the other centres' frames only)")  # fmt: skip
        text, md = json.dumps(results, indent=2), table(rows, mean, title)
        write_atomic(results_path, lambda tmp, text=text: tmp.write_text(text))
        write_atomic(args.out / "table.md", lambda tmp, md=md: tmp.write_text(md))
    if not args.dry_run:
        print((args.out / "table.md").read_text())


if __name__ == "__main__":
    main()
