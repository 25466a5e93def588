"""The Streamlit page of ``colonseg app``. It lays out what :mod:`colonseg.app.logic` computes
and calls nothing but the Predictor (through that module) — no model code lives here."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import streamlit as st

from colonseg.app import logic
from colonseg.data.io import IMAGE_EXTENSIONS
from colonseg.engine.checkpoint import list_zoo
from colonseg.engine.predict import Predictor
from colonseg.engine.predict_video import VIDEO_EXTENSIONS, run_predict_video
from colonseg.engine.tta import TTA_LABELS, TTA_MODES
from colonseg.errors import ColonsegError
from colonseg.postprocess import PostProcess

UPLOAD_DIR = Path(tempfile.gettempdir()) / "colonseg-app"


@st.cache_resource(show_spinner="Loading the model…")
def load_predictor(model: str) -> Predictor:
    return Predictor.from_pretrained(model)


@st.cache_data(show_spinner=False, max_entries=256)
def cached_probs(model: str, digest: str, tta: str, fov: bool, _image):
    return logic.predict_probs(load_predictor(model), _image, tta, fov)


def choose_model() -> str | None:
    st.sidebar.header("Model")
    zoo = list_zoo()
    if st.sidebar.radio("Source", ["Shipped model", "Upload a checkpoint"]) == "Shipped model":
        return st.sidebar.selectbox("Shipped model", zoo, index=zoo.index("default"))
    upload = st.sidebar.file_uploader(
        "Exported .onnx, or a .zip of a checkpoint folder", type=list(logic.CHECKPOINT_TYPES)
    )
    if upload is None:
        return None
    folder = UPLOAD_DIR / hashlib.sha1(upload.getvalue()).hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    return str(logic.load_uploaded_checkpoint(upload.name, upload.getvalue(), folder))


@st.cache_data(show_spinner=False, max_entries=64)
def cached_box_probs(model: str, digest: str, box: tuple, _image):
    return load_predictor(model).box_probs(_image, box)


def draw_box(name: str, image) -> tuple | None:
    """A box the user drags on the image (promptable models only), or None."""
    import plotly.express as px

    with st.expander("Prompt with a box (optional): drag a box around the polyp"):
        fig = px.imshow(image)
        fig.update_layout(dragmode="select", margin=dict(l=0, r=0, t=0, b=0), height=360)
        fig.update_xaxes(showticklabels=False)
        fig.update_yaxes(showticklabels=False)
        event = st.plotly_chart(
            fig, on_select="rerun", selection_mode="box", key=f"box{name}", use_container_width=True
        )
        box = logic.selected_box(event)
        if box is not None:
            st.caption(f"Box x {box[0]:.0f}–{box[2]:.0f}, y {box[1]:.0f}–{box[3]:.0f}")
        return box


def show_image(predictor: Predictor, model: str, name: str, data: bytes, settings) -> logic.Panels:
    image = logic.decode_upload(name, data)
    digest = hashlib.sha1(data).hexdigest()
    st.subheader(name)
    box = draw_box(name, image) if predictor.takes_box else None
    if box is None:
        fov = PostProcess.parse(settings[1]).fov
        probs = cached_probs(model, digest, settings[2], fov, image)
    else:
        probs = cached_box_probs(model, digest, tuple(round(v, 1) for v in box), image)
    mine = logic.configure(predictor, *settings)  # this session's settings, on its own copy
    out = mine.finish(probs, image)
    panels = logic.panels(mine, image, out)
    summary = logic.regions_summary(out, predictor.meta.class_names)
    line = "Prompted with your box: " if box is not None else ""
    line += (
        f"**{summary['polyps']} polyp region(s)** (≥ 0.1 % of the frame), "
        f"{summary['area_percent']} % of the frame"
    )
    for cls, percent in summary.get("classes", {}).items():
        line += f" · {cls}: {percent} %"
    st.markdown(line)
    peak = f"{panels.heat_top:.3g}, this frame's peak)"
    relative = panels.heat_top != 1.0
    captions = [
        "Original",
        "Overlay",
        f"Heat map (red = {peak}" if relative else "Heat map",
        f"Probability (white = {peak}" if relative else "Probability",
        "Contours",
    ]
    pictures = [
        panels.original,
        panels.overlay,
        panels.heatmap,
        panels.probability,
        panels.contours,
    ]
    for column, caption, picture in zip(st.columns(5), captions, pictures, strict=True):
        column.image(picture, caption=caption, use_container_width=True)
    left, right = st.columns(2)
    stem = Path(logic.safe_name(name)).stem
    left.download_button(
        "Mask (PNG)", logic.png_bytes(panels.mask), f"{stem}_mask.png", key=f"m{name}"
    )
    right.download_button(
        "Overlay (PNG)", logic.png_bytes(panels.overlay), f"{stem}_overlay.png", key=f"o{name}"
    )
    return panels


@st.cache_data(show_spinner=False, max_entries=8)
def cached_video(model: str, digest: str, settings: tuple, name: str, _data: bytes) -> dict:
    """Segment a video once per model, file and settings: the overlay MP4 and CSV as bytes."""
    predictor = logic.configure(load_predictor(model), *settings)
    with tempfile.TemporaryDirectory(prefix="colonseg-video-") as tmp:
        source = Path(tmp) / logic.safe_name(name)
        source.write_bytes(_data)
        try:
            result = run_predict_video(predictor, source, Path(tmp) / "out", progress=False)
        except ColonsegError as exc:  # name the upload, not the temporary copy
            raise ColonsegError(str(exc).replace(str(source), name)) from None
        return {
            "frames": result["frames"],
            "polyp_frames": result["polyp_frames"],
            "video": (result["video"].name, result["video"].read_bytes()),
            "csv": (result["csv"].name, result["csv"].read_bytes()),
        }


def show_video(model: str, name: str, data: bytes, settings: tuple) -> None:
    st.subheader(name)
    with st.spinner(f"Segmenting every frame of {name}…"):
        result = cached_video(model, hashlib.sha1(data).hexdigest(), settings, name, data)
    st.markdown(f"**{result['frames']} frames**, {result['polyp_frames']} with a polyp")
    st.columns([2, 1])[0].video(result["video"][1])
    left, right = st.columns(2)
    left.download_button("Overlay video (MP4)", result["video"][1], result["video"][0])
    right.download_button("Per-frame CSV", result["csv"][1], result["csv"][0])


def main() -> None:
    st.set_page_config(page_title="colonseg", layout="wide")
    st.title("colonseg — polyp segmentation")
    st.caption("A research tool, not a medical device. Images stay on this machine.")
    try:
        model = choose_model()
    except ColonsegError as exc:
        st.sidebar.error(str(exc))
        model = None
    if model is None:
        st.info("Upload a checkpoint in the sidebar, or choose a shipped model.")
        return
    try:
        predictor = load_predictor(model)
    except ColonsegError as exc:
        st.error(str(exc))
        return
    st.sidebar.header("Settings")
    threshold = st.sidebar.slider("Threshold", 0.05, 0.95, float(predictor.meta.threshold), 0.05)
    default_steps = predictor.meta.postprocess or "fill_holes,min_area=0.001"
    use_post = st.sidebar.toggle("Post-processing", value=bool(predictor.meta.postprocess))
    steps = st.sidebar.text_input("Steps", default_steps, disabled=not use_post)
    tta = st.sidebar.selectbox(
        "Test-time augmentation",
        TTA_MODES,
        index=TTA_MODES.index(predictor.meta.tta),
        format_func=TTA_LABELS.get,
        help="Average the predictions of mirrored and turned copies of the frame; each model "
        "starts with the setting it was shipped with.",
    )
    settings = (threshold, steps if use_post else "none", tta)
    uploads = st.file_uploader(
        f"Colonoscopy frames (PNG, JPEG, TIFF, BMP) or videos ({', '.join(VIDEO_EXTENSIONS)}); "
        f"up to {logic.MAX_UPLOAD_MB} MB each",
        accept_multiple_files=True,
        type=[e.lstrip(".") for e in (*IMAGE_EXTENSIONS, *VIDEO_EXTENSIONS)],
    )
    results: dict[str, logic.Panels] = {}
    for upload in uploads or []:
        try:
            if Path(upload.name).suffix.lower() in VIDEO_EXTENSIONS:
                logic.check_upload(upload.name, upload.getvalue(), VIDEO_EXTENSIONS)
                show_video(model, upload.name, upload.getvalue(), settings)
            else:
                results[upload.name] = show_image(
                    predictor, model, upload.name, upload.getvalue(), settings
                )
        except ColonsegError as exc:
            st.error(str(exc))
    if len(results) > 1:
        st.download_button(
            f"All {len(results)} masks and overlays (ZIP)",
            logic.zip_results(results),
            "colonseg_results.zip",
        )


main()
