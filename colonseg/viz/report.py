"""A self-contained HTML report: per-dataset Dice histograms and best/worst cases as overlays."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import cv2
import numpy as np

from colonseg.data.io import write_atomic

__all__ = ["png_data_uri", "write_report"]


def png_data_uri(rgb: np.ndarray) -> str:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode()


def _histogram_uri(values: list[float], title: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import io

    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 2.6))
    ax.hist(values, bins=np.linspace(0, 1, 21), color="#3b7dd8", edgecolor="white")
    ax.set_xlabel("Dice per image")
    ax.set_ylabel("images")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def write_report(
    path: str | Path,
    title: str,
    summary: dict[str, dict],
    cases: dict[str, list[dict]],
    pictures: dict[str, dict[str, np.ndarray]],
    n_show: int = 3,
) -> Path:
    """Write ``report.html``.

    Args:
        summary: ``{dataset: {metric: value}}``.
        cases: ``{dataset: [{"id", "dice", ...}, ...]}``.
        pictures: ``{dataset: {case id: RGB overlay}}`` for at least the best and worst cases.
    """
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>",
        "body{font-family:sans-serif;margin:24px;color:#222}",
        "table{border-collapse:collapse;display:block;overflow-x:auto;max-width:100%;font-size:13px}",
        "td,th{border:1px solid #ccc;padding:3px 5px;text-align:right}",
        "figure{display:inline-block;margin:6px}figcaption{font-size:12px;text-align:center}",
        "</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<p>Overlays: ground truth outlined in <b style='color:#0a0'>green</b>, prediction "
        "tinted and outlined in <b style='color:#d22'>red</b>.</p>",
    ]
    for name, stats in summary.items():
        rows = sorted(cases[name], key=lambda c: c["dice"])
        parts.append(f"<h2>{html.escape(name)} (n = {stats['n']})</h2><table><tr>")
        keys = [k for k, v in stats.items() if k != "n" and isinstance(v, float | int)]
        parts.append("".join(f"<th>{html.escape(k)}</th>" for k in keys) + "</tr><tr>")
        cells = (str(stats[k]) if isinstance(stats[k], int) else f"{stats[k]:.4f}" for k in keys)
        parts.append("".join(f"<td>{c}</td>" for c in cells) + "</tr></table>")
        if "confusion" in stats:  # multi-class: rows are the truth, columns the prediction
            matrix = stats["confusion"]
            names = stats.get("confusion_classes") or [str(i) for i in range(len(matrix))]
            parts.append(
                "<p>Pixel confusion matrix (rows: truth, columns: prediction, each row "
                "sums to 1):</p><table><tr><th></th>"
                + "".join(f"<th>{html.escape(n)}</th>" for n in names)
                + "</tr>"
            )
            for i, row in enumerate(matrix):
                cells = "".join(f"<td>{v:.3f}</td>" for v in row)
                parts.append(f"<tr><th>{html.escape(names[i])}</th>{cells}</tr>")
            parts.append("</table>")
        uri = _histogram_uri([c["dice"] for c in rows], f"{name}: Dice per image")
        parts.append(f"<p><img src='{uri}' alt='Dice histogram {html.escape(name)}'></p>")
        for label, chosen in (("Worst", rows[:n_show]), ("Best", rows[::-1][:n_show])):
            parts.append(f"<h3>{label} cases</h3>")
            for c in chosen:
                pic = pictures[name].get(c["id"])
                if pic is None:
                    continue
                cap = f"{html.escape(c['id'])} · Dice {c['dice']:.3f}"
                parts.append(
                    f"<figure><img src='{png_data_uri(pic)}' alt='{html.escape(c['id'])}'>"
                    f"<figcaption>{cap}</figcaption></figure>"
                )
    parts.append("</body></html>")
    text = "\n".join(parts)
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
