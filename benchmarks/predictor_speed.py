"""Predictor throughput on CPU: batch 1, 352x352 RGB frames, shipped default model.

Run: .venv/bin/python benchmarks/predictor_speed.py [--model default] [--n 100] [--tta none]
Reports images/s at the model's own input size and at 352² (once if they are the same), in fp32
and bf16, with the model's own TTA setting (``--tta none``: one pass).
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
    parser.add_argument("--model", default="default")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--tta", default=None, help="none, flip or d4 (default: the model's)")
    args = parser.parse_args()
    frames = random_frames(args.n)
    results = {
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
    }
    for size in (None, 352):
        for precision in ("fp32", "bf16"):
            p = Predictor.from_pretrained(
                args.model,
                device="cpu",
                size=size,
                precision=precision,
                tta=args.tta,
            )
            results["tta"] = p.tta
            key = f"input{p.size[0]}_{precision}"
            if key in results:
                continue
            results[key] = round(measure(p, frames), 1)
            print(f"{key}: {results[key]} images/s", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
