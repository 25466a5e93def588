"""Deployment speed on this CPU: eager torch vs onnxruntime, batch throughput, a 1-minute video.

Run: .venv/bin/python benchmarks/deployment.py [--model default] [--n 100] [--video-seconds 60]

1. ``Predictor.predict`` one 352×352 frame at a time (resize, normalise, forward, activation,
   resize back, threshold): eager torch fp32, eager torch with the default precision (bf16
   autocast where the CPU runs bf16 natively), and onnxruntime (fp32).
2. Batch throughput: ``Predictor.predict_batch`` over in-memory 352×352 frames in batches of 8,
   and ``colonseg predict`` end to end on a folder (decode in DataLoader workers, predict,
   write masks, probability maps and overlays).
3. A video of ``--video-seconds`` at 25 fps (720×576, MPEG-4, built from the bundled frames):
   ``run_predict_video`` frames/s and the process's resident memory sampled every 0.2 s — peak,
   and the spread after the first 10 % of frames (flat memory means constant use on long videos).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import av
import cv2
import numpy as np
from predictor_speed import measure, random_frames

from colonseg.data.io import read_image, write_png
from colonseg.engine.demo import SAMPLES_DIR
from colonseg.engine.predict import Predictor
from colonseg.engine.predict_files import run_predict
from colonseg.engine.predict_video import run_predict_video


def batch_throughput(predictor: Predictor, frames: list[np.ndarray], batch: int = 8) -> float:
    predictor.predict_batch(frames[:batch])  # warm-up
    start = time.perf_counter()
    for i in range(0, len(frames), batch):
        predictor.predict_batch(frames[i : i + batch])
    return len(frames) / (time.perf_counter() - start)


def sample_frames(size: tuple[int, int]) -> list[np.ndarray]:
    files = sorted((SAMPLES_DIR / "images").iterdir())
    return [cv2.resize(read_image(f), size, interpolation=cv2.INTER_AREA) for f in files]


def make_video(path: Path, seconds: int, size=(720, 576), fps: int = 25) -> Path:
    frames = sample_frames(size)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt, stream.bit_rate = *size, "yuv420p", 3_000_000
        for i in range(seconds * fps):
            frame = av.VideoFrame.from_ndarray(frames[(i // fps) % len(frames)], format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def rss_mib() -> float:
    """This process's resident memory (Linux ``/proc/self/statm``)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class RSSSampler(threading.Thread):
    def __init__(self, every: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.every, self.samples, self.running = every, [], True

    def run(self) -> None:
        while self.running:
            self.samples.append((time.perf_counter(), rss_mib()))
            time.sleep(self.every)


def video_run(predictor: Predictor, seconds: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        video = make_video(Path(tmp) / "clip.mp4", seconds)
        sampler = RSSSampler()
        sampler.start()
        start = time.perf_counter()
        result = run_predict_video(predictor, video, Path(tmp) / "out", progress=False)
        elapsed = time.perf_counter() - start
        sampler.running = False
        sampler.join()
    rss = [r for t, r in sampler.samples if t >= start]
    settled = rss[len(rss) // 10 :]
    return {
        "frames": result["frames"],
        "frames_per_s": round(result["frames"] / elapsed, 1),
        "rss_peak_mib": round(max(rss)),
        "rss_after_10pct_min_mib": round(min(settled)),
        "rss_after_10pct_max_mib": round(max(settled)),
        "rss_at_25_50_75_100pct_mib": [
            round(rss[min(len(rss) - 1, len(rss) * q // 4)]) for q in (1, 2, 3, 4)
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--video-seconds", type=int, default=60)
    parser.add_argument("--video-only", action="store_true", help="only the video measurement")
    args = parser.parse_args()
    if args.video_only:
        predictor = Predictor.from_pretrained(args.model, device="cpu", size=352)
        print(json.dumps({"video": video_run(predictor, args.video_seconds)}, indent=2))
        return
    frames = random_frames(args.n)
    results: dict = {}
    predictors = {
        "torch_fp32": Predictor.from_pretrained(
            args.model, device="cpu", precision="fp32", size=352
        ),
        "torch_auto": Predictor.from_pretrained(args.model, device="cpu", size=352),
        "onnxruntime": Predictor.from_pretrained(args.model, backend="onnx", size=352),
    }
    for name, predictor in predictors.items():
        results[f"{name}_batch1_img_s"] = round(measure(predictor, frames), 1)
        results[f"{name}_batch8_img_s"] = round(batch_throughput(predictor, frames), 1)
        print(name, results[f"{name}_batch1_img_s"], results[f"{name}_batch8_img_s"], flush=True)
    results["onnx_vs_torch_fp32"] = round(
        results["onnxruntime_batch1_img_s"] / results["torch_fp32_batch1_img_s"], 2
    )
    results["onnx_vs_torch_auto"] = round(
        results["onnxruntime_batch1_img_s"] / results["torch_auto_batch1_img_s"], 2
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "frames"
        for i, frame in enumerate(sample_frames((640, 512)) * 13):  # 208 JPEG-sized frames
            write_png(folder / f"f{i:04d}.png", frame)
        for name in ("torch_auto", "onnxruntime"):
            start = time.perf_counter()
            done = run_predict(predictors[name], [folder], Path(tmp) / name, progress=False)
            rate = len(done["written"]) / (time.perf_counter() - start)
            results[f"{name}_folder_end_to_end_img_s"] = round(rate, 1)
            print(name, "folder", results[f"{name}_folder_end_to_end_img_s"], flush=True)
    results["video"] = video_run(predictors["torch_auto"], args.video_seconds)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
