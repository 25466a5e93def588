"""``colonseg train``: one command for every method; the config's ``method:`` key picks it."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from colonseg.cli.options import friendly
from colonseg.config import list_configs

__all__ = ["TRAIN_HELP", "print_train_result", "train"]

SUMMARY_KEYS = ("dice", "iou", "miou", "pixel_auroc", "aupro", "image_auroc", "mdice_256")
MAX_SUMMARY_KEYS = 6

TRAIN_HELP = f"""Train a model from a YAML config (a file or a shipped name).

Example: colonseg train polyp_unet_lite0 trainer.max_epochs=5. Every method (supervised,
mapseg, medsam_box, mssg) takes the same keys: name, out_dir, seed, data.*, model.*, optim.*,
trainer.*, test.*. Add --quick for a smoke run, --print-config to see every key.

Shipped configs: {", ".join(list_configs())}.
"""


def _floats(stats: dict[str, Any]) -> list[str]:
    """Up to :data:`MAX_SUMMARY_KEYS` float metrics of one dataset, the usual ones first."""
    floats = [k for k, v in stats.items() if isinstance(v, float)]
    order = [k for k in SUMMARY_KEYS if k in floats] + [k for k in floats if k not in SUMMARY_KEYS]
    return [f"{k} {stats[k]:.4f}" for k in order[:MAX_SUMMARY_KEYS]]


def print_train_result(result: dict[str, Any]) -> None:
    """The model folder, validation metrics, test summaries and the command to evaluate the
    model (the engine prints each epoch's time). Nothing for a DDP rank other than 0."""
    if result.get("model_dir") is None:
        return
    typer.echo(f"model: {result['model_dir']}")
    val = {k: round(v, 4) for k, v in result.get("metrics", {}).items() if k.startswith("val/")}
    if val:
        typer.echo(f"val: {json.dumps(val)}")
    for name, stats in result.get("summary", {}).items():
        typer.echo(f"{name}: {', '.join(_floats(stats))}")
    if result.get("evaluate_command"):
        typer.echo(f"evaluate it with: {result['evaluate_command']}")


@friendly
def train(
    config: Annotated[
        str, typer.Argument(metavar="CONFIG", help="YAML file or shipped config name.")
    ],
    overrides: Annotated[
        list[str] | None,
        typer.Argument(metavar="KEY=VALUE", help="Overrides.", show_default=False),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from runs/<name>/checkpoints/last.ckpt.")
    ] = False,
    quick: Annotated[
        bool, typer.Option("--quick", help="Smoke run: one epoch of 2 batches, no test.")
    ] = False,
    print_config: Annotated[
        bool, typer.Option("--print-config", help="Print the resolved config and exit.")
    ] = False,
    allow_changed: Annotated[
        bool, typer.Option("--allow-changed", help="--resume even if the config changed.")
    ] = False,
    synthetic: Annotated[
        bool, typer.Option("--synthetic", help="Train on generated data (no dataset needed).")
    ] = False,
) -> None:
    from colonseg.engine.config import load_config

    cfg = load_config(config, overrides or [], quick=quick)
    if print_config:
        from omegaconf import OmegaConf

        typer.echo(OmegaConf.to_yaml(cfg))
        return
    from colonseg.engine.train import run_train

    result = run_train(cfg, resume=resume, synthetic=synthetic, allow_changed=allow_changed)
    print_train_result(result)
