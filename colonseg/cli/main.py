"""The ``colonseg`` command line: parse, call one ``run_*`` function, print.

Heavy modules (torch, Lightning) are imported inside the commands, so ``--help`` is instant.
The shared options are in :mod:`colonseg.cli.options`; ``train``, ``predict``/``evaluate``,
``models``, ``datasets`` and ``mssg`` live in their own modules.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from colonseg.cli.datasets import datasets_app
from colonseg.cli.mssg import mssg_app
from colonseg.cli.options import ModelOpt, WeightsOpt, fail, friendly
from colonseg.cli.predict import evaluate, predict
from colonseg.cli.train import TRAIN_HELP, train

__all__ = ["app", "main"]

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None)
app.command(help=TRAIN_HELP)(train)
app.command()(evaluate)
app.command()(predict)


def _print_version(value: bool) -> None:
    if value:
        from colonseg import __version__

        typer.echo(f"colonseg {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """Colorectal image segmentation (polyps, glands) with full, box or no labels."""


@app.command()
@friendly
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("demo_out"),
    model: ModelOpt = "default",
) -> None:
    """Run the shipped model on the bundled sample frames.

    No data or network needed: writes masks, overlays, table.md and report.html.
    """
    from colonseg.engine.demo import run_demo

    result = run_demo(out, model)
    typer.echo((out / "table.md").read_text())
    typer.echo(f"{result['n_images']} frames → {out}/overlays, report: {out / 'report.html'}")


@app.command()
@friendly
def export(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output file (.onnx).")],
    model: ModelOpt = "default",
    weights: WeightsOpt = None,
    format: Annotated[str, typer.Option("--format", help="Export format: onnx.")] = "onnx",
    quantize: Annotated[
        str | None,
        typer.Option(
            help="int8: static int8 quantisation (onnxruntime, QDQ, per-channel weights); needs "
            "--calibration.",
            show_default=False,
        ),
    ] = None,
    calibration: Annotated[
        list[str] | None,
        typer.Option(
            help="Calibration frames for --quantize: a dataset folder or a folder of images, "
            "ideally the model's training images (repeatable).",
            show_default=False,
        ),
    ] = None,
    calibration_split: Annotated[
        list[str] | None, typer.Option(help="Split file per --calibration, in order.")
    ] = None,
    calibration_images: Annotated[
        int, typer.Option(min=1, help="Calibration frames drawn (seeded) from --calibration.")
    ] = 64,
) -> None:
    """Export a model to ONNX, optionally quantised to int8.

    The graph takes any batch and image size; the checkpoint's config is embedded (and, with
    --quantize, what calibrated it).
    """
    from colonseg.data.sources import DataSource
    from colonseg.engine.onnx_backend import export_onnx

    if format != "onnx":
        fail(f"Unknown export format '{format}'. Available: onnx.")
    calibration, splits = calibration or [], calibration_split or []
    if len(splits) > len(calibration):
        fail(f"{len(splits)} --calibration-split values for {len(calibration)} --calibration")
    sources = [
        DataSource(c, splits[i] if i < len(splits) else None) for i, c in enumerate(calibration)
    ]
    path = export_onnx(model, out, weights, quantize, sources, calibration_images)
    typer.echo(
        f"{model} → {path} ({path.stat().st_size / 2**20:.1f} MiB); run it with "
        f"`colonseg predict IMAGES --model {path} --out DIR`"
    )


@app.command()
@friendly
def ensemble(
    models: Annotated[list[str], typer.Argument(help="Two or more zoo names or checkpoints.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output checkpoint folder.")],
    half: Annotated[bool, typer.Option(help="Store the weights in fp16.")] = False,
) -> None:
    """Combine checkpoints of one task into one averaging model.

    The ensemble averages its members' probabilities.
    """
    from colonseg.engine.ensemble import combine_checkpoints

    path = combine_checkpoints(models, out, half=half)
    typer.echo(
        f"{len(models)} models → {path}; evaluate it with "
        f"`colonseg evaluate --model {path} --data DATASET --out DIR`"
    )


@app.command("app", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def web_app(
    ctx: typer.Context,
    auth: Annotated[
        str | None,
        typer.Option(
            "--auth",
            metavar="TOKEN",
            envvar="COLONSEG_APP_TOKEN",
            show_envvar=True,
            help="Access token the page asks for first (for a shared server).",
        ),
    ] = None,
    max_video_frames: Annotated[
        int | None, typer.Option(min=1, help="Refuse longer videos (default 3000 frames).")
    ] = None,
    max_video_seconds: Annotated[
        float | None, typer.Option(min=1, help="Refuse longer videos (default 300 s).")
    ] = None,
    max_models: Annotated[
        int | None, typer.Option(min=1, help="Models held in memory at once (default 3).")
    ] = None,
) -> None:
    """Start the web app (Streamlit) on this machine only.

    Extra options go to Streamlit: --server.port 8600. --server.address 0.0.0.0 opens it to the
    network: add --auth TOKEN (or set COLONSEG_APP_TOKEN) so that the page asks for the token.
    The limits can also be set as COLONSEG_APP_MAX_VIDEO_FRAMES, _MAX_VIDEO_SECONDS, _MAX_MODELS.
    """
    import dataclasses

    from colonseg.app import server
    from colonseg.errors import ColonsegError

    given = {
        "token": auth,
        "max_video_frames": max_video_frames,
        "max_video_seconds": max_video_seconds,
        "max_models": max_models,
    }
    given = {k: v for k, v in given.items() if v is not None}
    try:
        settings = dataclasses.replace(server.AppSettings.from_env(os.environ), **given)
    except ColonsegError as exc:
        fail(str(exc))
    page = Path(server.__file__).with_name("page.py")
    options, warning = server.server_options(list(ctx.args), auth=settings.token is not None)
    if warning:
        typer.echo(warning, err=True)
    command = [sys.executable, "-m", "streamlit", "run", str(page), *options]
    env = {k: v for k, v in os.environ.items() if not k.startswith(server.ENV_PREFIX)}
    # the page reads its settings here: the token stays off Streamlit's command line
    os.execve(sys.executable, command, {**env, **settings.to_env()})


@app.command()
@friendly
def synth(
    frames: Annotated[Path, typer.Argument(help="Folder of normal frames.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output PNG grid.")] = Path(
        "simpo_grid.png"
    ),
    textures: Annotated[
        Path | None, typer.Option(help="Texture folder (DTD classes or MAPSeg's KTH/).")
    ] = None,
    shapes: Annotated[
        Path | None, typer.Option(help="Shape-mask folder (MAPSeg's polyp_like_mask/).")
    ] = None,
    fill: Annotated[
        list[str] | None, typer.Option(help="colon and/or texture (repeatable; default both).")
    ] = None,
    n: Annotated[int, typer.Option(min=1, help="Number of examples.")] = 12,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Write a grid of SIMPO synthetic polyps, to inspect them.

    The polyps are pasted into the given normal frames, as MAPSeg trains on them.
    """
    from colonseg.methods.mapseg.synth import run_synth

    fills = tuple(fill or (["colon", "texture"] if textures else ["colon"]))
    path = run_synth(frames, out, textures, shapes, fills, n, seed)
    typer.echo(f"{n} SIMPO examples → {path}")


@app.command()
def models() -> None:
    """List the trained checkpoints shipped in the zoo.

    One row per model: method, architecture, training data and headline metrics.
    """
    from colonseg.cli.zoo import print_zoo

    print_zoo()


app.add_typer(datasets_app, name="datasets")
app.add_typer(mssg_app, name="mssg")


def main() -> None:  # pragma: no cover - console entry for `python -m colonseg`
    app(prog_name="colonseg")
    sys.exit(0)
