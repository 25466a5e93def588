"""Issue 29 point 7: the engine redesign changes nothing in what the shipped models output.

``tests/fixtures/zoo_outputs.json`` was recorded with the code before the redesign (commit
466da0f): for each shipped model, run with its own defaults (TTA, threshold, post-processing) on
the CPU in fp32, on bundled sample images that suit it, the sha256 of the uint8 mask and class
map, and the mean and max of the probability map; and the metrics of ``colonseg demo``. The tests
recompute them with the current code.

Only the public API (``colonseg.Predictor``, ``colonseg.read_image``) and the demo are used, so
the comparison holds whichever modules the redesign moves code between. To record anew (only if
a model's output is meant to change, saying why in the commit)::

    python tests/test_zoo_outputs.py            # rewrites tests/fixtures/zoo_outputs.json
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import colonseg

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "zoo_outputs.json"
SAMPLES = Path(colonseg.__file__).resolve().parent / "samples"
PROB_ATOL = 1e-5
METRIC_ATOL = 1e-6

# the sample images each model is checked on (paths under colonseg/samples): a CVC-ClinicDB and a
# Kvasir-SEG frame; the two GlaS images; two NeoPolyp frames with both classes predicted
POLYP = ["images/clinicdb_14.jpg", "images/kvasir_cju0u82z3cuma0835wlxrnrjv.jpg"]
IMAGES = {
    "default": POLYP,
    "mapseg_polyp": POLYP,
    "mssg_medsam_glas": ["glas/testA_19.jpg", "glas/testB_7.jpg"],
    "neopolyp_unet_lite0": [
        "neopolyp/images/bkai_021bab9f.jpg",
        "neopolyp/images/bkai_0bd55b13.jpg",
    ],
    "polyp_automedsam": POLYP,
    "polyp_pranet_lite0": POLYP,
    "polyp_unet_lite0_448": POLYP,
}


def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array, dtype=np.uint8).tobytes()).hexdigest()


def model_outputs(name: str, images: list[str]) -> dict:
    """What model ``name`` (its defaults, CPU, fp32) makes of ``images``."""
    predictor = colonseg.Predictor.from_pretrained(name, device="cpu", precision="fp32")
    record = {
        "settings": {
            "tta": predictor.tta,
            "threshold": predictor.threshold,
            "size": list(predictor.size),
            "postprocess": predictor.post.spec(),
        },
        "images": {},
    }
    for rel in images:
        pred = predictor.predict(colonseg.read_image(SAMPLES / rel))
        record["images"][rel] = {
            "shape": list(pred.mask.shape),
            "mask_sha256": _sha256(pred.mask),
            "classes_sha256": _sha256(pred.classes),
            "mask_fraction": float(pred.mask.mean()),
            "prob_mean": float(pred.prob.astype(np.float64).mean()),
            "prob_max": float(pred.prob.max()),
        }
    return record


def demo_metrics(out_dir: Path) -> dict:
    """The numbers of ``colonseg demo`` (model ``default`` on the bundled polyp frames)."""
    from colonseg.engine.demo import run_demo

    summary = run_demo(out_dir, "default", progress=False)["summary"]
    return {
        source: {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        for source, metrics in summary.items()
        if isinstance(metrics, dict)
    }


def _expected() -> dict:
    return json.loads(FIXTURE.read_text())


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_shipped_model_outputs_unchanged(name):
    expected = _expected()["models"][name]
    got = model_outputs(name, list(expected["images"]))
    assert got["settings"] == expected["settings"], f"{name}: default settings changed"
    for rel, want in expected["images"].items():
        have = got["images"][rel]
        where = f"{name} on {rel}"
        assert have["shape"] == want["shape"], where
        assert have["prob_mean"] == pytest.approx(want["prob_mean"], abs=PROB_ATOL), where
        assert have["prob_max"] == pytest.approx(want["prob_max"], abs=PROB_ATOL), where
        assert have["mask_sha256"] == want["mask_sha256"], f"{where}: mask changed"
        assert have["classes_sha256"] == want["classes_sha256"], f"{where}: class map changed"


def test_demo_metrics_unchanged(tmp_path):
    expected = _expected()["demo"]
    got = demo_metrics(tmp_path / "demo")
    assert set(got) == set(expected)
    for source, metrics in expected.items():
        assert set(metrics) <= set(got[source]), source  # metrics added later are new keys
        for key, value in metrics.items():
            have = got[source][key]
            if isinstance(value, float) and math.isnan(value):
                assert math.isnan(have), f"{source}/{key}"
            else:
                assert have == pytest.approx(value, abs=METRIC_ATOL), f"{source}/{key}"


def main() -> None:
    """Record the fixture with whatever ``colonseg`` is imported (see the module docstring)."""
    import tempfile

    torch.manual_seed(0)
    torch.set_num_threads(1)  # as tests/conftest.py
    data = {
        "torch": torch.__version__,
        "models": {name: model_outputs(name, images) for name, images in sorted(IMAGES.items())},
    }
    with tempfile.TemporaryDirectory() as tmp:
        data["demo"] = demo_metrics(Path(tmp) / "demo")
    FIXTURE.parent.mkdir(exist_ok=True)
    FIXTURE.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(f"recorded with {colonseg.__file__} → {FIXTURE}", file=sys.stderr)


if __name__ == "__main__":
    main()
