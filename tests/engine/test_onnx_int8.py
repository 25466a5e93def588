from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from colonseg.cli.main import app
from colonseg.data.io import image_digest, write_png
from colonseg.data.sources import DataSource
from colonseg.data.synthetic import create_disc_image, write_folder_dataset
from colonseg.engine.checkpoint import ModelMeta, save_pretrained
from colonseg.engine.onnx_backend import export_onnx
from colonseg.engine.predict import Predictor
from colonseg.engine.quantize import calibration_files
from colonseg.errors import ColonsegError
from colonseg.models import create_model


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Path]:
    """A tiny binary U-Net (seeded init), its fp32 export and its int8 export through the CLI,
    calibrated on 6 of 8 synthetic disc frames."""
    tmp = tmp_path_factory.mktemp("int8")
    torch.manual_seed(0)
    net = create_model("unet", encoder="test_efficientnet", classes=1, pretrained=False)
    meta = ModelMeta("unet", {"encoder": "test_efficientnet", "classes": 1}, size=(64, 64))
    data = write_folder_dataset(tmp / "frames", n=8, size=64)
    meta.trained_on = {"frames": [image_digest(p) for p in sorted((data / "images").iterdir())]}
    checkpoint = save_pretrained(net, meta, tmp / "m")
    int8 = tmp / "m.int8.onnx"
    args = ["export", "--model", str(checkpoint), "--out", str(int8), "--quantize", "int8"]
    result = CliRunner().invoke(
        app, [*args, "--calibration", str(data), "--calibration-images", "6"]
    )
    assert result.exit_code == 0, result.output
    return {"checkpoint": checkpoint, "fp32": export_onnx(checkpoint, tmp / "m.onnx"), "int8": int8}


def test_int8_masks_agree_with_fp32_on_calibration_like_frames(exported):
    fp32 = Predictor.from_pretrained(exported["fp32"])
    int8 = Predictor.from_pretrained(exported["int8"])
    assert (fp32.precision, int8.precision) == ("fp32", "int8")
    assert "int8" in int8.settings()
    for seed in (100, 101, 102):  # frames like the calibration ones, not among them
        image = create_disc_image(64, seed=seed)[0]
        a, b = fp32.predict(image).prob, int8.predict(image).prob
        # the untrained net's probabilities span a narrow band: threshold at its median, so
        # that half the pixels are foreground and every flipped pixel counts
        threshold = float(np.median(a))
        ma, mb = a > threshold, b > threshold
        assert 2 * (ma & mb).sum() / (ma.sum() + mb.sum()) >= 0.9
        assert np.abs(a - b).max() <= 0.1 * (a.max() - a.min())


def test_int8_model_holds_int8_weights_and_records_its_calibration(exported):
    import onnx

    graph = onnx.load(str(exported["int8"])).graph
    ops = {n.op_type for n in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    int8 = {i.name for i in graph.initializer if i.data_type == onnx.TensorProto.INT8}
    dequantised = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert convs and all(dequantised.get(n.input[1]) in int8 for n in convs)
    meta = Predictor.from_pretrained(exported["int8"]).meta
    record = meta.provenance["quantization"]
    assert record["calibration_images"] == 6 and record["calibration_trained_on"] == 6
    assert record["calibration"][0]["path"].endswith("frames")


def test_int8_without_calibration_is_refused_in_one_line(exported, tmp_path):
    runner, out = CliRunner(), tmp_path / "q.onnx"
    base = ["export", "--model", str(exported["checkpoint"]), "--out", str(out)]
    cases = {
        ("--quantize", "int8"): "--quantize int8 needs calibration frames",
        ("--quantize", "int4", "--calibration", "x"): "Unknown quantisation 'int4'",
        ("--calibration", str(tmp_path)): "calibration frames are for --quantize int8",
    }
    for extra, message in cases.items():
        result = runner.invoke(app, [*base, *extra])
        assert result.exit_code == 2 and message in result.output
        assert len(result.output.strip().splitlines()) == 1 and not out.exists()


def test_calibration_frames_from_a_split_or_a_plain_folder(tmp_path):
    data = write_folder_dataset(tmp_path / "d", n=8, size=32)
    (data / "splits").mkdir()
    stems = sorted(p.stem for p in (data / "images").iterdir())
    (data / "splits" / "train.txt").write_text("\n".join(stems[:5]))
    picked = calibration_files([DataSource(str(data), "train")], 3)
    assert len(picked) == 3 and {p.stem for p in picked} <= set(stems[:5])
    assert picked == calibration_files([DataSource(str(data), "train")], 3)  # seeded
    plain = tmp_path / "frames"
    for i in range(4):
        write_png(plain / "sub" / f"f{i}.png", create_disc_image(32, seed=i)[0])
    assert len(calibration_files([DataSource(str(plain)), DataSource(str(data))], 64)) == 12
    with pytest.raises(ColonsegError, match="unknown dataset layout"):
        calibration_files([DataSource(str(plain), "train")], 4)


def test_shape_computations_stay_in_float(tmp_path):
    """TF-style "same" padding computes its amounts from the input's shape in the graph; those
    small numbers must not pass through QuantizeLinear (the feature maps would change size)."""
    import onnx
    from timm.layers import Conv2dSame

    from colonseg.engine.quantize import quantize_int8

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        Conv2dSame(3, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.Conv2d(8, 1, 1),
        torch.nn.Upsample(scale_factor=2.0),
    )  # fmt: skip
    meta = ModelMeta("unet", {}, size=(64, 64))
    data = write_folder_dataset(tmp_path / "frames", n=4, size=64)
    graph = onnx.load(str(quantize_int8(net, meta, tmp_path / "q.onnx", [DataSource(str(data))])))
    graph = graph.graph
    shape_values = set()
    for node in graph.node:
        if node.op_type == "Shape" or (node.input and node.input[0] in shape_values):
            shape_values.update(node.output)
    quantized = {n.input[0] for n in graph.node if n.op_type == "QuantizeLinear"}
    assert {"Pad", "QuantizeLinear"} <= {n.op_type for n in graph.node}
    assert not quantized & shape_values
