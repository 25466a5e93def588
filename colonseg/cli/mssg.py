"""``colonseg mssg``: MSSG's tools that run outside training (``propose``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from colonseg.cli.options import DeviceOpt, friendly

__all__ = ["mssg_app"]

mssg_app = typer.Typer(
    no_args_is_help=True, rich_markup_mode=None, help="MSSG: unsupervised gland segmentation."
)


@mssg_app.command("propose")
@friendly
def mssg_propose(
    data: Annotated[Path, typer.Argument(help="Folder of histology images (or a dataset).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output (and cache) folder.")],
    split: Annotated[
        str | None, typer.Option(help="Split of a dataset (GlaS: train, testA, testB, test).")
    ] = None,
    layout: Annotated[str, typer.Option(help="Dataset layout (default: detect).")] = "auto",
    scale: Annotated[float, typer.Option(help="Working scale (paper: 1).")] = 0.5,
    channels: Annotated[int, typer.Option(help="Clustering channels (paper: 128).")] = 32,
    iterations: Annotated[int, typer.Option(help="Iterations per image (paper: 50).")] = 50,
    clusters: Annotated[int, typer.Option(help="k-means clusters (paper: 5).")] = 5,
    refine: Annotated[
        str, typer.Option(help="Refine each gland's box with: litemedsam, medsam_vit_b, none.")
    ] = "litemedsam",
    checkpoint: Annotated[
        Path | None, typer.Option(help="medsam_vit_b.pth for --refine medsam_vit_b.")
    ] = None,
    device: DeviceOpt = "auto",
) -> None:
    """SPM gland proposals for every image.

    Writes proposals/ (0 background, 1 border, 2 interior), overlays/ to look at, clusters/,
    argmax/, and their MedSAM refinement in refined-<settings>/ (proposals/, overlays/). Reruns
    skip images already done.
    """
    from colonseg.methods.mssg.refine import RefineSettings, run_propose_folder
    from colonseg.methods.mssg.spm import SpmSettings

    settings = SpmSettings(scale=scale, channels=channels, iterations=iterations, clusters=clusters)
    refining = RefineSettings(refine, str(checkpoint) if checkpoint else None)
    result = run_propose_folder(data, out, settings, refining, split, layout, device)
    spm = result["propose"]
    typer.echo(
        f"{result['images']} images: {spm['computed']} computed "
        f"({spm['seconds_per_image']:.1f} s each), {spm['cached']} cached → {out}/overlays"
    )
    if result["refined"] is not None:
        done = result["refine"]
        typer.echo(
            f"{refine} refinement: {done['computed']} computed, {done['cached']} cached "
            f"→ {result['refined']}/overlays"
        )
