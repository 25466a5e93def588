from __future__ import annotations

import pytest
import torch

from colonseg.errors import ColonsegError
from colonseg.losses import LOSSES, create_loss

BIG = 20.0  # logits that make sigmoid ~ 0 or 1


@pytest.mark.parametrize(
    "logits, target, expected",
    [
        ([BIG, BIG, -BIG, -BIG], [1, 1, 0, 0], 0.0),  # perfect
        ([BIG, BIG, BIG, BIG], [1, 1, 0, 0], 1 - 2 * 2 / (4 + 2)),  # 2 FP: 1 - 4/6
        ([-BIG, -BIG, -BIG, -BIG], [1, 1, 0, 0], 1.0),  # all missed
    ],
)
def test_dice_hand_computed(logits, target, expected):
    pred = torch.tensor(logits).view(1, 1, 2, 2)
    gt = torch.tensor(target, dtype=torch.float32).view(1, 1, 2, 2)
    assert create_loss("dice")(pred, gt).item() == pytest.approx(expected, abs=1e-3)


def test_bce_dice_is_sum():
    pred = torch.tensor([0.3, -1.0, 2.0, 0.0]).view(1, 1, 2, 2)
    gt = torch.tensor([1.0, 0, 1, 0]).view(1, 1, 2, 2)
    total = create_loss("bce_dice")(pred, gt)
    assert total.item() == pytest.approx(
        (create_loss("bce")(pred, gt) + create_loss("dice")(pred, gt)).item()
    )


def test_ce_dice_multiclass():
    pred = torch.full((1, 3, 2, 2), -BIG)
    target = torch.tensor([[0, 1], [2, 1]]).view(1, 1, 2, 2)
    pred.scatter_(1, target.long(), BIG)
    assert create_loss("ce_dice", classes=3)(pred, target).item() == pytest.approx(0.0, abs=1e-3)


def test_unknown_loss():
    with pytest.raises(ValueError, match="Did you mean 'bce_dice'"):
        create_loss("bce_dic")
    assert LOSSES.names() == ["bce", "bce_dice", "bce_dice_image", "ce_dice", "dice", "structure"]


def test_structure_loss_weights_the_boundary():
    target = torch.zeros(1, 1, 64, 64)
    target[..., 16:48, 16:48] = 1
    loss = create_loss("structure")
    perfect = torch.where(target > 0, BIG, -BIG)
    assert loss(perfect, target).item() == pytest.approx(0.0, abs=1e-3)
    # the same number of wrong pixels costs more on the boundary than deep inside the object
    edge, centre = perfect.clone(), perfect.clone()
    edge[..., 16, 16:32] = -BIG
    centre[..., 32, 24:40] = -BIG
    assert loss(edge, target) > loss(centre, target) > 0


def test_structure_loss_is_pranets_formula():
    """PraNet's loss as its paper writes it (one 31×31 mean pool), on random masks and logits."""
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(0)
    target = (torch.rand(3, 1, 40, 48, generator=gen) > 0.6).float()
    pred = torch.randn(3, 1, 40, 48, generator=gen) * 3
    weight = 1 + 5 * (F.avg_pool2d(target, 31, stride=1, padding=15) - target).abs()
    bce = F.binary_cross_entropy_with_logits(pred, target, reduction="none")
    wbce = (weight * bce).sum((2, 3)) / weight.sum((2, 3))
    prob = torch.sigmoid(pred)
    inter, union = (prob * target * weight).sum((2, 3)), ((prob + target) * weight).sum((2, 3))
    expected = (wbce + 1 - (inter + 1) / (union - inter + 1)).mean()
    torch.testing.assert_close(create_loss("structure")(pred, target), expected)


def test_deep_supervision_sums_weighted_outputs():
    from colonseg.losses import DeepSupervisionLoss

    gt = torch.tensor([1.0, 0, 1, 0]).view(1, 1, 2, 2)
    a, b = torch.randn(1, 1, 2, 2), torch.randn(1, 1, 2, 2)
    base = create_loss("bce")
    ds = DeepSupervisionLoss(base, [1.0, 0.5])
    assert ds([a, b], gt).item() == pytest.approx((base(a, gt) + 0.5 * base(b, gt)).item())
    with pytest.raises(ColonsegError, match="has 1 values; the model has 2 outputs"):
        DeepSupervisionLoss(base, [1.0])([a, b], gt)


def test_image_dice_weighs_a_missed_small_object_like_a_large_one():
    # image 0: a large object found exactly; image 1: a 1-pixel object missed entirely
    target = torch.zeros(2, 1, 8, 8)
    target[0, :, :, :4] = 1
    target[1, :, 0, 0] = 1
    pred = torch.where(target > 0, BIG, -BIG)
    pred[1, :, 0, 0] = -BIG
    per_image = create_loss("bce_dice_image")(pred, target) - create_loss("bce")(pred, target)
    pooled = create_loss("dice")(pred, target)
    assert per_image.item() == pytest.approx((0 + (1 - 1 / 2)) / 2, abs=1e-3)  # smooth = 1
    assert pooled.item() == pytest.approx(1 - 2 * 32 / 65, abs=1e-3)  # the miss nearly vanishes
    empty = torch.zeros(1, 1, 4, 4)
    assert create_loss("bce_dice_image")(torch.full_like(empty, -BIG), empty).item() < 1e-3


def test_ce_dice_class_weights_count_a_rare_class_more():
    torch.manual_seed(0)
    target = torch.zeros(2, 1, 16, 16)
    target[:, :, 4:8, 4:8] = 2  # a small region of the rare class, predicted as background
    logits = torch.zeros(2, 3, 16, 16)
    logits[:, 0] = 3.0
    plain = create_loss("ce_dice", classes=3)(logits, target)
    weighted = create_loss("ce_dice", classes=3, class_weights=[1, 1, 10])(logits, target)
    assert weighted > plain + 0.5  # the missed rare pixels weigh 10x in the cross-entropy
    with pytest.raises(ColonsegError, match="one positive weight per class"):
        create_loss("ce_dice", classes=3, class_weights=[1, 2])
    from colonseg.methods.supervised.module import SupervisedModule
    from colonseg.models import create_model

    net = create_model("unet", encoder="test_efficientnet", classes=1, pretrained=False)
    with pytest.raises(ColonsegError, match="only ce_dice weighs classes"):
        SupervisedModule(net, loss="bce_dice", class_weights=[1, 2])
