"""``run_predict_video``: a colonoscopy video → overlay video, per-frame CSV, summary strip,
optional frame masks.

Frames stream through in small batches, so memory stays flat however long the video is, and in
three threads that overlap: one decodes (PyAV), the calling thread runs the Predictor on batches
of frames, one writes (frame masks, CSV rows, overlay drawn in place, H.264 encoding). The queues
between them are bounded; FFmpeg, OpenCV and torch release the GIL while they work. A failure in
any of them stops the others and is raised in the calling thread as its one-line error.

The overlay video (``<stem>_overlay.mp4``: mask tinted and outlined on every frame), the summary
strip and the CSV are written to temporary files and renamed into place only when the video has
been read to its end, the CSV last, so an interrupted run leaves no half-written output under its
final name (and the temporary files a killed run leaves are deleted by the next run). With frame
masks, a killed run can be resumed where its mask export stopped (``skip_existing``).

``<stem>_frames.csv`` columns: ``frame``, ``time_s``, ``polyp`` (1 if any polyp pixel),
``area_fraction`` (polyp pixels / frame pixels), ``confidence`` (highest polyp probability in the
frame), ``mean_prob_in_mask``, ``regions`` (connected polyp regions).

``<stem>_summary.png``: confidence over time with the threshold and the detected spans shaded,
and thumbnails of the most confident frame of up to six spans (:mod:`colonseg.viz.video_summary`).
"""

from __future__ import annotations

import csv
import itertools
import os
import queue
import threading
from collections.abc import Callable, Generator, Iterator
from contextlib import ExitStack
from fractions import Fraction
from pathlib import Path
from typing import NoReturn

import cv2
import numpy as np
from tqdm import tqdm

from colonseg.data.io import publish, remove_stale_temp, temp_beside, write_atomic, write_png
from colonseg.data.labels import read_label
from colonseg.engine.predict import Prediction, Predictor
from colonseg.errors import ColonsegError
from colonseg.viz.overlays import overlay_prediction
from colonseg.viz.video_summary import VideoSummary

__all__ = ["VIDEO_BATCH", "VIDEO_EXTENSIONS", "run_predict_video"]

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".mpg", ".mpeg", ".webm")
CSV_FIELDS = (
    "frame", "time_s", "polyp", "area_fraction", "confidence", "mean_prob_in_mask", "regions",
)  # fmt: skip
PIPELINES = ("auto", "threads", "serial")
VIDEO_BATCH = 2  # frames per forward pass; 2 CPUs, end to end: 22.8 frames/s (20.6 at 4, 20.4 at 8)
X264_PRESET = "veryfast"  # 2x faster than x264's default (medium) at the same CRF, files no larger
_END = object()
_POLL_S = 0.05  # how often a waiting thread looks whether the others failed


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
        if codec == "libx264":
            stream.options = {"preset": X264_PRESET}
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


def _raise_one_line(exc: BaseException | None, what: str) -> NoReturn:
    """Raise a stage's failure in the calling thread: a ColonsegError as it is, anything else
    as ``"<what> failed (<type>: <message on one line>)"`` (the original as its cause)."""
    if isinstance(exc, ColonsegError | KeyboardInterrupt):
        raise exc
    said = " ".join(str(exc).split())[:80]
    raise ColonsegError(f"{what} failed ({exc.__class__.__name__}: {said})") from exc


class _Worker(threading.Thread):
    """A daemon thread that keeps the exception its target raised."""

    def __init__(self, name: str, target: Callable[[], None]) -> None:
        super().__init__(name=name, daemon=True)
        self._target_fn, self.error = target, None

    def run(self) -> None:
        try:
            self._target_fn()
        except BaseException as exc:  # handed to the calling thread
            self.error = exc


def _prefetched(items: Generator, size: int, what: str) -> Iterator:
    """``items``, produced in a background thread at most ``size`` ahead of the consumer; its
    failure is raised here (as ``"<what> failed (...)"`` unless a ColonsegError) once the items
    before it are consumed. Closing the generator stops and joins the thread."""
    ready: queue.Queue = queue.Queue(size)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in itertools.chain(items, [_END]):
                while not stop.is_set():
                    try:
                        ready.put(item, timeout=_POLL_S)
                        break
                    except queue.Full:
                        pass
                if stop.is_set():
                    return
        finally:
            items.close()  # in this thread, before the caller closes what it reads

    worker = _Worker("colonseg-decode", produce)
    worker.start()
    try:
        while True:
            try:
                item = ready.get(timeout=_POLL_S)
            except queue.Empty:
                if worker.is_alive() or not ready.empty():
                    continue
                _raise_one_line(worker.error, what)
            if item is _END:
                return
            yield item
    finally:
        stop.set()
        worker.join()


