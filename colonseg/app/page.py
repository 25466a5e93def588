"""The Streamlit page of ``colonseg app``. It lays out what :mod:`colonseg.app.logic` computes,
within the limits :mod:`colonseg.app.server` keeps, and calls nothing but the Predictor (through
those modules) — no model code lives here."""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from pathlib import Path

import streamlit as st

from colonseg.app import logic, server
from colonseg.data.io import IMAGE_EXTENSIONS
from colonseg.engine.checkpoint import NEW_DATA_MODEL, list_zoo
from colonseg.engine.predict import Predictor
from colonseg.engine.predict_video import VIDEO_EXTENSIONS, run_predict_video
from colonseg.engine.tta import TTA_LABELS, TTA_MODES
from colonseg.errors import ColonsegError
from colonseg.postprocess import PostProcess


def app_settings() -> server.AppSettings:
    """What ``colonseg app`` was started with (``COLONSEG_APP_*``; defaults otherwise)."""
    return server.AppSettings.from_env(os.environ)


@st.cache_resource(show_spinner=False)
def model_cache(max_models: int) -> server.ModelCache:
    """The models every session shares: at most ``max_models`` in memory (LRU)."""
    return server.ModelCache(max_models)


@st.cache_resource(show_spinner=False)
def sweep_at_startup() -> list[Path]:
    """Once per server process: remove upload folders a killed server left behind."""
    return server.sweep_uploads()


def cached_predictor(model: str) -> Predictor:
    """The shared Predictor of ``model`` (what the cached functions below call: no spinner)."""
    return model_cache(app_settings().max_models).get(model)


def load_predictor(model: str) -> Predictor:
    if model in model_cache(app_settings().max_models):
        return cached_predictor(model)
    with st.spinner("Loading the model…"):
        return cached_predictor(model)


def uploads() -> server.UploadFolder:
    """This session's upload folder: removed with the session's state, or at the next start."""
    if "uploads" not in st.session_state:
        st.session_state["uploads"] = server.UploadFolder()
    return st.session_state["uploads"]


def logged_in(current: server.AppSettings) -> bool:
    """True once this session gave the access token (at once when none is set)."""
    if current.token is None or st.session_state.get("logged_in"):
        return True
    given = st.text_input("Access token", type="password", help="Ask whoever runs this server.")
    if given and server.token_matches(given, current):
        st.session_state["logged_in"] = True
        st.rerun()
    if given:
        time.sleep(1.0)  # slows guessing down
        st.error("Wrong access token.")
    return False


@st.cache_data(show_spinner=False, max_entries=256)
def cached_probs(model: str, digest: str, tta: str, fov: bool, _image):
    return logic.predict_probs(cached_predictor(model), _image, tta, fov)


@st.cache_data(show_spinner=False, max_entries=8)
def cached_attention(model: str, digest: str, fov: bool, _image) -> dict:
    return logic.attention_maps(cached_predictor(model), _image, fov)


def choose_model() -> str | None:
    st.sidebar.header("Model")
    zoo = list_zoo()
    if st.sidebar.radio("Source", ["Shipped model", "Upload a checkpoint"]) == "Shipped model":
        pick = NEW_DATA_MODEL if NEW_DATA_MODEL in zoo else "default"
        name = st.sidebar.selectbox("Shipped model", zoo, index=zoo.index(pick))
        if NEW_DATA_MODEL in zoo:
            st.sidebar.caption(logic.zoo_caption(name))
        return name
    upload = st.sidebar.file_uploader(
        "Exported .onnx, or a .zip of a checkpoint folder", type=list(logic.CHECKPOINT_TYPES)
    )
    if upload is None:
        return None
    folder = uploads().folder_for(upload.getvalue())
    return str(logic.load_uploaded_checkpoint(upload.name, upload.getvalue(), folder))


@st.cache_data(show_spinner=False, max_entries=64)
def cached_box_probs(model: str, digest: str, box: tuple, _image):
    return cached_predictor(model).box_probs(_image, box)


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


def heat_caption(title: str, colour: str, panels: logic.Panels) -> str:
    """``title``, saying what full colour means when the scale is the frame's own peak."""
    if panels.heat_top == 1.0:
        return title
    return f"{title} ({colour} = {panels.heat_top:.3g}, this frame's peak)"


def show_pictures(
    model: str, key: str, image, digest: str, fov: bool, pictures: list[tuple[str, object]]
) -> None:
    """``(caption, picture)`` side by side, with the attention panel after the heat map when
    the model has attention maps (a select box under it picks the map)."""
    maps = cached_attention(model, digest, fov, image)
    columns = st.columns(len(pictures) + bool(maps))
    if maps:
        place = 1 + next(i for i, (c, _) in enumerate(pictures) if c.startswith("Heat map"))
        column = columns.pop(place)
        slot = column.empty()
        choice = column.selectbox(
            "Attention map",
            list(maps),
            format_func=lambda k: logic.ATTENTION_LABELS.get(k, k),
            key=f"att{key}",
            help="Where the model looks: 0 (blue) to 1 (red).",
        )
        picture = logic.attention_heatmap(image, maps[choice])
        slot.image(picture, caption="Attention", use_container_width=True)
    for column, (caption, picture) in zip(columns, pictures, strict=True):
        column.image(picture, caption=caption, use_container_width=True)


