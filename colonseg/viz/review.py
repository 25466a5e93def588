"""A static review page of a prediction run: one thumbnail per image, most confident first.

The page is plain HTML with a few lines of inline script and no external resources, so it opens
from the run folder on any machine. Two buttons reorder the thumbnails: by peak probability
(most confident first, the default order, also without script) and by uncertainty (peak
probability closest to the model's threshold first, the cases a reader should look at). Peaks
saturate (many frames at 0.9999+), so equal peaks are ordered by the mean probability over the
mask, highest first.

Example:
    >>> items = [{"file": "a.jpg", "thumb": "thumbs/a.jpg", "link": "overlays/a.png",
    ...           "polyp": 1, "regions": 1, "area_percent": 4.2, "peak": 0.97}]
    >>> write_review("out/review.html", items, threshold=0.5)
"""

from __future__ import annotations

import html
from pathlib import Path
from urllib.parse import quote

import cv2
import numpy as np

from colonseg.data.io import write_atomic
from colonseg.errors import ColonsegError
from colonseg.viz.overlays import overlay_prediction, thumbnail

__all__ = ["write_review", "write_thumbnail"]

_STYLE = (
    "body{font-family:sans-serif;margin:20px;color:#222}"
    "button{margin-right:6px;padding:4px 10px}"
    "#grid{display:flex;flex-wrap:wrap;gap:8px;margin-top:12px}"
    "figure{margin:0;width:200px;font-size:12px}figure img{max-width:200px;display:block}"
    "figcaption{overflow-wrap:anywhere}.none{color:#888}"
)
_SCRIPT = (
    "function sortBy(k){const g=document.getElementById('grid');"
    "[...g.children].sort((a,b)=>a.dataset[k]-b.dataset[k]||a.dataset.tie-b.dataset.tie)"
    ".forEach(x=>g.appendChild(x));}"
)


def write_thumbnail(
    path: str | Path, image: np.ndarray, classes: np.ndarray, scheme, side: int = 192
) -> Path:
    """Write a prediction's overlay (:func:`~colonseg.viz.overlays.overlay_prediction`) at most
    ``side`` pixels wide or high as JPEG, atomically; ``classes`` is the ``(H, W)`` class map."""
    small = thumbnail(image, side)
    if small.shape[:2] != classes.shape:
        classes = cv2.resize(classes, small.shape[1::-1], interpolation=cv2.INTER_NEAREST)
    bgr = cv2.cvtColor(overlay_prediction(small, classes, scheme), cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise ColonsegError(f"{path}: could not encode JPEG")
    return write_atomic(path, lambda tmp: tmp.write_bytes(buf.tobytes()))


def _url(relative: str) -> str:
    """A relative file path as an escaped URL (spaces, '#', '?' and quotes in names)."""
    return html.escape(quote(relative), quote=True)


def _confident(item: dict) -> tuple[float, float]:
    """Sort key, ascending: highest peak first, then highest mean over the mask; images without
    a probability last."""
    peak, mean = item["peak"], item.get("mean")
    if peak is None:
        return (2.0, 0.0)
    return (round(-peak, 6), -mean if mean is not None else 0.0)


def _figure(item: dict, threshold: float) -> str:
    peak = item["peak"]
    # sort keys, ascending: confident = highest peak first, doubt = closest to the threshold
    # first, ties by the mean over the mask; images without a probability go last in both orders
    confident, tie = _confident(item)
    doubt = abs(peak - threshold) if peak is not None else 2.0
    img = f"<img loading='lazy' src='{_url(item['thumb'])}' alt=''>"
    if item.get("link"):
        img = f"<a href='{_url(item['link'])}'>{img}</a>"
    shown = f"peak {peak:.3f}" if peak is not None else "peak ?"
    if item.get("mean") is not None and item["polyp"]:
        shown += f", mean {item['mean']:.3f}"
    verdict = "polyp" if item["polyp"] else "<span class='none'>no polyp</span>"
    return (
        f"<figure data-confident='{confident:.6f}' data-doubt='{doubt:.6f}' "
        f"data-tie='{tie:.6f}'>{img}"
        f"<figcaption>{html.escape(item['file'])}<br>{verdict} · {shown} · "
        f"{float(item['area_percent']):.2f}% · {item['regions']} region(s)</figcaption></figure>"
    )


def write_review(
    path: str | Path,
    items: list[dict],
    threshold: float,
    title: str = "colonseg predict: review",
) -> Path:
    """Write the review page.

    Args:
        path: the HTML file; the ``thumb`` and ``link`` paths are relative to its folder.
        items: one dict per image: ``file`` (the name shown), ``thumb`` (thumbnail path), ``link``
            (the full-size picture a click opens, or None), ``polyp`` (0/1), ``regions``,
            ``area_percent``, ``peak`` (peak probability, or None when unknown) and optionally
            ``mean`` (mean probability over the mask: orders equal peaks).
        threshold: the model's threshold; "most uncertain" sorts by ``|peak - threshold|``.
        title: the page heading.

    Returns:
        ``path``.
    """
    ordered = sorted(items, key=_confident)
    found = sum(1 for it in items if it["polyp"])
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style>",
        f"<script>{_SCRIPT}</script></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{len(items)} images, {found} with a polyp at threshold {threshold:g}. "
        "Peak: the highest polyp probability in the image. Click a thumbnail for the full "
        "overlay.</p>",
        "<p><button onclick=\"sortBy('confident')\">Most confident first</button>",
        "<button onclick=\"sortBy('doubt')\">Most uncertain first</button> "
        f"(peak closest to {threshold:g})</p><div id='grid'>",
        *(_figure(it, threshold) for it in ordered),
        "</div></body></html>",
    ]
    text = "\n".join(parts)
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
