"""What the web app does with images and predictions, without Streamlit: read uploaded images
and models safely, predict, summarise, draw the panels and package the downloads.

Every function takes and returns plain values so that it is tested without a browser; the
Streamlit page (:mod:`colonseg.app.page`) only lays the results out. What keeps a shared server
within its limits (access token, video length, models in memory, uploaded files on disk) is in
:mod:`colonseg.app.server`, which also holds :func:`safe_name` and :data:`MAX_UPLOAD_MB`.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import io
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from colonseg.app.server import MAX_UPLOAD_MB, safe_name
from colonseg.data.io import (
    IMAGE_EXTENSIONS,
    MAX_PIXELS,
    read_image,
    unique_stems,
    write_atomic,
)
from colonseg.engine.checkpoint import NEW_DATA_MODEL, read_meta
from colonseg.engine.predict import Prediction, Predictor
from colonseg.errors import ColonsegError
from colonseg.postprocess import PostProcess
from colonseg.viz.overlays import contours, heatmap, overlay_prediction

__all__ = [
    "ATTENTION_LABELS",
    "CHECKPOINT_TYPES",
    "MAX_APP_PIXELS",
    "MAX_UNZIPPED_MB",
    "Panels",
    "attention_heatmap",
    "attention_maps",
    "check_upload",
    "configure",
    "decode_upload",
    "load_uploaded_checkpoint",
    "panels",
    "png_bytes",
    "predict_probs",
    "regions_summary",
    "selected_box",
    "zip_results",
    "zoo_caption",
]

MAX_APP_PIXELS = 40_000_000  # 40 megapixels: larger frames are refused with a message
MAX_UNZIPPED_MB = 500  # an uploaded checkpoint zip may not expand beyond this (zip bombs)
CHECKPOINT_TYPES = ("onnx", "zip")
_ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)
ATTENTION_LABELS = {
    "spatial_attention": "Bottleneck, stride 32",
    "gate_stride16": "Skip gate, stride 16",
    "gate_stride8": "Skip gate, stride 8",
    "gate_stride4": "Skip gate, stride 4",
    "gate_stride2": "Skip gate, stride 2",
}


@functools.lru_cache(maxsize=64)  # zoo files do not change while the app runs
def zoo_caption(name: str) -> str:
    """What the sidebar says under a picked zoo model: what it is for, and which model to pick
    for frames from the user's own hospital."""
    meta = read_meta(name)
    own = f"For polyps in frames from your own hospital: **{NEW_DATA_MODEL}**."
    if name == NEW_DATA_MODEL:
        return (
            f"**{name}**: recommended for frames from your own hospital (trained on the polyps "
            "of three centres)."
        )
    if meta.labels == "neopolyp":
        return (
            f"**{name}**: three classes (BKAI-IGH NeoPolyp), neoplastic and non-neoplastic "
            f"polyp tissue (the non-neoplastic class is found less reliably). {own}"
        )
    if "gland" in meta.class_names:
        return f"**{name}**: glands in colon histology (H&E tiles), not colonoscopy frames."
    if name == "default":
        return f"**default**: the PraNet-protocol model of the published comparisons. {own}"
    return own


def check_upload(name: str, data: bytes, extensions: tuple[str, ...]) -> None:
    """Refuse an upload over :data:`MAX_UPLOAD_MB` or with another extension (the server checks
    again whatever the browser widget filtered)."""
    if len(data) > MAX_UPLOAD_MB * 2**20:
        raise ColonsegError(
            f"{name}: file too large ({len(data) / 2**20:.0f} MB > {MAX_UPLOAD_MB} MB)"
        )
    if Path(name).suffix.lower() not in extensions:
        accepted = ", ".join(e.lstrip(".") for e in extensions)
        raise ColonsegError(f"{name}: not an accepted file type (accepted: {accepted})")


def decode_upload(name: str, data: bytes) -> np.ndarray:
    """Uploaded bytes → RGB image, or a one-line :class:`ColonsegError` naming the file."""
    check_upload(name, data, IMAGE_EXTENSIONS)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / safe_name(name)
        path.write_bytes(data)
        try:
            return read_image(path, max_pixels=min(MAX_APP_PIXELS, MAX_PIXELS))
        except ColonsegError as exc:
            raise ColonsegError(str(exc).replace(str(path), name)) from None


def load_uploaded_checkpoint(name: str, data: bytes, folder: Path) -> Path:
    """Save an uploaded model — an exported ``.onnx`` or a ``.zip`` of a checkpoint folder
    (``config.json`` + ``weights.safetensors``) — under ``folder``; return what to load."""
    check_upload(name, data, tuple(f".{t}" for t in CHECKPOINT_TYPES))
    clean = safe_name(name, fallback="model.zip")
    if Path(clean).suffix.lower() == ".onnx":
        return write_atomic(folder / clean, lambda tmp: tmp.write_bytes(data))
    wanted = ("config.json", "weights.safetensors")  # nothing else is ever extracted
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = {Path(i.filename).name: i for i in archive.infolist() if not i.is_dir()}
            if not set(wanted) <= set(members):
                raise ColonsegError(f"{name}: the zip must hold {' and '.join(wanted)}")
            if any(members[w].compress_type not in _ZIP_METHODS for w in wanted):
                raise ColonsegError(f"{name}: compressed with a method zip cannot read")
            if sum(members[w].file_size for w in wanted) > MAX_UNZIPPED_MB * 2**20:
                raise ColonsegError(f"{name}: expands beyond {MAX_UNZIPPED_MB} MB; refused")
            target = folder / (Path(clean).stem or "model")
            for w in wanted:
                content = archive.read(members[w])
                write_atomic(target / w, lambda tmp, content=content: tmp.write_bytes(content))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError):
        raise ColonsegError(f"{name}: not a valid zip file") from None
    return target


