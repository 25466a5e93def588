"""``run_demo``: the shipped default model on the bundled sample frames — no data, no network."""

from __future__ import annotations

from pathlib import Path

from colonseg.engine.evaluate import EvalSource, run_evaluate
from colonseg.engine.predict import Predictor
from colonseg.engine.predict_files import run_predict

__all__ = ["SAMPLES_DIR", "run_demo"]

SAMPLES_DIR = Path(__file__).resolve().parents[1] / "samples"


def run_demo(
    out_dir: str | Path = "demo_out", model: str = "default", progress: bool = True
) -> dict:
    """Segment the bundled frames; write overlays/masks and evaluate against their masks."""
    predictor = Predictor.from_pretrained(model)
    out_dir = Path(out_dir)
    predicted = run_predict(predictor, [SAMPLES_DIR / "images"], out_dir, progress=progress)
    summary = run_evaluate(
        predictor,
        [EvalSource(str(SAMPLES_DIR), name="samples")],
        out_dir,
        progress=progress,
        title=f"colonseg demo: model '{model}' on the bundled sample frames",
    )
    return {"out_dir": out_dir, "summary": summary, "n_images": len(predicted["written"])}