def show_image(predictor: Predictor, model: str, name: str, data: bytes, settings) -> logic.Panels:
    image = logic.decode_upload(name, data)
    digest = hashlib.sha1(data).hexdigest()
    st.subheader(name)
    box = draw_box(name, image) if predictor.takes_box else None
    fov = PostProcess.parse(settings[1]).fov
    if box is None:
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
    pictures = [
        ("Original", panels.original),
        ("Overlay", panels.overlay),
        (heat_caption("Heat map", "red", panels), panels.heatmap),
        (heat_caption("Probability", "white", panels), panels.probability),
        ("Contours", panels.contours),
    ]
    show_pictures(model, name, image, digest, fov, pictures)
    left, right = st.columns(2)
    stem = Path(server.safe_name(name)).stem
    left.download_button(
        "Mask (PNG)", logic.png_bytes(panels.mask), f"{stem}_mask.png", key=f"m{name}"
    )
    right.download_button(
        "Overlay (PNG)", logic.png_bytes(panels.overlay), f"{stem}_overlay.png", key=f"o{name}"
    )
    return panels


@st.cache_data(show_spinner=False, max_entries=8)
def cached_video(
    model: str, digest: str, settings: tuple, limits: tuple, header: tuple, name: str, _path: Path
) -> dict:
    """Segment a video once per model, file, settings and limits: the overlay MP4 and CSV as
    bytes, or ``{"error": message}`` (kept too, so a refused video is not decoded again)."""
    capped = server.AppSettings(max_video_frames=limits[0], max_video_seconds=limits[1])
    predictor = logic.configure(cached_predictor(model), *settings)
    predictor = server.limit_video_frames(predictor, name, capped, header)
    with tempfile.TemporaryDirectory(prefix=f"{server.UPLOAD_PREFIX}video-") as tmp:
        try:
            result = run_predict_video(predictor, _path, Path(tmp) / "out", progress=False)
        except ColonsegError as exc:  # name the upload, not the saved copy
            return {"error": str(exc).replace(str(_path), name)}
        return {
            "frames": result["frames"],
            "polyp_frames": result["polyp_frames"],
            "video": (result["video"].name, result["video"].read_bytes()),
            "csv": (result["csv"].name, result["csv"].read_bytes()),
        }


@st.cache_data(show_spinner=False, max_entries=16)
def cached_frame(digest: str, index: int, name: str, _path: Path):
    return server.read_video_frame(_path, index, name)


def show_video(predictor: Predictor, model: str, name: str, data: bytes, settings: tuple) -> None:
    st.subheader(name)
    limits = app_settings()
    path = uploads().save(name, data)
    header = server.video_header(path)
    server.check_video_header(name, *header, limits)  # before decoding anything
    digest = hashlib.sha1(data).hexdigest()
    with st.spinner(f"Segmenting every frame of {name}…"):
        result = cached_video(
            model, digest, settings, (limits.max_video_frames, limits.max_video_seconds),
            header, name, path,
        )  # fmt: skip
    if "error" in result:
        raise ColonsegError(result["error"])
    st.markdown(f"**{result['frames']} frames**, {result['polyp_frames']} with a polyp")
    st.columns([2, 1])[0].video(result["video"][1])
    left, right = st.columns(2)
    left.download_button("Overlay video (MP4)", result["video"][1], result["video"][0])
    right.download_button("Per-frame CSV", result["csv"][1], result["csv"][0])
    last = result["frames"] - 1
    index = st.slider("Frame to inspect", 0, last, 0, key=f"f{name}") if last > 0 else 0
    frame = cached_frame(digest, index, name, path)
    frame_digest = f"{digest}:{index}"
    fov = PostProcess.parse(settings[1]).fov
    mine = logic.configure(predictor, *settings)
    out = mine.finish(cached_probs(model, frame_digest, settings[2], fov, frame), frame)
    panels = logic.panels(mine, frame, out)
    pictures = [
        (f"Frame {index}", panels.original),
        ("Overlay", panels.overlay),
        (heat_caption("Heat map", "red", panels), panels.heatmap),
    ]
    show_pictures(model, f"{name}:frame", frame, frame_digest, fov, pictures)


def main() -> None:
    st.set_page_config(page_title="colonseg", layout="wide")
    st.title("colonseg — polyp segmentation")
    st.caption("A research tool, not a medical device. Images stay on this machine.")
    try:
        current = app_settings()
    except ColonsegError as exc:
        st.error(str(exc))
        return
    sweep_at_startup()
    if not logged_in(current):
        return
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
        f"up to {server.MAX_UPLOAD_MB} MB each",
        accept_multiple_files=True,
        type=[e.lstrip(".") for e in (*IMAGE_EXTENSIONS, *VIDEO_EXTENSIONS)],
    )
    results: dict[str, logic.Panels] = {}
    for upload in uploads or []:
        try:
            if Path(upload.name).suffix.lower() in VIDEO_EXTENSIONS:
                logic.check_upload(upload.name, upload.getvalue(), VIDEO_EXTENSIONS)
                show_video(predictor, model, upload.name, upload.getvalue(), settings)
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
