import math

import pytest
import torch

from colonseg.losses.box_prior import (
    BoxPriorLoss,
    box_prompt_loss,
    emptiness_loss,
    log_barrier,
    size_loss,
    tightness_loss,
)

BOX = [torch.tensor([[10.0, 20.0, 39.0, 44.0]])]  # 30 wide, 25 high, inclusive


def logits_of(mask: torch.Tensor) -> torch.Tensor:
    """A confident prediction of a binary (H, W) mask."""
    return (mask.float() * 2 - 1)[None, None] * 30.0


def box_mask(x0=10, y0=20, x1=39, y1=44, size=64) -> torch.Tensor:
    m = torch.zeros(size, size)
    m[y0 : y1 + 1, x0 : x1 + 1] = 1
    return m


def ellipse_in_box() -> torch.Tensor:
    """An ellipse touching all four sides of BOX: tight, ~79 % of the box."""
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    cx, cy, rx, ry = 24.5, 32.0, 15.0, 12.5
    return (((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0).float()


def test_log_barrier_is_continuous_and_finite_for_all_t():
    for t in (1.0, 5.0, 50.0, 1e4):
        edge = -1 / t**2
        z = torch.tensor([edge - 1e-9, edge + 1e-9])
        a, b = log_barrier(z, t)
        assert abs(float(a - b)) < 1e-4
        wide = log_barrier(torch.tensor([-1e6, -1.0, 0.0, 1.0, 1e6]), t)
        assert torch.isfinite(wide).all()
        assert float(wide[-1]) > float(wide[-2]) > float(wide[2])  # grows with the violation


def test_emptiness_zero_inside_box_positive_outside():
    assert float(emptiness_loss(logits_of(ellipse_in_box()), BOX)) < 1e-6
    spill = ellipse_in_box()
    spill[0:5, 0:5] = 1
    assert float(emptiness_loss(logits_of(spill), BOX)) > 1e-3


def test_tightness_zero_when_every_band_is_hit_positive_when_not():
    assert float(tightness_loss(logits_of(ellipse_in_box()), BOX)) == 0.0
    half = ellipse_in_box()
    half[:, 25:] = 0  # the right half of the box has empty columns
    assert float(tightness_loss(logits_of(half), BOX)) > 1.0
    empty = torch.zeros(64, 64)
    for t in (1.0, 5.0, 1e3):
        value = tightness_loss(logits_of(empty), BOX, t=t)
        assert math.isfinite(float(value)) and float(value) > 0


def test_size_zero_within_margins_positive_outside():
    assert float(size_loss(logits_of(ellipse_in_box()), BOX)) == 0.0  # 79 % in [50, 90] %
    assert float(size_loss(logits_of(box_mask()), BOX)) > 0  # 100 % > 90 %
    small = torch.zeros(64, 64)
    small[30:34, 20:24] = 1  # 2 % < 50 %
    assert float(size_loss(logits_of(small), BOX)) > 0
    for t in (1.0, 5.0, 1e3):
        assert math.isfinite(float(size_loss(logits_of(torch.zeros(64, 64)), BOX, t=t)))


def test_box_prompt_loss_prefers_the_target():
    target = ellipse_in_box()[None, None]
    good = box_prompt_loss(logits_of(ellipse_in_box()), target)
    bad = box_prompt_loss(logits_of(box_mask()), target)
    assert float(good) < 0.01 < float(bad)


def test_combined_loss_weights_and_gradients():
    loss = BoxPriorLoss(prompt=1.0)
    logits = torch.zeros(1, 1, 64, 64, requires_grad=True)
    total, parts = loss(logits, BOX, ellipse_in_box()[None, None])
    assert set(parts) == {"empty", "tight", "size", "prompt"}
    expected = parts["empty"] + 1e-4 * parts["tight"] + 1e-2 * parts["size"] + parts["prompt"]
    assert float(total) == pytest.approx(float(expected), rel=1e-5)
    total.backward()
    assert logits.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="box-prompted"):
        loss(logits, BOX)
