from __future__ import annotations

import math

import numpy as np
import py_sod_metrics as sodm
import pytest

from colonseg.metrics import SODMeter, binary_metrics, hd95, mean_dice_256

P = np.array([[1, 1], [0, 0]])
T = np.array([[1, 0], [1, 0]])


def test_hand_computed():
    m = binary_metrics(P, T)  # tp=1 fp=1 fn=1 tn=1
    assert m["dice"] == pytest.approx(0.5)
    assert m["iou"] == pytest.approx(1 / 3)
    assert m["precision"] == m["recall"] == m["accuracy"] == m["specificity"] == pytest.approx(0.5)


@pytest.mark.parametrize(
    "pred, target, dice, precision, recall",
    [
        (np.zeros((2, 2)), np.zeros((2, 2)), 1.0, 1.0, 1.0),  # empty & empty: perfect
        (np.eye(2), np.zeros((2, 2)), 0.0, 0.0, 0.0),  # false positive on an empty image
        (np.zeros((2, 2)), np.eye(2), 0.0, 0.0, 0.0),  # everything missed
        (np.ones((2, 2)), np.ones((2, 2)), 1.0, 1.0, 1.0),  # all foreground
    ],
)
def test_empty_mask_rule(pred, target, dice, precision, recall):
    m = binary_metrics(pred, target)
    assert (m["dice"], m["precision"], m["recall"]) == (dice, precision, recall)
    assert m["iou"] == dice


def test_mean_dice_256_matches_brute_force():
    rng = np.random.default_rng(0)
    prob = rng.random((16, 16))
    target = rng.random((16, 16)) > 0.6
    q = np.round(prob * 255)
    brute = np.mean([binary_metrics(q >= t, target)["dice"] for t in range(256)])
    assert mean_dice_256(prob, target) == pytest.approx(brute)


def test_hd95():
    a = np.zeros((20, 20), bool)
    a[5:10, 5:10] = True
    b = np.roll(a, 3, axis=1)
    assert hd95(a, a) == 0.0
    assert hd95(a, b) == pytest.approx(3.0)
    assert hd95(np.zeros_like(a), np.zeros_like(a)) == 0.0
    assert math.isnan(hd95(a, np.zeros_like(a)))


def test_sod_metrics_equal_pysodmetrics():
    rng = np.random.default_rng(1)
    meter = SODMeter()
    refs = [sodm.Smeasure(), sodm.Emeasure(), sodm.WeightedFmeasure(), sodm.MAE()]
    for i in range(3):
        prob = rng.random((24, 30))
        target = np.zeros((24, 30), np.uint8)
        target[4 + i : 14, 6:20] = 1
        meter.update(prob, target)
        pred = np.round(prob * 255).astype(np.uint8)
        for r in refs:
            r.step(pred=pred, gt=target * 255)
    got = meter.compute()
    assert got["s_measure"] == pytest.approx(refs[0].get_results()["sm"])
    curve = refs[1].get_results()["em"]["curve"]
    assert got["e_measure_mean"] == pytest.approx(curve.mean())
    assert got["e_measure_max"] == pytest.approx(curve.max())
    assert got["wfm"] == pytest.approx(refs[2].get_results()["wfm"])
    assert got["mae"] == pytest.approx(refs[3].get_results()["mae"])


