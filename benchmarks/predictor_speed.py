"""Predictor throughput on CPU: batch 1, 352x352 RGB frames, shipped default model.

Run: .venv/bin/python benchmarks/predictor_speed.py [--model default] [--n 100] [--tta none]
Reports images/s at the model's own input size and at 352² (once if they are the same), in fp32
and bf16, with the model's own TTA setting (``--tta none``: one pass).

Several models (``--model default polyp_general --rounds 3 --precision bf16``) are measured
interleaved, round after round: on a shared machine whose speed drifts, only numbers taken side
by side compare.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

from colonseg.engine.predict import Predictor


def random_frames(n: int, size: int = 352) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def measure(predictor: Predictor, frames: list[np.ndarray], warmup: int = 5) -> float:
    """Images/s of ``predictor.predict`` one frame at a time, after ``warmup`` frames."""
    for f in frames[:warmup]:
        predictor.predict(f)
    start = time.perf_counter()
    for f in frames:
        predictor.predict(f)
    return len(frames) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", nargs="+", default=["default"])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--tta", default=None, help="none, flip or d4 (default: the model's)")
    parser.add_argument("--precision", choices=("fp32", "bf16", "both"), default="both")
    parser.add_argument("--rounds", type=int, default=1, help="measure each setting this often")
    args = parser.parse_args()
    frames = random_frames(args.n)
    precisions = ("fp32", "bf16") if args.precision == "both" else (args.precision,)
    settings = {}  # "model input<side>_<precision>" -> predictor
    for model in args.model:
        for precision in precisions:
            for size in (None, 352):  # its own input size, then 352² unless that is the same
                p = Predictor.from_pretrained(
                    model, device="cpu", size=size, precision=precision, tta=args.tta
                )
                settings[f"{model} input{p.size[0]}_{precision}"] = p
                if tuple(p.size) == (352, 352):
                    break
    speeds = {key: [] for key in settings}
    for _ in range(args.rounds):
        for key, p in settings.items():
            speeds[key].append(round(measure(p, frames), 1))
            print(f"{key} (tta {p.tta}): {speeds[key][-1]} images/s", flush=True)
    print(json.dumps({
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "images_per_s": speeds,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
