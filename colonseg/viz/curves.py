"""Learning curves from Lightning's ``metrics.csv``: loss, Dice, accuracy and F1 per epoch."""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path

from colonseg.data.io import write_atomic

__all__ = ["epoch_table", "plot_curves"]

_PANELS = ("loss", "dice", "accuracy", "f1")


def epoch_table(metrics_csv: str | Path) -> dict[int, dict[str, float]]:
    """Collapse Lightning's CSV rows into ``{epoch: {metric: value}}`` (last value wins)."""
    table: dict[int, dict[str, float]] = defaultdict(dict)
    with open(metrics_csv, newline="") as f:
        for row in csv.DictReader(f):
            if not row.get("epoch"):
                continue
            epoch = int(float(row["epoch"]))
            for k, v in row.items():
                if v not in ("", None) and k not in ("epoch", "step"):
                    table[epoch][k.replace("_epoch", "")] = float(v)
    return dict(sorted(table.items()))


def plot_curves(
    metrics_csv: str | Path, out_png: str | Path, panels: tuple[str, ...] = _PANELS
) -> Path:
    """Draw one panel per metric (train and val) against the epoch and write a PNG; metrics the
    run never logged get no panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = epoch_table(metrics_csv)
    logged = {key.split("/", 1)[-1] for row in table.values() for key in row}
    panels = tuple(m for m in panels if m in logged) or panels[:1]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], panels, strict=True):
        for stage, style in (("train", "-o"), ("val", "-s")):
            key = f"{stage}/{metric}"
            pts = [(e + 1, r[key]) for e, r in table.items() if key in r and math.isfinite(r[key])]
            if pts:
                ax.plot(*zip(*pts, strict=True), style, ms=3, label=stage)
        ax.set_title(metric)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    minutes = [r.get("time/minutes") for r in table.values() if "time/minutes" in r]
    if minutes:
        fig.suptitle(f"training wall time {minutes[-1]:.1f} min", fontsize=10)
    fig.tight_layout()
    write_atomic(out_png, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return Path(out_png)
