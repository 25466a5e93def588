"""End-to-end speed of ``colonseg predict`` on a video, and where each frame's time goes.

Run: .venv/bin/python benchmarks/video_speed.py [--model default] [--frames 500] [--batch 2]
         [--other-batches 4,8]
         [--torch-threads 1,2] [--images ../shared/datasets/kvasir-seg/images]
         [--normal ../shared/datasets/polypgen-normal/images] [--out runs/video_speed]

Builds a 720×576, 25 fps MPEG-4 clip of ``--frames`` frames (a picture per second, panning a
pixel a frame: a Kvasir-SEG polyp from ``--images`` every third second, PolypGen normal mucosa
from ``--normal`` in between; the bundled sample frames when a folder is missing), then runs
:func:`run_predict_video` on it, one run after another in this process:

1. ``before``: the serial path with the previous encoder setting (x264 ``medium``), the
   previous overlay drawing (float blend of the whole frame) and the previous batch of 8 frames:
   what ``colonseg predict`` did;
2. ``serial``: decode → model → write one after the other, today's stages;
3. ``serial, batch B``: the same at each of ``--other-batches``;
4. ``threads``: decoding and writing in their own threads overlapping the model (the default
   on more than two CPUs), once per ``--torch-threads`` value (e.g. ``--torch-threads 1,2``);
5. ``serial, frozen graph``: what ``colonseg predict`` does now: ``serial`` with the model run
   as a frozen TorchScript graph (``--graph auto``: traced after 8 eager batches; the trace is
   in the time).

Runs 1-4 run the model eagerly. Each run's frames/s is end to end (opening the clip to the CSV
renamed into place), and each run's CSV is compared with the serial run's: runs 1-4 must be
identical; the frozen graph's probabilities differ by bf16 rounding, so for it the number of
frames whose polyp yes/no differs is reported. The per-stage breakdown
times each stage alone on the first ``--stage-frames`` frames, in ms per frame. Writes
``<out>/video_speed.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import json
import platform
import shutil
import time
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import torch

import colonseg.engine.predict_video as pv
from colonseg.data.io import read_image
from colonseg.engine.demo import SAMPLES_DIR
from colonseg.engine.predict import Predictor
from colonseg.viz.overlays import contours

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
SIZE = (720, 576)


def make_clip(path: Path, images: Path, normal: Path, frames: int, fps: int = 25) -> Path:
    """A ``SIZE`` MPEG-4 clip, a picture per second panning a pixel per frame: a polyp image from
    ``images`` every third second, normal mucosa from ``normal`` in between (the bundled sample
    frames stand in for a missing folder)."""

    def pictures(folder: Path, count: int) -> list[np.ndarray]:
        files = sorted(folder.iterdir() if folder.is_dir() else (SAMPLES_DIR / "images").iterdir())
        pad = (SIZE[0] + fps, SIZE[1] + fps)
        return [cv2.resize(read_image(f), pad, interpolation=cv2.INTER_AREA) for f in files[:count]]

    seconds = -(-frames // fps)
    polyps, normals = pictures(images, -(-seconds // 3)), pictures(normal, seconds)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt, stream.bit_rate = *SIZE, "yuv420p", 3_000_000
        for i in range(frames):
            second, o = divmod(i, fps)
            shown = (
                polyps[second // 3 % len(polyps)]
                if second % 3 == 0
                else normals[second % len(normals)]
            )
            picture = np.ascontiguousarray(shown[o : o + SIZE[1], o : o + SIZE[0]])
            for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def old_overlay(image: np.ndarray, classes: np.ndarray, scheme) -> np.ndarray:
    """The overlay drawing before issue 33 (binary models): float blend of the whole frame."""
    color, alpha, m = (255, 220, 0), 0.35, classes > 0
    out = image.astype(np.float32)
    out[m] = (1 - alpha) * out[m] + alpha * np.asarray(color, np.float32)
    return contours(out.clip(0, 255).astype(np.uint8), m, color)


def end_to_end(predictor: Predictor, clip: Path, out: Path, batch: int, pipeline: str) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    result = pv.run_predict_video(predictor, clip, out, batch_size=batch, progress=False,
                                  pipeline=pipeline)  # fmt: skip
    elapsed = time.perf_counter() - start
    return {"frames": result["frames"], "seconds": round(elapsed, 2),
            "frames_per_s": round(result["frames"] / elapsed, 1), "csv": result["csv"]}  # fmt: skip


class Stopwatch:
    """Milliseconds spent per named stage: ``with watch("decode"): ...``."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = {}

    @contextmanager
    def __call__(self, key: str):
        start = time.perf_counter()
        yield
        self.ms[key] = self.ms.get(key, 0.0) + 1000 * (time.perf_counter() - start)


