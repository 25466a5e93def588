"""Predictor throughput on CPU: batch 1, 352x352 RGB frames, shipped default model.

Run: .venv/bin/python benchmarks/predictor_speed.py [--model default] [--n 100]
Reports images/s for the model's own input size and for --size 352, in fp32 and bf16.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

from colonseg.engine.predict import Predictor


def measure(predictor: Predictor, frames: list[np.ndarray], warmup: int = 5) -> float:
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
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (352, 352, 3), dtype=np.uint8) for _ in range(args.n)]
    results = {
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
    }
    for size in (None, 352):
        for precision in ("fp32", "bf16"):
            p = Predictor.from_pretrained(args.model, device="cpu", size=size, precision=precision)
            key = f"input{p.size[0]}_{precision}"
            results[key] = round(measure(p, frames), 1)
            print(f"{key}: {results[key]} images/s", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
