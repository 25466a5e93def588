"""MSSG: SPM clustering and proposal selection, grouping losses, GlaS metrics, a tiny run."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from segmentation_models_pytorch.losses import DiceLoss

from colonseg.data.boxes import mask_boxes
from colonseg.data.layouts import find_pairs
from colonseg.data.synthetic import create_gland_image, write_glas_dataset
from colonseg.errors import ColonsegError
from colonseg.losses.grouping import omission_refine, push_loss, variation_loss
from colonseg.methods.mssg.module import supervised_loss
from colonseg.methods.mssg.propose import read_proposal, run_propose
from colonseg.methods.mssg.refine import BoxRefiner, RefineSettings, refined_proposal
from colonseg.methods.mssg.spm import (
    MSSG_HOLE_MAX,
    UNSURE,
    SpmSettings,
    cluster_features,
    mark_unsure,
    proposal_from_border,
    propose,
    select_border,
)
from colonseg.metrics import mean_iou, object_scores


def _two_textures(size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """Left half: dark purple speckles; right half: pale pink, smooth."""
    rng = np.random.default_rng(0)
    image = np.empty((size, size, 3), np.float64)
    half = np.zeros((size, size), bool)
    half[:, size // 2 :] = True
    image[~half] = (90, 40, 120)
    image[half] = (235, 190, 215)
    image[~half] += rng.normal(0, 25, ((~half).sum(), 3))
    image[half] += rng.normal(0, 5, (half.sum(), 3))
    return image.clip(0, 255).astype(np.uint8), half


def test_spm_converges_and_separates_two_textures():
    image, half = _two_textures()
    settings = SpmSettings(scale=1.0, channels=16, iterations=30, clusters=2, seed=0)
    features, argmax, losses = cluster_features(image, settings)
    assert features.shape == (48, 48, 16)
    assert losses[-1] < losses[0]
    result = propose(image, settings)
    # each k-means cluster lies (almost) on one side: purity above 0.9
    purity = max(((result.clusters == 0) == half).mean(), ((result.clusters == 0) == ~half).mean())
    assert purity > 0.9
    # the darker texture is chosen as the border cluster
    assert np.bincount(result.clusters[~half]).argmax() == result.border_cluster


def test_spm_is_deterministic_with_a_seed():
    image, _ = create_gland_image((48, 64), seed=3)
    settings = SpmSettings(scale=1.0, channels=8, iterations=5)
    a, b = propose(image, settings), propose(image, settings)
    assert np.array_equal(a.proposal, b.proposal) and a.losses == b.losses


def test_select_border_takes_the_darkest_large_cluster():
    gray = np.full((20, 20), 200, np.uint8)
    labels = np.zeros((20, 20), np.int32)
    labels[:, :10] = 1  # half the image, mid grey
    gray[:, :10] = 120
    labels[0, 0] = 2  # one pixel, darkest: too small to be the border
    gray[0, 0] = 10
    assert select_border(gray, labels, min_area=0.05).sum() == 199
    assert select_border(gray, labels, min_area=0.0).sum() == 1


def test_proposal_fills_enclosed_interiors_up_to_the_cap():
    border = np.zeros((200, 200), np.uint8)
    cv2.circle(border, (50, 50), 15, 1, 4)  # encloses ~1 % of the image: a small lumen
    cv2.circle(border, (130, 130), 60, 1, 4)  # encloses ~25 %: a large gland
    border[:, 190:] = 1  # a band open to the image's edge encloses nothing
    proposal = proposal_from_border(border.astype(bool), hole_max=1.0)
    assert proposal[50, 50] == 2 and proposal[130, 130] == 2
    assert proposal[50, 65] == 1
    assert proposal[5, 100] == 0 and proposal[10, 184] == 0  # outside every ring
    assert set(np.unique(proposal)) == {0, 1, 2}
    mssg = proposal_from_border(border.astype(bool))  # MSSG's cap: 15,000 px of a GlaS image
    assert mssg[50, 50] == 2 and mssg[130, 130] == 0
    assert MSSG_HOLE_MAX == pytest.approx(15_000 / (775 * 522))


def test_mark_unsure_takes_the_lumen_of_an_open_ring_not_the_open_background():
    proposal = np.zeros((522, 775), np.uint8)
    cv2.circle(proposal, (200, 260), 80, 1, 12)
    proposal[250:270, 260:300] = 0  # a 20-px gap: the lumen is not a hole of the border
    assert proposal_from_border(proposal.astype(bool), hole_max=1.0)[220, 200] != 2
    marked = mark_unsure(proposal, radius=12)
    assert marked[220, 200] == UNSURE  # the lumen
    assert marked[260, 600] == 0 and marked[20, 20] == 0  # far background stays background
    assert np.array_equal(marked == 1, proposal == 1)  # the gland is untouched
    assert (marked == UNSURE).sum() < np.pi * 80**2  # no more than the ring encloses
    assert np.array_equal(mark_unsure(proposal, radius=0), proposal)
    assert mark_unsure(proposal, radius=4)[220, 200] == 0  # too small to bridge 20 px
    # the radius is in pixels of a full GlaS image: half the image, the same lumen
    half = cv2.resize(proposal, (388, 261), interpolation=cv2.INTER_NEAREST)
    assert mark_unsure(half, radius=12)[110, 100] == UNSURE


def test_supervised_loss_ignores_unsure_pixels():
    target = torch.zeros(1, 8, 8)
    target[0, :4] = 1
    known = torch.ones(1, 8, 8, dtype=torch.bool)
    known[0, 6:] = False
    logits = torch.randn(1, 8, 8)
    dice = DiceLoss("binary", ignore_index=UNSURE)
    changed = logits.clone()
    changed[0, 6:] = 50.0  # wildly wrong where nothing is known
    base = supervised_loss(logits, target, known, dice)
    assert supervised_loss(changed, target, known, dice) == pytest.approx(base.item())
    changed[0, 5] = 50.0  # and where background is known: the loss rises
    assert supervised_loss(changed, target, known, dice) > base


def test_grouping_losses_zero_when_satisfied_positive_when_violated():
    proposal = torch.zeros(1, 4, 4, dtype=torch.long)
    proposal[0, :2, :2], proposal[0, :2, 2:] = 1, 2  # border and interior
    gland_dir, bg_dir = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 0.0])
    emb = torch.empty(1, 2, 4, 4)
    emb[0, :, :2] = gland_dir[:, None, None]
    emb[0, :, 2:] = bg_dir[:, None, None]
    assert variation_loss(emb, proposal) == 0
    assert push_loss(emb, proposal > 0, margin=1.0) == 0
    # border and interior embedded apart: variation > 0; gland = background: push > 0
    apart = emb.clone()
    apart[0, :, :2, 2:] = torch.tensor([0.0, 1.0])[:, None, None]
    assert variation_loss(apart, proposal) > 0
    assert push_loss(torch.ones(1, 2, 4, 4) / 2**0.5, proposal > 0) > 0
    # finite and zero with a region missing
    assert variation_loss(emb, torch.zeros_like(proposal)) == 0
    # unsure pixels embedded like the gland: push > 0 unless they are left out of the background
    unsure = emb.clone()
    unsure[0, :, 3] = gland_dir[:, None]
    background = torch.zeros(1, 4, 4, dtype=torch.bool)
    background[0, 2] = True
    assert push_loss(unsure, proposal > 0) > 0
    assert push_loss(unsure, proposal > 0, background=background) == 0


def test_omission_refine_adds_only_confident_similar_pixels_near_the_boundary():
    gland = torch.zeros(1, 10, 10, dtype=torch.bool)
    gland[0, 3:7, 3:7] = True
    emb = F.normalize(torch.randn(1, 4, 10, 10), dim=1)
    emb[0, :, 3:7, 3:7] = F.normalize(torch.ones(4), dim=0)[:, None, None]
    emb[0, :, 2, 4] = F.normalize(torch.ones(4), dim=0)  # like the gland, next to it
    emb[0, :, 2, 5] = -F.normalize(torch.ones(4), dim=0)  # unlike it
    emb[0, :, 0, 0] = F.normalize(torch.ones(4), dim=0)  # like it but far away
    prob = torch.full((1, 10, 10), 0.9)
    out = omission_refine(gland, prob, emb, band=1, threshold=0.7)
    assert out[0, 2, 4] and not out[0, 2, 5] and not out[0, 0, 0]
    assert out[gland].all()
    assert not omission_refine(gland, torch.zeros(1, 10, 10), emb, band=1)[~gland].any()


def test_mean_iou_by_hand():
    # truth: 2 fg pixels, prediction: 3 fg (2 right): IoU fg 2/3, bg (6-1)/... below
    truth = np.array([[1, 1, 0, 0], [0, 0, 0, 0]])
    pred = np.array([[1, 1, 1, 0], [0, 0, 0, 0]])
    matrix = np.array([[5, 1], [0, 2]])  # rows truth, columns prediction
    assert np.array_equal(matrix, np.bincount(truth.ravel() * 2 + pred.ravel()).reshape(2, 2))
    scores = mean_iou(matrix)
    assert scores["iou_fg"] == pytest.approx(2 / 3)
    assert scores["iou_bg"] == pytest.approx(5 / 6)
    assert scores["miou"] == pytest.approx((2 / 3 + 5 / 6) / 2)


def test_object_scores_by_hand():
    instances = np.zeros((20, 40), np.int32)
    instances[2:8, 2:8] = 1  # 36 px, found exactly
    instances[12:18, 20:30] = 2  # 60 px, missed
    pred = np.zeros((20, 40), np.uint8)
    pred[2:8, 2:8] = 1
    pred[2:6, 30:36] = 1  # a false positive
    s = object_scores(pred, instances)
    assert (s["tp"], s["fp"], s["fn"]) == (1, 1, 1)
    # Dice: truth side 36/96 * 1 + 60/96 * 0; predicted side 36/60 * 1 + 24/60 * 0
    assert s["object_dice"] == pytest.approx(0.5 * (36 / 96 + 36 / 60))
    perfect = object_scores(instances > 0, instances)
    assert perfect["object_dice"] == 1 and perfect["object_hausdorff"] == 0


def test_propose_caches_and_recomputes_changed_files(tmp_path):
    root = write_glas_dataset(tmp_path / "glas", {"train": 2}, size=(48, 64))
    pairs = find_pairs(root, split="train", require_masks=False)
    settings = SpmSettings(scale=1.0, channels=8, iterations=3)
    out = tmp_path / "spm"
    assert run_propose(pairs, out, settings, progress=False)["computed"] == 2
    cached = run_propose(pairs, out, settings, progress=False)
    assert cached["computed"] == 0
    manifest = json.loads((out / "spm.json").read_text())["images"]
    spent = np.median([manifest[p.id]["seconds"] for p in pairs])
    assert cached["seconds_per_image"] == pytest.approx(spent)  # the cost, even when cached
    image = cv2.imread(str(pairs[0].image))
    cv2.imwrite(str(pairs[0].image), 255 - image)
    assert run_propose(pairs, out, settings, progress=False)["computed"] == 1
    assert read_proposal(out, "train_1").shape == (48, 64)
    assert (out / "overlays" / "train_1.jpg").is_file()


def test_mask_boxes_and_refined_proposal_by_hand():
    gland = np.zeros((20, 30), bool)
    gland[2:6, 3:9] = True  # 24 px
    gland[10:12, 20:21] = True  # 2 px: below min_area
    boxes = mask_boxes(gland, 0.01)  # 6 px of 600
    assert boxes.tolist() == [[3, 2, 8, 5]]  # inclusive: the last column and row inside
    proposal = np.zeros((20, 30), np.uint8)
    proposal[2, 3:9], proposal[15, 15] = 1, 1  # border inside and outside the refined gland
    out = refined_proposal(proposal, gland)
    assert out[2, 3:9].tolist() == [1] * 6 and out[3:6, 3:9].min() == 2
    assert out[15, 15] == 0 and out[~gland].max() == 0


def test_medsam_refinement_fills_the_lumen_an_open_ring_leaves_out():
    """SPM's failure mode: a gland's dark ring with a gap and its lumen left out. LiteMedSAM,
    prompted with the ring's box, fills the lumen and stays inside the gland."""
    image, labels = create_gland_image((192, 256), seed=0, glands=1)
    truth = labels > 0
    lumen = cv2.erode(truth.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    ring = truth & ~lumen
    gap = int(np.flatnonzero(ring.any(0)).mean())
    ring[:, gap : gap + 4] &= np.arange(192)[:, None] > 96
    glands = BoxRefiner(RefineSettings(min_area=0.001)).glands(image, ring)
    assert (glands & lumen).sum() > 0.75 * lumen.sum()
    assert (glands & ~truth).sum() < 0.02 * glands.sum()
    nothing = BoxRefiner(RefineSettings()).glands(image, np.zeros_like(truth))
    assert not nothing.any()


def test_refine_settings_refuse_an_unknown_backbone():
    with pytest.raises(ColonsegError, match="refine.backbone 'sam3'"):
        RefineSettings(backbone="sam3")


def test_glas_splits_by_name(tmp_path):
    root = write_glas_dataset(tmp_path / "glas")
    assert [len(find_pairs(root, split=s)) for s in ("train", "testA", "testB", "test")] == [
        4, 2, 1, 3,
    ]  # fmt: skip


def test_mssg_run_trains_saves_and_reports_miou(tmp_path):
    from colonseg.engine.config import load_config
    from colonseg.engine.train import run_train
    from colonseg.methods.mssg.method import refined_dir

    root = write_glas_dataset(tmp_path / "glas")
    cfg = load_config(
        "mssg/glas_medsam",
        [
            f"data.path={root}",
            f"out_dir={tmp_path / 'runs'}",
            "name=tiny",
            "data.size=[48,64]",
            "data.batch_size=2",
            "data.val_fraction=0.25",
            "data.unsure_radius=12",
            "data.test_splits=[test]",
            "spm.iterations=3",
            "spm.channels=8",
            "model.encoder=test_efficientnet",
            "model.pretrained=false",
            "trainer.max_epochs=2",
            "trainer.accelerator=cpu",
            "trainer.rounds=2",
            "loss.omission_start=1",
        ],
    )
    result = run_train(cfg)
    run = tmp_path / "runs" / "tiny"
    summary = json.loads((run / "test" / "summary.json").read_text())
    stats = summary["glas:test"]
    assert 0 <= stats["miou"] <= 1 and stats["n"] == 3
    assert {"object_f1", "object_dice", "object_hausdorff"} <= set(stats)
    baselines = json.loads((run / "test" / "baselines.json").read_text())
    assert set(baselines["glas:test"]) == {
        "spm_proposals", "spm_medsam_refined", "kim_kanezaki_argmax",
    }  # fmt: skip
    manifest = json.loads((refined_dir(cfg) / "refine.json").read_text())
    assert manifest["settings"]["backbone"] == "litemedsam" and len(manifest["images"]) == 7
    unsure = baselines["glas:train (pseudo-masks)"]["unsure"]
    assert 0 <= unsure["annotated_gland"] <= 1 and 0 <= unsure["fraction_of_pixels"] < 1
    assert list((run / "test" / "snapshots").glob("*.jpg"))
    for r in (1, 2):  # self-training: round 2 learns round 1's glands
        assert (run / f"round_{r}" / "curves.png").is_file()
        assert (run / f"round_{r}" / "model" / "weights.safetensors").is_file()
    assert set(np.unique(read_proposal(run / "round_2", "train_1"))) <= {0, 1, 2}
    config = json.loads((result["model_dir"] / "config.json").read_text())
    assert config["class_names"] == ["gland"]
    assert "litemedsam, a foundation model" in config["provenance"]["method"]
    again = run_train(load_config(run / "config.yaml", ["test.only=true"]))
    assert again["summary"]["glas:test"]["miou"] == pytest.approx(stats["miou"])
