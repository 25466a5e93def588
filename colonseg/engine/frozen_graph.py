"""A model's forward pass as a frozen TorchScript graph, for inference on the CPU.

``torch.jit.trace`` records the forward pass once, on the first batch (one input size, any
batch size afterwards); ``torch.jit.freeze`` inlines the weights and folds the batch norms into
the convolutions, and the graph then runs without Python between its operators. With `default`
on 2 CPU cores that took the forward pass from 39.5 to 27.4 ms per frame and video from 24.3 to
27.4 frames/s end to end; ``torch.compile`` gained nothing on the same path
(``docs/benchmarks.md``, "Video speed").

TorchScript is deprecated upstream in favour of ``torch.compile`` / ``torch.export``; its
deprecation warnings are silenced here, and a model that does not trace, or whose graph does
not reproduce the eager forward pass on the batch it was traced on, runs eagerly instead (the
Predictor says why, in one line on stderr). Under ``autocast`` the trace records the same casts
as the eager pass, so the outputs differ from eager ones only by the order of bf16 arithmetic.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import nn

__all__ = ["GRAPHS", "freeze_forward"]

GRAPHS = ("eager", "frozen", "auto")

# A graph is accepted when, on the batch it was traced on, its probabilities differ from eager
# ones by at most MEAN_TOLERANCE on average and flip the 0.5 threshold on at most FLIP_TOLERANCE
# of the pixels. bf16 reorderings stay far below both (`default` on two Kvasir-SEG frames: 0.09 %
# of pixels flipped, less than bf16 against fp32 flips: 0.2 %); a wrongly traced branch does not.
MEAN_TOLERANCE = 0.01
FLIP_TOLERANCE = 0.01


def freeze_forward(
    model: nn.Module, example: torch.Tensor, bf16: bool, activate: Callable
) -> tuple[Callable | None, str]:
    """``(graph, "")``: ``model``'s forward pass traced on ``example`` and frozen; ``(None,
    why)`` when it does not trace or does not match the eager pass on ``example`` (compared as
    probabilities: ``activate(logits)``)."""
    try:
        with (
            warnings.catch_warnings(),
            torch.inference_mode(),
            torch.autocast(example.device.type, torch.bfloat16, enabled=bf16),
        ):
            warnings.simplefilter("ignore")  # deprecation and tracer warnings
            graph = torch.jit.freeze(torch.jit.trace(model.eval(), example, check_trace=False))
            eager, traced = model(example), graph(example)
    except Exception as exc:  # noqa: BLE001 - any tracing failure means: run eagerly
        return None, f"it does not trace ({type(exc).__name__})"
    if not isinstance(traced, torch.Tensor) or traced.shape != eager.shape:
        return None, "its traced output differs in shape"
    p, q = activate(eager), activate(traced)
    mean = (p - q).abs().mean().item()
    flipped = ((p > 0.5) != (q > 0.5)).float().mean().item()
    if mean > MEAN_TOLERANCE or flipped > FLIP_TOLERANCE:
        return None, (
            f"its frozen graph disagrees with it (mean |Δp| {mean:.3g}, {flipped:.1%} of "
            "pixels flipped)"
        )
    return graph, ""