def predict_probs(
    predictor: Predictor, image: np.ndarray, tta: str | None = None, fov: bool | None = None
) -> np.ndarray:
    """Model-resolution class probabilities ``(C, S, S)`` — the expensive step, cached by the
    page; thresholds and post-processing are applied afterwards by :meth:`Predictor.finish`.
    ``tta`` overrides the Predictor's TTA mode for this call and ``fov`` whether burnt-in text
    is erased from the frame first (None keeps the Predictor's)."""
    if tta is not None or fov is not None:
        predictor = copy.copy(predictor)
        predictor.tta = predictor.tta if tta is None else tta
        if fov is not None:
            predictor.post = dataclasses.replace(predictor.post, fov=fov)
    return predictor.predict_torch(predictor.preprocess([image]))[0].cpu().numpy()


def selected_box(event) -> tuple[float, float, float, float] | None:
    """The box a user dragged on the Plotly image (``st.plotly_chart(on_select=...)``'s event)
    as ``x0, y0, x1, y1`` in image pixels, or None when nothing is selected."""
    try:
        box = event["selection"]["box"][-1]
        (xa, xb), (ya, yb) = box["x"], box["y"]
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    return min(xa, xb), min(ya, yb), max(xa, xb), max(ya, yb)


def configure(predictor: Predictor, threshold: float, post: str, tta: str) -> Predictor:
    """A copy of the Predictor with the page's threshold, post-processing spec and TTA mode.

    The page caches one Predictor per model for every browser session; each session's
    settings go on its own shallow copy (the network is shared), never on the cached one.
    """
    predictor = copy.copy(predictor)
    predictor.threshold = float(threshold)
    predictor.post = PostProcess.parse(post)
    predictor.tta = tta
    return predictor


def regions_summary(out: Prediction, class_names: list[str], min_percent: float = 0.1) -> dict:
    """Polyp count and area: ``{"polyps", "area_percent", "classes": {name: percent}}``.

    ``polyps`` counts connected regions covering at least ``min_percent`` % of the frame, so
    specks of a few pixels are not reported as polyps; the areas count every pixel.
    """
    _, _, stats, _ = cv2.connectedComponentsWithStats(out.mask.astype(np.uint8), connectivity=8)
    n = int((stats[1:, cv2.CC_STAT_AREA] >= min_percent / 100 * out.mask.size).sum())
    summary = {"polyps": n, "area_percent": round(100 * float(out.mask.mean()), 2)}
    if out.probs is not None:
        summary["classes"] = {
            name: round(100 * float((out.classes == k).mean()), 2)
            for k, name in enumerate(class_names, start=1)
        }
    return summary


@dataclass
class Panels:
    """The pictures shown side by side for one image."""

    original: np.ndarray
    overlay: np.ndarray
    heatmap: np.ndarray
    probability: np.ndarray
    contours: np.ndarray
    mask: np.ndarray  # what "download mask" saves: 0/255, or RGB class colours
    heat_top: float = 1.0  # the probability shown as full colour in heatmap and probability


def panels(predictor: Predictor, image: np.ndarray, out: Prediction) -> Panels:
    scheme = predictor.scheme
    top = predictor.post.heat_top(out.prob)
    return Panels(
        original=image,
        overlay=overlay_prediction(image, out.classes, scheme),
        heatmap=heatmap(image, out.prob, top=top),
        probability=np.round(np.clip(out.prob / top, 0, 1) * 255).astype(np.uint8),
        contours=contours(image, out.mask),
        mask=scheme.mask_image(out.classes),
        heat_top=top,
    )


def png_bytes(array: np.ndarray) -> bytes:
    """An RGB or grey uint8 array as PNG bytes (for downloads)."""
    bgr = cv2.cvtColor(array, cv2.COLOR_RGB2BGR) if array.ndim == 3 else array
    ok, buf = cv2.imencode(".png", bgr)
    if not ok:
        raise ColonsegError("could not encode PNG")
    return buf.tobytes()


def zip_results(results: dict[str, Panels]) -> bytes:
    """``{file name: panels}`` → zip of ``masks/<stem>.png`` and ``overlays/<stem>.png`` (stems
    made safe by :func:`safe_name`; a repeated stem gets ``_2``, ``_3``...)."""
    stems = unique_stems([Path(safe_name(name)).stem or "image" for name in results])
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for stem, p in zip(stems, results.values(), strict=True):
            archive.writestr(f"masks/{stem}.png", png_bytes(p.mask))
            archive.writestr(f"overlays/{stem}.png", png_bytes(p.overlay))
    return buf.getvalue()


def attention_maps(
    predictor: Predictor, image: np.ndarray, fov: bool | None = None
) -> dict[str, np.ndarray]:
    """The model's attention maps for ``image``, each ``(H, W)`` float32 in [0, 1] at the
    image's size, keyed as in :data:`ATTENTION_LABELS` (bottleneck first); ``{}`` for a model
    without attention maps (only ``attention_unet`` has them). ``fov`` as in
    :func:`predict_probs`."""
    if not predictor.has_attention:
        return {}
    if fov is not None:
        predictor = copy.copy(predictor)
        predictor.post = dataclasses.replace(predictor.post, fov=fov)
    return predictor.attention_maps(image)


def attention_heatmap(image: np.ndarray, attention: np.ndarray) -> np.ndarray:
    """One attention map coloured over the image (JET, 0 blue to 1 red, as ``predict
    --attention`` writes them)."""
    return heatmap(image, attention)
