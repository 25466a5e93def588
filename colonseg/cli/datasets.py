"""``colonseg datasets``: inspect dataset folders."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from colonseg.cli.options import friendly

__all__ = ["datasets_app"]

datasets_app = typer.Typer(
    no_args_is_help=True, rich_markup_mode=None, help="Inspect dataset folders."
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
