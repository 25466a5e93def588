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
    """Check a dataset folder: layout, pairs and problems.

    Reports the layout found, the number of image/mask pairs and every problem (exit 1 if any).
    """
    from colonseg.data.check import run_check

    report = run_check(path, layout, split)
    typer.echo(f"{path}: layout {report['layout']}, {report['n_pairs']} pairs")
    for problem in report["problems"]:
        typer.echo(f"problem: {problem}")
    if report["problems"]:
        raise typer.Exit(1)
