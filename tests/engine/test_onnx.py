from __future__ import annotations

import numpy as np
import pytest

from colonseg.data.synthetic import create_disc_image
from colonseg.engine.checkpoint import ModelMeta, save_pretrained
from colonseg.engine.onnx_backend import export_onnx
from colonseg.engine.predict import Predictor
from colonseg.errors import ColonsegError
from colonseg.models import create_model


@pytest.fixture
def checkpoint(tmp_path):
    net = create_model("unet", encoder="test_efficientnet", classes=3, pretrained=False)
    meta = ModelMeta(
        "unet", {"encoder": "test_efficientnet", "classes": 3}, size=(64, 64), labels="neopolyp"
    )
    return save_pretrained(net, meta, tmp_path / "m")


def test_onnx_matches_torch_and_carries_its_config(checkpoint, tmp_path):
    path = export_onnx(checkpoint, tmp_path / "m.onnx")
    torch_p = Predictor.from_pretrained(checkpoint, device="cpu", precision="fp32")
    onnx_p = Predictor.from_pretrained(path)
    assert onnx_p.meta == torch_p.meta and onnx_p.scheme.name == "neopolyp"
    images = [create_disc_image(64, seed=1)[0], create_disc_image(96, seed=2)[0][:80]]
    for a, b in zip(torch_p.predict_batch(images), onnx_p.predict_batch(images), strict=True):
        assert np.abs(a.probs - b.probs).max() <= 1e-4
    # dynamic input size: the model runs at another resolution than it was exported at
    other = Predictor.from_pretrained(path, size=96).predict(images[0])
    assert other.probs.shape == (3, 64, 64)


def test_backend_onnx_exports_once_into_the_cache(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("COLONSEG_CACHE", str(tmp_path / "cache"))
    Predictor.from_pretrained(checkpoint, backend="onnx")
    cached = list((tmp_path / "cache" / "onnx").glob("*.onnx"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    Predictor.from_pretrained(checkpoint, backend="onnx")
    assert cached[0].stat().st_mtime_ns == stamp


def test_bad_onnx_inputs_fail_in_one_line(checkpoint, tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ColonsegError, match="junk.onnx: not a loadable ONNX model"):
        Predictor.from_pretrained(junk)
    with pytest.raises(ColonsegError, match="must end in .onnx"):
        export_onnx(checkpoint, tmp_path / "m.onx")
    with pytest.raises(ColonsegError, match="Unknown backend 'tensorrt'"):
        Predictor.from_pretrained(checkpoint, backend="tensorrt")


def test_automedsam_export_is_refused_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from colonseg.cli.main import app

    result = CliRunner().invoke(
        app, ["export", "--model", "polyp_automedsam", "--out", str(tmp_path / "a.onnx")]
    )
    assert result.exit_code != 0
    assert "automedsam cannot be exported to ONNX" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "a.onnx").exists()


def test_onnx_whose_external_data_points_outside_its_folder_is_refused(checkpoint, tmp_path):
    import onnx

    path = export_onnx(checkpoint, tmp_path / "m.onnx")
    proto = onnx.load(str(path))
    weights = proto.graph.initializer[0]
    secret = tmp_path / "secret.bin"
    secret.write_bytes(weights.raw_data)  # a file outside the model's folder
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    weights.ClearField("raw_data")
    weights.data_location = onnx.TensorProto.EXTERNAL
    for location in ("../secret.bin", str(secret)):
        del weights.external_data[:]
        weights.external_data.add(key="location", value=location)
        evil = model_dir / "evil.onnx"
        evil.write_bytes(proto.SerializeToString())
        with pytest.raises(ColonsegError, match="keeps its data outside the model's folder"):
            Predictor.from_pretrained(evil)
    # the same data beside the model loads
    (model_dir / "w.bin").write_bytes(secret.read_bytes())
    del weights.external_data[:]
    weights.external_data.add(key="location", value="w.bin")
    evil.write_bytes(proto.SerializeToString())
    assert Predictor.from_pretrained(evil).meta.arch == "unet"