def test_pixel_auroc_matches_the_rank_statistic():
    from scipy.stats import rankdata

    from colonseg.metrics import AUROCMeter

    rng = np.random.default_rng(0)
    target = rng.random((2, 40, 40)) < 0.2
    prob = np.clip(rng.normal(0.4, 0.15, target.shape) + 0.2 * target, 0, 1)
    meter = AUROCMeter()
    for p, t in zip(prob, target, strict=True):
        meter.update(p, t)
    pos, neg = prob[target], prob[~target]
    exact = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (
        pos.size * neg.size
    )
    assert abs(meter.compute() - exact) <= meter.error_bound() < 1e-4
    # scores spread like a model's (logits ~ N(0, 2)): the bound is small and holds
    big = rng.random((3, 150, 150)) < 0.2
    scores = (1 / (1 + np.exp(-(rng.normal(0, 2, big.shape) + 1.5 * big)))).astype(np.float32)
    meter = AUROCMeter()
    for p, t in zip(scores, big, strict=True):
        meter.update(p, t)
    ranks = rankdata(np.concatenate([scores[big], scores[~big]]))
    n_pos, n_neg = int(big.sum()), int((~big).sum())
    exact = (ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    assert abs(meter.compute() - exact) <= meter.error_bound() < 1e-4
    # exact ties at 0 and 1 (a field-of-view cut, saturated maps) count one half, as ranks do
    tied = AUROCMeter()
    tied.update(np.array([0.0, 0.0, 1.0, 1.0, 0.5]), np.array([1, 0, 1, 0, 1]))
    assert tied.compute() == pytest.approx((0.5 + 0 + 1 + 0.5 + 1 + 0) / 6)  # pair by pair
    assert tied.error_bound() == 0
    perfect = AUROCMeter()
    perfect.update(target[0].astype(float), target[0])
    assert perfect.compute() == 1.0
    empty = AUROCMeter()
    empty.update(prob[0], np.zeros_like(target[0]))
    assert np.isnan(empty.compute())


def _aupro_brute_force(probs, targets, max_fpr=0.3):
    """Exact PRO/FPR at every distinct score, regions labelled per image (4-connected)."""
    from scipy import ndimage

    regions, negatives = [], []
    for prob, target in zip(probs, targets, strict=True):
        labels, n = ndimage.label(target)
        regions += [prob[labels == r] for r in range(1, n + 1)]
        negatives.append(prob[target == 0])
    negatives = np.concatenate(negatives)
    xs, ys = [0.0], [0.0]
    for t in np.unique(np.concatenate([negatives, *regions]))[::-1]:
        xs.append(float((negatives >= t).mean()))
        ys.append(float(np.mean([(r >= t).mean() for r in regions])))
    xs, ys = np.array(xs), np.array(ys)
    keep = xs <= max_fpr
    x, y = xs[keep], ys[keep]
    if x[-1] < max_fpr:
        j = int(keep.sum())
        last = np.interp(max_fpr, xs[j - 1 : j + 1], ys[j - 1 : j + 1])
        x, y = np.append(x, max_fpr), np.append(y, last)
    return float(np.trapezoid(y, x) / max_fpr)


def test_aupro_by_hand_and_against_brute_force():
    from colonseg.metrics import AUPROMeter

    # two regions, only the first one scored: PRO jumps to 0.5 at FPR 0, reaches 1 at FPR 1
    target = np.zeros((20, 20), np.uint8)
    target[2:6, 2:6] = 1
    target[10:18, 10:18] = 1  # four times larger, but each region counts once
    prob = np.zeros((20, 20))
    prob[2:6, 2:6] = 1.0
    meter = AUPROMeter()
    meter.update(prob, target)
    assert meter.compute() == pytest.approx((0.5 + 0.65) / 2)  # mean of PRO over FPR in [0, 0.3]

    rng = np.random.default_rng(0)
    probs, targets = [], []
    for _ in range(3):
        t = (rng.random((24, 24)) < 0.08).astype(np.uint8)
        t[4:10, 4:12] = 1
        probs.append(np.round(np.clip(t * 0.3 + rng.random((24, 24)) * 0.8, 0, 1), 2) * 0.999)
        targets.append(t)
    meter = AUPROMeter()
    for p, t in zip(probs, targets, strict=True):
        meter.update(p, t)
    assert meter.compute() == pytest.approx(_aupro_brute_force(probs, targets), abs=1e-9)
    assert math.isnan(AUPROMeter().compute())


def test_compute_dice_on_arrays_and_tensor_batches():
    import torch

    from colonseg.metrics import compute_dice

    a = np.zeros((4, 4), np.uint8)
    a[:2] = 1
    b = np.zeros((4, 4), np.uint8)
    b[:1] = 1
    assert compute_dice(a, b) == pytest.approx(2 * 4 / (8 + 4))
    batch = torch.from_numpy(np.stack([a, a]))[:, None]
    target = torch.from_numpy(np.stack([b, np.zeros_like(b)]))[:, None]
    assert compute_dice(batch, target) == pytest.approx((2 / 3 + 0.0) / 2)
    with pytest.raises(ValueError, match="differ in shape"):
        compute_dice(a, b[:2])


def test_pooled_accuracy_and_f1_equal_scikit_learn_on_every_flattened_pixel():
    from sklearn.metrics import accuracy_score, f1_score

    from colonseg.metrics import ConfusionMeter, pooled_binary_scores

    rng = np.random.default_rng(0)
    meter, truths, preds = ConfusionMeter(2), [], []
    for shape in ((20, 30), (50, 10), (8, 8)):  # images of different sizes weigh by pixels
        truth = (rng.random(shape) < 0.3).astype(np.uint8)
        pred = (rng.random(shape) < 0.4).astype(np.uint8)
        meter.update(pred, truth)
        truths.append(truth.ravel())
        preds.append(pred.ravel())
    scores = pooled_binary_scores(meter.matrix)
    y, p = np.concatenate(truths), np.concatenate(preds)
    assert scores["accuracy_pooled"] == pytest.approx(accuracy_score(y, p), abs=1e-12)
    assert scores["f1_pooled"] == pytest.approx(f1_score(y, p), abs=1e-12)
