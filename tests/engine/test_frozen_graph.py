"""The frozen TorchScript forward pass (``Predictor(graph=...)``): same masks, traced once, and an
eager fallback for models it cannot reproduce."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from colonseg.engine.checkpoint import ModelMeta
from colonseg.engine.predict import AUTO_FREEZE_AFTER, Predictor
from colonseg.errors import ColonsegError
from colonseg.models import create_model

META = ModelMeta("unet", {"encoder": "test_efficientnet"}, size=(64, 64))


def _predictor(graph: str, net: nn.Module | None = None) -> Predictor:
    torch.manual_seed(0)
    net = net or create_model("unet", encoder="test_efficientnet", pretrained=False)
    return Predictor(net, META, device="cpu", graph=graph, precision="fp32")


def _images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return list(rng.integers(0, 256, (n, 80, 96, 3), dtype=np.uint8))


def test_frozen_graph_gives_the_eager_probabilities_and_runs_as_torchscript():
    eager, frozen = _predictor("eager"), _predictor("frozen")
    for seed in (0, 1):  # traced on the first batch, reused on the second (another batch size)
        images = _images(3 - seed, seed)
        a, b = eager.predict_batch(images), frozen.predict_batch(images)
        for x, y in zip(a, b, strict=True):
            np.testing.assert_allclose(x.prob, y.prob, atol=1e-4)
    assert not eager._frozen
    graphs = list(frozen._frozen.values())
    assert len(graphs) == 1 and isinstance(graphs[0], torch.jit.ScriptModule)


def test_auto_runs_short_runs_eagerly_and_freezes_long_ones():
    predictor = _predictor("auto")
    for seed in range(AUTO_FREEZE_AFTER):
        predictor.predict_batch(_images(1, seed))
    assert not predictor._frozen, "a short run does not pay for the trace"
    predictor.predict_batch(_images(1, 99))
    assert isinstance(next(iter(predictor._frozen.values())), torch.jit.ScriptModule)


class _CountsCalls(nn.Module):
    """Python state baked into a trace: the graph keeps its trace call's sign, the model flips."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 3, padding=1)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.conv(x) * (-1) ** self.calls


class _ReturnsADict(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> dict:
        return {"out": self.conv(x)}


def test_a_graph_that_differs_from_its_model_is_refused_and_the_model_runs_eagerly(capsys):
    predictor = _predictor("frozen", _CountsCalls())
    predictor.predict_torch(predictor.preprocess(_images(1)))
    assert predictor._frozen[(3, 64, 64)] is predictor.model
    assert "runs eagerly: its frozen graph disagrees" in capsys.readouterr().err


def test_a_model_that_does_not_trace_runs_eagerly(capsys):
    predictor = _predictor("frozen", _ReturnsADict())
    x = predictor.preprocess(_images(1))
    assert predictor._forward(x)["out"].shape == (1, 1, 64, 64)
    assert "runs eagerly: it does not trace" in capsys.readouterr().err


def test_unknown_graph_is_refused():
    with pytest.raises(ColonsegError, match="Unknown graph 'jit'"):
        _predictor("jit")