def encode_all(shown: list[np.ndarray], preset: str) -> None:
    with av.open(io.BytesIO(), "w", format="mp4") as sink:
        stream = sink.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = *SIZE, "yuv420p"
        stream.options = {"preset": preset}
        for image in shown:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                sink.mux(packet)
        for packet in stream.encode():
            sink.mux(packet)


def stages(predictor: Predictor, clip: Path, n: int, batch: int, frozen: Predictor) -> dict:
    """Milliseconds per frame of each stage of the video path, each timed alone (the model's
    forward pass also as ``frozen``'s graph)."""
    watch = Stopwatch()
    with av.open(str(clip)) as container, watch("decode"):
        frames = list(itertools.islice(pv._frames(container, clip), n))
    n = len(frames)
    predictor.predict_batch(frames[:batch])  # warm-up
    for _ in range(3):  # tracing and the TorchScript profiling runs
        frozen.predict_batch(frames[:batch])
    outs = []
    for i in range(0, n, batch):
        part = frames[i : i + batch]
        with watch("preprocess (resize to model size, normalise)"):
            x = predictor.preprocess(part)
        with watch(f"model forward ({predictor.precision})"):
            probs = predictor.predict_torch(x).cpu().numpy()
        with watch(f"model forward ({predictor.precision}), frozen graph"):
            frozen.predict_torch(x)
        with watch("probabilities to full size, threshold"):
            outs += [predictor.finish(p, im) for p, im in zip(probs, part, strict=True)]
    with watch("CSV row (regions, confidence)"):
        rows = [pv._row(i, Fraction(25), o) for i, o in enumerate(outs)]
    with watch("CSV write"):
        csv.DictWriter(io.StringIO(), pv.CSV_FIELDS).writerows(rows)
    pairs = list(zip(frames, outs, strict=True))
    with watch("overlay"):
        shown = [pv.overlay_prediction(im, o.classes, predictor.scheme) for im, o in pairs]
    with watch("overlay before (float blend)"):
        [old_overlay(im, o.classes, predictor.scheme) for im, o in pairs]
    summary = pv.VideoSummary(25.0, predictor.threshold)
    with watch("summary strip (collect)"):
        for i, (row, image) in enumerate(zip(rows, shown, strict=True)):
            summary.add(i, float(row["confidence"]), row["polyp"], image)
    with watch(f"encode (x264 {pv.X264_PRESET})"):
        encode_all(shown, pv.X264_PRESET)
    with watch("encode before (x264 medium)"):
        encode_all(shown, "medium")
    return {k: round(v / n, 2) for k, v in watch.ms.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--frames", type=int, default=500)
    parser.add_argument("--stage-frames", type=int, default=96)
    parser.add_argument("--batch", type=int, default=pv.VIDEO_BATCH)
    parser.add_argument("--other-batches", default="",
                        help="serial runs at other batch sizes too, e.g. 4,8")  # fmt: skip
    parser.add_argument("--torch-threads", default=str(torch.get_num_threads()),
                        help="intra-op thread counts for the threaded runs, e.g. 1,2")  # fmt: skip
    parser.add_argument("--images", type=Path, default=DATASETS / "kvasir-seg" / "images")
    parser.add_argument("--normal", type=Path, default=DATASETS / "polypgen-normal" / "images")
    parser.add_argument("--out", type=Path, default=Path("runs/video_speed"))
    args = parser.parse_args()
    clip = make_clip(args.out / "clip.mp4", args.images, args.normal, args.frames)
    predictor = Predictor.from_pretrained(args.model, device="cpu", graph="eager")
    frozen = Predictor.from_pretrained(args.model, device="cpu", graph="frozen")
    default_threads = torch.get_num_threads()
    results = {
        "model": args.model, "settings": predictor.settings(), "clip": f"{SIZE[0]}x{SIZE[1]}",
        "batch": args.batch, "cpu": platform.processor() or platform.machine(),
        "torch_threads_default": default_threads,
        "stages_ms_per_frame": stages(predictor, clip, args.stage_frames, args.batch, frozen),
        "runs": {},
    }  # fmt: skip
    runs = results["runs"]
    preset, overlay = pv.X264_PRESET, pv.overlay_prediction
    pv.X264_PRESET, pv.overlay_prediction = "medium", old_overlay
    try:
        runs["before (serial, x264 medium, float overlay)"] = end_to_end(
            predictor, clip, args.out / "before", 8, "serial"
        )
    finally:
        pv.X264_PRESET, pv.overlay_prediction = preset, overlay
    runs["serial"] = end_to_end(predictor, clip, args.out / "serial", args.batch, "serial")
    for batch in (int(b) for b in args.other_batches.split(",") if b):
        runs[f"serial, batch {batch}"] = end_to_end(
            predictor, clip, args.out / f"serial{batch}", batch, "serial"
        )
    for threads in (int(t) for t in args.torch_threads.split(",")):
        torch.set_num_threads(threads)
        runs[f"threads, torch {threads} threads"] = end_to_end(
            predictor, clip, args.out / f"threads{threads}", args.batch, "threads"
        )
    torch.set_num_threads(default_threads)
    runs["serial, frozen graph (--graph auto)"] = end_to_end(
        Predictor.from_pretrained(args.model, device="cpu", graph="auto"),
        clip, args.out / "frozen", args.batch, "serial",
    )  # fmt: skip
    reference = runs["serial"]["csv"].read_text()
    flags = [row["polyp"] for row in csv.DictReader(io.StringIO(reference))]
    for run in runs.values():
        text = run.pop("csv").read_text()
        run["csv_identical"] = text == reference
        other = [row["polyp"] for row in csv.DictReader(io.StringIO(text))]
        run["polyp_flag_differs"] = sum(a != b for a, b in zip(flags, other, strict=True))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "video_speed.json").write_text(json.dumps(results, indent=2))
    stages_ms = results["stages_ms_per_frame"]
    total = sum(v for k, v in stages_ms.items() if "before" not in k and "frozen" not in k)
    print(f"\n{args.model}: {results['settings']}; clip {results['clip']}, batch {args.batch}\n")
    print("| run | frames | frames/s | CSV as serial | polyp yes/no differs |")
    print("|---|---:|---:|---|---:|")
    for name, run in runs.items():
        print(f"| {name} | {run['frames']} | {run['frames_per_s']} | {run['csv_identical']} "
              f"| {run['polyp_flag_differs']} |")  # fmt: skip
    print("\n| stage (alone) | ms/frame | share of today's serial sum |\n|---|---:|---:|")
    for name, value in results["stages_ms_per_frame"].items():
        share = "" if "before" in name or "frozen" in name else f"{100 * value / total:.0f} %"
        print(f"| {name} | {value} | {share} |")
    print(f"\nwritten: {args.out / 'video_speed.json'}")


if __name__ == "__main__":
    main()
