"""The compiled forward pass (``Predictor.compile_model``) and when a video run asks for it."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch

from colonseg.data.synthetic import create_disc_image
from colonseg.engine.checkpoint import ModelMeta
from colonseg.engine.predict import Predictor
from colonseg.engine.predict_video import COMPILE_MIN_FRAMES, run_predict_video, should_compile
from colonseg.models import create_model


def _predictor(**kwargs) -> Predictor:
    torch.manual_seed(0)
    net = create_model("unet", encoder="test_efficientnet", pretrained=False)
    meta = ModelMeta("unet", {"encoder": "test_efficientnet"}, size=(64, 64))
    return Predictor(net, meta, device="cpu", threshold=0.5, precision="fp32", **kwargs)


def _frames(n: int) -> list[np.ndarray]:
    return [create_disc_image(80, seed=i)[0] for i in range(n)]


def test_compiled_forward_matches_eager_for_short_and_long_batches():
    from torch._dynamo.utils import counters

    eager, compiled = _predictor(), _predictor(compile=True)
    assert compiled.compiled and not eager.compiled
    frames, graphs = _frames(7), counters["stats"]["unique_graphs"]
    for batch in (frames[:3], frames[:1], frames):  # compiled for 3; 1 padded; 7 in chunks
        x = eager.preprocess(batch)
        np.testing.assert_allclose(
            compiled.predict_torch(x).numpy(), eager.predict_torch(x).numpy(), atol=1e-4
        )
    assert compiled._compiled_batch == 3
    assert counters["stats"]["unique_graphs"] == graphs + 1, "compiled once, not per batch size"


def test_a_failing_compiler_falls_back_to_the_eager_model(monkeypatch, capsys):
    def broken(model, **kwargs):
        def run(x):
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\ndetails")

        return run

    monkeypatch.setattr(torch, "compile", broken)
    eager, predictor = _predictor(), _predictor(compile=True)
    x = eager.preprocess(_frames(2))
    np.testing.assert_allclose(predictor.predict_torch(x).numpy(), eager.predict_torch(x).numpy())
    assert not predictor.compiled
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["warning: torch.compile failed (InvalidCxxCompiler: No working C++ compiler "
                   "found); running uncompiled"]  # fmt: skip


def test_videos_compile_when_long_enough_on_the_cpu(monkeypatch, tmp_path):
    predictor = _predictor()
    assert should_compile("auto", predictor, COMPILE_MIN_FRAMES)
    assert not should_compile("auto", predictor, COMPILE_MIN_FRAMES - 1)
    assert should_compile("on", predictor, 1) and not should_compile("off", predictor, 10**6)
    predictor.device = torch.device("cuda")  # the rule only; nothing runs
    assert not should_compile("auto", predictor, 10**6)

    path = tmp_path / "clip.avi"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 80, 80, "yuv420p"
        for image in _frames(4):
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    asked = []
    monkeypatch.setattr(Predictor, "compile_model", lambda self: asked.append(1) or False)
    monkeypatch.setattr("colonseg.engine.predict_video.COMPILE_MIN_FRAMES", 4)
    run_predict_video(_predictor(), path, tmp_path / "a", progress=False)
    assert asked == [1], "a 4-frame video is long enough when the bar is 4 frames"
    monkeypatch.setattr("colonseg.engine.predict_video.COMPILE_MIN_FRAMES", 5)
    run_predict_video(_predictor(), path, tmp_path / "b", progress=False)
    assert asked == [1], "and not when it is 5"


def test_an_unknown_compile_mode_is_refused(tmp_path):
    from colonseg.errors import ColonsegError

    with pytest.raises(ColonsegError, match="compile mode 'yes'"):
        run_predict_video(_predictor(), tmp_path / "x.mp4", tmp_path, compile="yes")
