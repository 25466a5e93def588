"""``run_demo``: the shipped default model on the bundled sample frames — no data, no network."""

from __future__ import annotations

from pathlib import Path

from colonseg.data.sources import DataSource
from colonseg.engine.checkpoint import ModelMeta
from colonseg.engine.evaluate import run_evaluate
from colonseg.engine.predict import Predictor
from colonseg.engine.predict_files import run_predict

__all__ = ["SAMPLES_DIR", "run_demo", "sample_images", "samples_for"]

SAMPLES_DIR = Path(__file__).resolve().parents[1] / "samples"


def samples_for(meta: ModelMeta) -> Path:
    """The bundled labelled samples that suit a model: GlaS images for gland models, NeoPolyp
    frames for 3-class polyp models, else the Kvasir-SEG / CVC-ClinicDB frames."""
    if meta.class_names == ["gland"]:
        return SAMPLES_DIR / "glas"
    return SAMPLES_DIR / "neopolyp" if meta.labels == "neopolyp" else SAMPLES_DIR


def sample_images(folder: Path) -> list[Path]:
    """The images of a samples folder (``images/``, or the flat GlaS files without ``_anno``)."""
    if (folder / "images").is_dir():
        return [folder / "images"]
    return sorted(p for p in folder.glob("*.jpg") if not p.stem.endswith("_anno"))


def run_demo(
    out_dir: str | Path = "demo_out", model: str = "default", progress: bool = True
) -> dict:
    """Segment the bundled samples that suit the model (polyp frames, or GlaS images for gland
    models); write overlays/masks and evaluate against their masks."""
    predictor = Predictor.from_pretrained(model)
    out_dir = Path(out_dir)
    folder = samples_for(predictor.meta)
    predicted = run_predict(predictor, sample_images(folder), out_dir, progress=progress)
    summary = run_evaluate(
        predictor,
        [DataSource(str(folder), name="samples")],
        out_dir,
        progress=progress,
        title=f"colonseg demo: model '{model}' on the bundled sample frames",
    )
    return {"out_dir": out_dir, "summary": summary, "n_images": len(predicted["written"])}
