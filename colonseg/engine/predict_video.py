"""``run_predict_video``: a colonoscopy video → overlay video, per-frame CSV, optional frame masks.

Frames stream through PyAV in small batches: memory stays flat however long the video is. The
overlay video (``<stem>_overlay.mp4``: mask tinted and outlined on every frame) and the CSV are
written to temporary files and renamed into place only when the video has been read to its end,
so an interrupted run leaves no half-written output under its final name (and the temporary
files a killed run leaves are deleted by the next run). With frame masks, a killed run can be
resumed where its mask export stopped (``skip_existing``).

``<stem>_frames.csv`` columns: ``frame``, ``time_s``, ``polyp`` (1 if any polyp pixel),
``area_fraction`` (polyp pixels / frame pixels), ``confidence`` (highest polyp probability in the
frame), ``mean_prob_in_mask``, ``regions`` (connected polyp regions).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from contextlib import ExitStack
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from colonseg.data.io import publish, remove_stale_temp, temp_beside, write_atomic, write_png
from colonseg.data.labels import read_label
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


def _read_rows(path: Path) -> list[dict]:
    """The complete rows of a per-frame CSV, in frame order from 0: a last line cut short by
    a kill, and everything after the first row out of order, are left out."""
    text = path.read_text(errors="replace")
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines = lines[:-1]
    rows = []
    for row in csv.DictReader(lines):
        if row.get("frame") != str(len(rows)) or any(row.get(k) in (None, "") for k in CSV_FIELDS):
            break
        rows.append(row)
    return rows


def _write_rows(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def _with_masks(rows: list[dict], masks: Path | None) -> list[dict]:
    """The leading ``rows`` whose frame masks exist in ``masks`` (all of them when None)."""
    for i, _ in enumerate(rows if masks is not None else []):
        if not (masks / f"{i:06d}.png").is_file():
            return rows[:i]
    return rows


def run_predict_video(
    predictor: Predictor,
    video: str | Path,
    out_dir: str | Path,
    save_masks: bool = False,
    batch_size: int = 8,
    progress: bool = True,
    skip_existing: bool = False,
) -> dict:
    """Segment every frame of ``video``; return ``{"video", "csv", "frames", "polyp_frames",
    "skipped", "resumed_at"}``.

    ``save_masks`` also writes ``<stem>_masks/<frame>.png`` (0/255; RGB class colours for
    multi-class models), and, while the video is being read, each frame's CSV row to
    ``<stem>_masks/frames.partial.csv`` (deleted when the video is done).

    Temporary files that a killed run left behind (of this video's overlay video and CSV, and
    in its ``<stem>_masks/``) are deleted as the run starts. ``skip_existing`` resumes a killed
    run: a video whose outputs are complete (its CSV, which is renamed into place last, the
    overlay video, and with ``save_masks`` a mask for every CSV row) is not read again
    (``skipped`` True); with ``save_masks``, a frame export stopped midway resumes at its first
    frame without a mask and a recorded row (``resumed_at``): the frames before it are drawn
    into the overlay video from their saved masks, with their recorded rows, and not predicted
    again. The outputs are trusted as they are: after changing the model, run without it.
    """
    import av

    video, out_dir = Path(video), Path(out_dir)
    final_video = out_dir / f"{video.stem}_overlay.mp4"
    final_csv = out_dir / f"{video.stem}_frames.csv"
    masks = out_dir / f"{video.stem}_masks" if save_masks else None
    partial = masks / "frames.partial.csv" if masks is not None else None
    complete = skip_existing and final_video.is_file() and final_csv.is_file()
    rows = _read_rows(final_csv) if complete else []
    if rows and _with_masks(rows, masks) == rows:
        if partial is not None:
            partial.unlink(missing_ok=True)
        return {"video": final_video, "csv": final_csv, "frames": len(rows),
                "polyp_frames": sum(int(r["polyp"]) for r in rows), "skipped": True,
                "resumed_at": len(rows)}  # fmt: skip
    container = _open(video)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temp(out_dir, [final_video.name, final_csv.name])
    if masks is not None:
        remove_stale_temp(masks)
    stream = container.streams.video[0]
    fps = stream.average_rate or Fraction(25)
    width, height = stream.codec_context.width // 2 * 2, stream.codec_context.height // 2 * 2
    if width == 0 or height == 0:
        container.close()
        raise ColonsegError(f"{video}: video stream has no frame size")
    done = []
    if skip_existing and masks is not None:  # the rows recorded with the saved masks
        recorded = partial if partial.is_file() else final_csv
        done = _with_masks(_read_rows(recorded), masks) if recorded.is_file() else []
    tmp_video, tmp_csv = temp_beside(final_video), temp_beside(final_csv)
    scheme = predictor.scheme
    n_frames = polyp_frames = 0
    try:
        with ExitStack() as stack:
            sink = stack.enter_context(av.open(str(tmp_video), "w"))
            fh = stack.enter_context(tmp_csv.open("w", newline=""))
            encoder = _encoder(sink, width, height, fps)
            writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
            writer.writeheader()
            rec = record = None
            if partial is not None:  # the rows of the frames whose masks are saved, as they go
                write_atomic(partial, lambda tmp: _write_rows(tmp, done))
                rec = stack.enter_context(partial.open("a", newline=""))
                record = csv.DictWriter(rec, fieldnames=CSV_FIELDS)
            total = stream.frames or None
            bar = tqdm(total=total, desc=video.name, unit="frame", disable=not progress)

            def emit(image: np.ndarray, classes: np.ndarray, row: dict) -> None:
                nonlocal n_frames, polyp_frames
                writer.writerow(row)
                polyp_frames += int(row["polyp"])
                shown = overlay_prediction(image, classes, scheme)
                frame = av.VideoFrame.from_ndarray(
                    np.ascontiguousarray(shown[:height, :width]), format="rgb24"
                )
                for packet in encoder.encode(frame):
                    sink.mux(packet)
                n_frames += 1

            def flush(batch: list[np.ndarray]) -> None:
                new = []
                for image, out in zip(batch, predictor.predict_batch(batch), strict=True):
                    new.append(_row(n_frames, fps, out))
                    if masks is not None:
                        path = masks / f"{n_frames:06d}.png"
                        write_png(path, scheme.mask_image(out.classes))
                    emit(image, out.classes, new[-1])
                if record is not None:  # after the masks: a recorded row has its mask
                    record.writerows(new)
                    rec.flush()
                bar.update(len(batch))

            batch: list[np.ndarray] = []
            for image in _frames(container, video):
                if n_frames < len(done):  # resumed: drawn from its saved mask, not predicted
                    emit(image, read_label(masks / f"{n_frames:06d}.png", scheme), done[n_frames])
                    bar.update(1)
                    continue
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
        publish(tmp_video, final_video)
        publish(tmp_csv, final_csv)  # last: a CSV under its final name means the video is done
        if partial is not None:
            partial.unlink(missing_ok=True)
    finally:
        container.close()
        tmp_video.unlink(missing_ok=True)
        tmp_csv.unlink(missing_ok=True)
    return {
        "video": final_video,
        "csv": final_csv,
        "frames": n_frames,
        "polyp_frames": polyp_frames,
        "skipped": False,
        "resumed_at": len(done),
    }
