"""What the ``colonseg`` commands share: option types, the error wrapper, the config names.

Nothing here imports torch; commands import what they need inside their bodies, so ``--help``
stays fast.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from colonseg.errors import ColonsegError

__all__ = [
    "BackendOpt",
    "DeviceOpt",
    "ModelOpt",
    "OutOpt",
    "PostOpt",
    "GraphOpt",
    "PrecisionOpt",
    "SizeOpt",
    "TTAOpt",
    "ThresholdOpt",
    "SamCheckpointOpt",
    "WeightsOpt",
    "fail",
    "friendly",
]


def fail(message: str) -> None:
    """One line on stderr, exit code 2."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn user-input errors into one line on stderr and exit code 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ColonsegError, FileNotFoundError) as exc:
            fail(str(exc))

    return wrapper


OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output folder.")]
ModelOpt = Annotated[
    str, typer.Option("--model", "-m", help="Zoo name, checkpoint folder or .onnx file.")
]
BackendOpt = Annotated[
    str, typer.Option(help="torch, or onnx (onnxruntime on the CPU; exported once, cached).")
]
WeightsOpt = Annotated[
    Path | None, typer.Option(help="Other weights: .safetensors, .pth or .ckpt.")
]
SamCheckpointOpt = Annotated[
    Path | None,
    typer.Option(
        help="Your medsam_vit_b.pth, for an Automatic MedSAM model built on it (a path stored "
        "in a checkpoint is never opened)."
    ),
]
TTAOpt = Annotated[
    str | None,
    typer.Option(
        "--tta",
        help="Test-time augmentation: none, flip (2 passes) or d4 (8 views: flips and quarter "
        "turns). Default: the model's own setting.",
        show_default=False,
    ),
]
SizeOpt = Annotated[int | None, typer.Option(help="Override the model's input size.")]
DeviceOpt = Annotated[str, typer.Option(help="cpu, cuda or auto.")]
ThresholdOpt = Annotated[float | None, typer.Option(help="Override the model's threshold.")]
GraphOpt = Annotated[
    str,
    typer.Option(
        help="eager; frozen: on the CPU, run the model as a TorchScript graph traced on the first "
        "batch (~1.5 s once, then 20-30 % faster; equal up to bf16 rounding); auto: frozen after "
        "8 batches (videos, large folders)."
    ),
]
PrecisionOpt = Annotated[
    str, typer.Option(help="fp32, bf16 or auto (bf16 where the hardware runs it natively).")
]
PostOpt = Annotated[
    str | None,
    typer.Option(
        "--postprocess",
        help="Post-processing steps, e.g. 'fill_holes,min_area=0.001,class_vote'; 'none' for "
        "none; default: the checkpoint's. Steps: smooth[=sigma], fov, otsu[=floor], close=K, "
        "morphology, fill_holes, min_area=F, keep_largest, class_vote.",
    ),
]