class _Background:
    """Calls ``process(item)`` on every item put, in order, in a background thread (or at once,
    in the caller's thread, when not ``threaded``). ``put`` and ``close`` raise the thread's
    failure instead of waiting for it; ``abort`` stops it without raising."""

    def __init__(self, process: Callable, size: int, what: str, threaded: bool = True) -> None:
        self.process, self.what = process, what
        self.items: queue.Queue = queue.Queue(size)
        self.worker = _Worker("colonseg-write", self._run) if threaded else None
        if self.worker is not None:
            self.worker.start()

    def _run(self) -> None:
        while (item := self.items.get()) is not _END:
            self.process(item)

    def _raise(self) -> NoReturn:
        _raise_one_line(self.worker.error, self.what)

    def put(self, item) -> None:
        if self.worker is None:
            try:
                self.process(item)
            except Exception as exc:
                _raise_one_line(exc, self.what)
            return
        while True:
            if not self.worker.is_alive():
                self._raise()
            try:
                self.items.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                pass

    def close(self) -> None:
        """Wait until every item put is processed."""
        if self.worker is not None:
            self.put(_END)
            self.worker.join()
            if self.worker.error is not None:
                self._raise()

    def abort(self) -> None:
        """Process what was put so far (unless the thread failed), then stop; never raises."""
        if self.worker is None:
            return
        while self.worker.is_alive():
            try:
                self.items.put(_END, timeout=_POLL_S)
                break
            except queue.Full:
                pass
        self.worker.join()


