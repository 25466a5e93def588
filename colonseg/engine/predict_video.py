"""``run_predict_video``: a colonoscopy video → overlay video, per-frame CSV, optional frame masks.

Frames stream through PyAV in small batches: memory stays flat however long the video is. The
overlay video (``<stem>_overlay.mp4``: mask tinted and outlined on every frame) and the CSV are
written to temporary files and renamed into place only when the video has been read to its end,
so an interrupted run leaves no half-written output under its final name.

``<stem>_frames.csv`` columns: ``frame``, ``time_s``, ``polyp`` (1 if any polyp pixel),
``area_fraction`` (polyp pixels / frame pixels), ``confidence`` (highest polyp probability in the
frame), ``mean_prob_in_mask``, ``regions`` (connected polyp regions).
"""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from colonseg.data.io import write_png
from colonseg.engine.predict import Prediction, Predictor
from colonseg.errors import ColonsegError
from colonseg.viz.overlays import overlay_prediction

__all__ = ["VIDEO_EXTENSIONS", "run_predict_video"]

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".mpg", ".mpeg", ".webm")
CSV_FIELDS = (
    "frame", "time_s", "polyp", "area_fraction", "confidence", "mean_prob_in_mask", "regions",
)  # fmt: skip


def _open(path: Path):
    import av

    if not path.is_file():
        raise ColonsegError(f"{path}: no such video file")
    try:
        container = av.open(str(path))
    except Exception as exc:  # PyAV raises FFmpeg errors of many kinds
        raise ColonsegError(f"{path}: not a readable video ({exc.__class__.__name__})") from None
    if not container.streams.video:
        container.close()
        raise ColonsegError(f"{path}: has no video stream")
    return container


def _frames(container, path: Path) -> Iterator[np.ndarray]:
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    try:
        for frame in container.decode(stream):
            yield frame.to_ndarray(format="rgb24")
    except Exception as exc:
        raise ColonsegError(
            f"{path}: video decoding failed ({exc.__class__.__name__}: {str(exc)[:80]})"
        ) from None


def _encoder(out, width: int, height: int, fps: Fraction):
    import av

    for codec in ("libx264", "h264", "mpeg4"):
        try:
            av.codec.Codec(codec, "w")
        except Exception:
            continue
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if codec == "mpeg4":
            stream.bit_rate = 4_000_000
        return stream
    raise ColonsegError("no H.264 or MPEG-4 video encoder in this PyAV build")


def _row(index: int, fps: Fraction, out: Prediction) -> dict:
    area = int(out.mask.sum())
    regions = cv2.connectedComponents(out.mask, connectivity=8)[0] - 1 if area else 0
    return {
        "frame": index,
        "time_s": f"{index / float(fps):.3f}",
        "polyp": int(area > 0),
        "area_fraction": f"{area / out.mask.size:.6f}",
        "confidence": f"{float(out.prob.max()):.4f}",
        "mean_prob_in_mask": f"{float(out.prob[out.mask > 0].mean()) if area else 0.0:.4f}",
        "regions": regions,
    }


def run_predict_video(
    predictor: Predictor,
    video: str | Path,
    out_dir: str | Path,
    save_masks: bool = False,
    batch_size: int = 8,
    progress: bool = True,
) -> dict:
    """Segment every frame of ``video``; return ``{"video", "csv", "frames", "polyp_frames"}``.

    ``save_masks`` also writes ``<stem>_masks/<frame>.png`` (0/255; RGB class colours for
    multi-class models).
    """
    import av

    video, out_dir = Path(video), Path(out_dir)
    container = _open(video)
    out_dir.mkdir(parents=True, exist_ok=True)
    stream = container.streams.video[0]
    fps = stream.average_rate or Fraction(25)
    width, height = stream.codec_context.width // 2 * 2, stream.codec_context.height // 2 * 2
    if width == 0 or height == 0:
        container.close()
        raise ColonsegError(f"{video}: video stream has no frame size")
    final_video = out_dir / f"{video.stem}_overlay.mp4"
    final_csv = out_dir / f"{video.stem}_frames.csv"
    fd, tmp_video = tempfile.mkstemp(suffix=".mp4", prefix=".", dir=out_dir)
    os.close(fd)
    tmp_csv = Path(tmp_video).with_suffix(".csv")
    scheme = predictor.scheme
    n_frames = polyp_frames = 0
    try:
        with av.open(tmp_video, "w") as sink, tmp_csv.open("w", newline="") as fh:
            encoder = _encoder(sink, width, height, fps)
            writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
            writer.writeheader()
            total = stream.frames or None
            bar = tqdm(total=total, desc=video.name, unit="frame", disable=not progress)

            def flush(batch: list[np.ndarray]) -> None:
                nonlocal n_frames, polyp_frames
                for image, out in zip(batch, predictor.predict_batch(batch), strict=True):
                    row = _row(n_frames, fps, out)
                    writer.writerow(row)
                    polyp_frames += row["polyp"]
                    shown = overlay_prediction(image, out.classes, scheme)
                    frame = av.VideoFrame.from_ndarray(
                        np.ascontiguousarray(shown[:height, :width]), format="rgb24"
                    )
                    for packet in encoder.encode(frame):
                        sink.mux(packet)
                    if save_masks:
                        path = out_dir / f"{video.stem}_masks" / f"{n_frames:06d}.png"
                        write_png(path, scheme.mask_image(out.classes))
                    n_frames += 1
                bar.update(len(batch))

            batch: list[np.ndarray] = []
            for image in _frames(container, video):
                batch.append(image)
                if len(batch) == batch_size:
                    flush(batch)
                    batch = []
            if batch:
                flush(batch)
            bar.close()
            for packet in encoder.encode():
                sink.mux(packet)
        if n_frames == 0:
            raise ColonsegError(f"{video}: no frames could be decoded")
        os.replace(tmp_video, final_video)
        os.replace(tmp_csv, final_csv)
    finally:
        container.close()
        Path(tmp_video).unlink(missing_ok=True)
        tmp_csv.unlink(missing_ok=True)
    return {
        "video": final_video,
        "csv": final_csv,
        "frames": n_frames,
        "polyp_frames": polyp_frames,
    }
