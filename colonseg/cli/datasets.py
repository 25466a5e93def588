"""``colonseg datasets``: inspect dataset folders and make their cross-validation splits."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from colonseg.cli.options import friendly

__all__ = ["datasets_app"]

datasets_app = typer.Typer(
    no_args_is_help=True, rich_markup_mode=None, help="Inspect and split dataset folders."
)


@datasets_app.command("check")
@friendly
def datasets_check(
    path: Annotated[Path, typer.Argument(help="Dataset folder.")],
    layout: Annotated[str, typer.Option(help="Layout name (default: detect).")] = "auto",
    split: Annotated[str | None, typer.Option(help="Split file or name.")] = None,
) -> None:
    """Check a dataset folder: layout, pairs, problems and warnings.

    Reads every image and mask as training does. Problems (exit 1): unreadable files, masks of
    an ambiguous encoding, size mismatches, missing masks, masks that are foreground everywhere,
    or every mask empty. Warnings (exit 0): single empty masks. A folder of images without masks
    is a valid unlabelled dataset ("unlabelled: N images").
    """
    from colonseg.data.check import run_check

    report = run_check(path, layout, split)
    if report["unlabelled"]:
        typer.echo(f"{path}: layout {report['layout']}, unlabelled: {report['n_pairs']} images")
    else:
        typer.echo(f"{path}: layout {report['layout']}, {report['n_pairs']} pairs")
    for warning in report["warnings"]:
        typer.echo(f"warning: {warning}")
    for problem in report["problems"]:
        typer.echo(f"problem: {problem}")
    if report["problems"]:
        raise typer.Exit(1)


@datasets_app.command("split")
@friendly
def datasets_split(
    path: Annotated[Path, typer.Argument(help="Dataset folder.")],
    folds: Annotated[int, typer.Option(help="Number of folds.")] = 5,
    val: Annotated[
        float, typer.Option(help="Share of each fold's train part held out as fold{K}_tune.")
    ] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed for equal-size groups and tune sets.")] = 0,
    groups: Annotated[
        Path | None, typer.Option(help="CSV of stem,group rows (video or patient).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Folder for the files (default: PATH/splits).")
    ] = None,
    layout: Annotated[str, typer.Option(help="Layout name (default: detect).")] = "auto",
    overwrite: Annotated[bool, typer.Option(help="Replace fold files that differ.")] = False,
    within: Annotated[
        str | None,
        typer.Option(help="Fold only this split's images (a fixed test split stays out)."),
    ] = None,
) -> None:
    """Write K-fold split files, no video in two folds.

    Files fold{K}_train.txt and fold{K}_val.txt, one stem a line. Groups (videos, patients)
    come from --groups, or from CVC-ClinicDB's ORIGINAL_README.txt table; otherwise every frame
    is its own group (a warning says so). fold{K}_val is fold K, held out (nnU-Net's
    convention); --val also writes fold{K}_tune, whole groups moved out of fold{K}_train for
    model selection. Train on a fold with `colonseg train ... data.fold=K`.
    """
    from colonseg.data.splits import run_split

    r = run_split(path, folds, val, seed, groups, out, layout, overwrite, within)
    if r["groups_from"]:
        typer.echo(f"{path}: {r['n_stems']} images in {r['n_groups']} groups "
                   f"(from {r['groups_from']}); {folds} folds in {r['out']}")  # fmt: skip
    else:
        typer.echo(f"{path}: {r['n_stems']} images, ungrouped; {folds} folds in {r['out']}")
        typer.echo(
            "warning: no groups (no --groups CSV, no sequence table): frames of one video may "
            "be in two folds, which flatters the scores"
        )
    for k, f in enumerate(r["folds"]):
        tune = f", tune {f['tune']}" if f["tune"] else ""
        groups = f"{f['val_groups']} group" + "s" * (f["val_groups"] != 1)
        typer.echo(f"fold {k}: train {f['train']}{tune}, val {f['val']} ({groups})")