def run_predict_video(
    predictor: Predictor,
    video: str | Path,
    out_dir: str | Path,
    save_masks: bool = False,
    batch_size: int = VIDEO_BATCH,
    progress: bool = True,
    skip_existing: bool = False,
    pipeline: str = "auto",
) -> dict:
    """Segment every frame of ``video``; return ``{"video", "csv", "summary", "frames",
    "polyp_frames", "skipped", "resumed_at"}``.

    ``save_masks`` also writes ``<stem>_masks/<frame>.png`` (0/255; RGB class colours for
    multi-class models), and, while the video is being read, each frame's CSV row to
    ``<stem>_masks/frames.partial.csv`` (deleted when the video is done).

    Temporary files that a killed run left behind (of this video's overlay video, summary and
    CSV, and in its ``<stem>_masks/``) are deleted as the run starts. ``skip_existing`` resumes
    a killed run: a video whose outputs are complete (its CSV, which is renamed into place last,
    the overlay video, the summary, and with ``save_masks`` a mask for every CSV row) is not
    read again (``skipped`` True); with ``save_masks``, a frame export stopped midway resumes at
    its first frame without a mask and a recorded row (``resumed_at``): the frames before it are
    drawn into the overlay video from their saved masks, with their recorded rows, and not
    predicted again. The outputs are trusted as they are: after changing the model, run without
    it.

    ``pipeline="serial"`` decodes, predicts and writes one after the other in the calling
    thread, with the same outputs (what ``benchmarks/video_speed.py`` compares against).
    ``"auto"`` (the default) overlaps in threads on machines with more than two CPUs and runs
    serially on two: there the model's two intra-op threads already fill both cores and the
    overlap cost more than it saved (20.9 against 22.4 frames/s, ``docs/benchmarks.md``).
    """
    import av

    if pipeline not in PIPELINES:
        raise ColonsegError(f"Unknown pipeline '{pipeline}'. Available: {', '.join(PIPELINES)}.")
    video, out_dir = Path(video), Path(out_dir)
    final_video = out_dir / f"{video.stem}_overlay.mp4"
    final_csv = out_dir / f"{video.stem}_frames.csv"
    final_summary = out_dir / f"{video.stem}_summary.png"
    masks = out_dir / f"{video.stem}_masks" if save_masks else None
    partial = masks / "frames.partial.csv" if masks is not None else None
    finals = (final_video, final_summary, final_csv)
    complete = skip_existing and all(p.is_file() for p in finals)
    rows = _read_rows(final_csv) if complete else []
    if rows and _with_masks(rows, masks) == rows:
        if partial is not None:
            partial.unlink(missing_ok=True)
        return {"video": final_video, "csv": final_csv, "summary": final_summary,
                "frames": len(rows), "polyp_frames": sum(int(r["polyp"]) for r in rows),
                "skipped": True, "resumed_at": len(rows)}  # fmt: skip
    container = _open(video)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temp(out_dir, [p.name for p in finals])
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
    tmps = {p: temp_beside(p) for p in (final_video, final_csv)}
    scheme = predictor.scheme
    summary = VideoSummary(float(fps), predictor.threshold)
    threaded = pipeline == "threads" or (pipeline == "auto" and (os.cpu_count() or 1) > 2)
    counts = {"frames": 0, "polyp": 0}
    try:
        with ExitStack() as stack:
            sink = stack.enter_context(av.open(str(tmps[final_video]), "w"))
            fh = stack.enter_context(tmps[final_csv].open("w", newline=""))
            encoder = _encoder(sink, width, height, fps)
            writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
            writer.writeheader()
            rec = record = None
            if partial is not None:  # the rows of the frames whose masks are saved, as they go
                write_atomic(partial, lambda tmp: _write_rows(tmp, done))
                rec = stack.enter_context(partial.open("a", newline=""))
                record = csv.DictWriter(rec, fieldnames=CSV_FIELDS)
            aborting = threading.Event()

            def write(item: tuple[int, np.ndarray, Prediction | None]) -> None:
                """One frame's outputs, in frame order: mask, recorded row, CSV row, overlay."""
                index, image, out = item
                if out is None:  # resumed: drawn from its saved mask, not predicted
                    classes, row = read_label(masks / f"{index:06d}.png", scheme), done[index]
                else:
                    classes, row = out.classes, _row(index, fps, out)
                    if masks is not None:
                        write_png(masks / f"{index:06d}.png", scheme.mask_image(classes))
                    if record is not None:  # after the mask: a recorded row has its mask
                        record.writerow(row)
                        rec.flush()
                if aborting.is_set():  # the run failed: only the resumable part is kept
                    return
                writer.writerow(row)
                counts["frames"] += 1
                counts["polyp"] += int(row["polyp"])
                shown = overlay_prediction(image, classes, scheme)
                summary.add(index, float(row["confidence"]), int(row["polyp"]), shown)
                frame = av.VideoFrame.from_ndarray(
                    np.ascontiguousarray(shown[:height, :width]), format="rgb24"
                )
                try:
                    for packet in encoder.encode(frame):
                        sink.mux(packet)
                except Exception as exc:
                    _raise_one_line(exc, f"{final_video.name}: video encoding")

            writing = _Background(write, 2 * batch_size, f"{video}: writing outputs", threaded)
            frames = _frames(container, video)
            if threaded:
                frames = _prefetched(frames, 2 * batch_size, f"{video}: video decoding")
            stack.callback(frames.close)  # joins the decoding thread before the video closes
            bar = tqdm(total=stream.frames or None, desc=video.name, unit="frame",
                       disable=not progress)  # fmt: skip
            stack.callback(bar.close)
            try:
                batch, n = [], 0  # frames waiting for the model; frames read
                for image in frames:
                    if n < len(done):
                        writing.put((n, image, None))
                        bar.update(1)
                    else:
                        batch.append(image)
                    n += 1
                    if len(batch) == batch_size:
                        _predict(predictor, batch, n - len(batch), writing)
                        bar.update(len(batch))
                        batch = []
                if batch:
                    _predict(predictor, batch, n - len(batch), writing)
                    bar.update(len(batch))
                writing.close()
            except BaseException:
                aborting.set()
                writing.abort()  # the masks and rows of the frames predicted are kept
                raise
            for packet in encoder.encode():
                sink.mux(packet)
        if counts["frames"] == 0:
            raise ColonsegError(f"{video}: no frames could be decoded")
        publish(tmps[final_video], final_video)
        summary.save(final_summary, title=video.name)  # atomic too
        publish(tmps[final_csv], final_csv)  # last: a CSV under its final name means it is done
        if partial is not None:
            partial.unlink(missing_ok=True)
    finally:
        container.close()
        for tmp in tmps.values():
            tmp.unlink(missing_ok=True)
    return {
        "video": final_video,
        "csv": final_csv,
        "summary": final_summary,
        "frames": counts["frames"],
        "polyp_frames": counts["polyp"],
        "skipped": False,
        "resumed_at": len(done),
    }


def _predict(predictor: Predictor, batch: list[np.ndarray], first: int, writing) -> None:
    """Run the model on ``batch`` (frames ``first`` on) and hand each frame to ``writing``."""
    for i, (image, out) in enumerate(zip(batch, predictor.predict_batch(batch), strict=True)):
        writing.put((first + i, image, out))
