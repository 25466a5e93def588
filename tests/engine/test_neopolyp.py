"""Three-class NeoPolyp end to end on a generated dataset in the Kaggle layout."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from colonseg.data.io import read_image, write_png
from colonseg.data.labels import get_scheme, read_label
from colonseg.data.rle import rle_decode
from colonseg.data.sources import DataSource
from colonseg.data.synthetic import create_disc_image, write_neopolyp_dataset
from colonseg.engine.config import load_config
from colonseg.engine.evaluate import run_evaluate
from colonseg.engine.predict import Predictor
from colonseg.engine.predict_files import run_predict
from colonseg.engine.train import run_train
from colonseg.errors import ColonsegError
from colonseg.metrics import ConfusionMeter


@pytest.fixture
def bkai_dir(tmp_path):
    return write_neopolyp_dataset(tmp_path / "bkai", n=8, size=64)


def _cfg(bkai_dir, tmp_path, *extra):
    return load_config(
        "neopolyp_unet_lite0",
        [
            "name=neo",
            f"out_dir={tmp_path / 'runs'}",
            "model.encoder=test_efficientnet",
            "model.pretrained=false",
            "model.init_from=null",
            "model.kwargs={}",
            f"data.train=[{{path: {bkai_dir}}}]",
            f"data.val=[{{path: {bkai_dir}}}]",
            "data.image_size=64",
            "data.batch_size=4",
            "trainer.max_epochs=1",
            "trainer.accelerator=cpu",
            "trainer.progress_bar=false",
            *extra,
        ],
    )


def test_config_checks_classes_against_the_label_scheme(bkai_dir, tmp_path):
    with pytest.raises(ColonsegError, match="data.labels=neopolyp needs model.classes=3"):
        _cfg(bkai_dir, tmp_path, "model.classes=1")
    with pytest.raises(ColonsegError, match="the bce_dice loss is binary"):
        run_train(_cfg(bkai_dir, tmp_path, "loss.name=bce_dice"))


def test_three_class_model_trains_predicts_and_evaluates(bkai_dir, tmp_path):
    result = run_train(_cfg(bkai_dir, tmp_path))
    for key in ("val/dice", "val/dice_neo", "val/dice_non"):
        assert 0.0 <= result["metrics"][key] <= 1.0, key
    config = json.loads((result["model_dir"] / "config.json").read_text())
    assert config["labels"] == "neopolyp"
    assert config["class_names"] == ["neoplastic", "non-neoplastic"]

    predictor = Predictor.from_pretrained(result["model_dir"], device="cpu")
    image = read_image(next((bkai_dir / "train" / "train").iterdir()))
    out = predictor.predict(image)
    assert out.probs.shape == (3, 64, 64)
    np.testing.assert_allclose(out.probs.sum(0), 1.0, atol=1e-4)
    np.testing.assert_allclose(out.prob, 1 - out.probs[0], atol=1e-6)
    np.testing.assert_array_equal(out.mask, out.classes > 0)

    written = run_predict(
        predictor, [bkai_dir / "train" / "train"], tmp_path / "pred", rle_csv=tmp_path / "s.csv"
    )
    assert len(written["written"]) == 8
    rgb = read_image(tmp_path / "pred" / "masks" / "case_0.png")
    scheme = get_scheme("neopolyp")
    colours = {tuple(c) for c in rgb.reshape(-1, 3).tolist()}
    assert colours <= set(scheme.colours), "masks are written in the Kaggle colour code"
    rows = list(csv.reader((tmp_path / "s.csv").open()))
    assert rows[0] == ["Id", "Expected"] and len(rows) == 1 + 2 * 8
    by_id = dict(rows[1:])
    classes = read_label(tmp_path / "pred" / "masks" / "case_0.png", scheme)
    np.testing.assert_array_equal(rle_decode(by_id["case_0_0"], (64, 64)), classes == 1)
    np.testing.assert_array_equal(rle_decode(by_id["case_0_1"], (64, 64)), classes == 2)

    summary = run_evaluate(predictor, [DataSource(str(bkai_dir))], tmp_path / "ev", progress=False)
    s = summary["bkai"]
    for key in ("dice_seg", "iou_seg", "dice_neo", "dice_non", "iou_neo", "iou_non"):
        assert 0.0 <= s[key] <= 1.0
    assert np.allclose(np.sum(s["confusion"], axis=1), 1.0)
    assert "dice_neo" in (tmp_path / "ev" / "table.md").read_text()
    assert "dice_neo" in (tmp_path / "ev" / "per_case.csv").read_text().splitlines()[0]


def test_perfect_three_class_prediction_scores_one(bkai_dir, tmp_path):
    class Oracle(Predictor):
        def predict(self, image):
            from colonseg.engine.predict import Prediction

            truth = self.truth[image.tobytes()]
            probs = np.stack([truth == c for c in range(3)]).astype(np.float32)
            return Prediction(1 - probs[0], (truth > 0).astype(np.uint8), truth, probs)

    from colonseg.data.layouts import find_pairs
    from colonseg.engine.checkpoint import ModelMeta
    from colonseg.models import create_model

    meta = ModelMeta("unet", {"encoder": "test_efficientnet", "classes": 3}, labels="neopolyp")
    net = create_model("unet", encoder="test_efficientnet", classes=3, pretrained=False)
    oracle = Oracle(net, meta, "cpu")
    scheme = get_scheme("neopolyp")
    oracle.truth = {
        read_image(p.image).tobytes(): read_label(p.mask, scheme) for p in find_pairs(bkai_dir)
    }
    s = run_evaluate(oracle, [DataSource(str(bkai_dir))], tmp_path / "ev", progress=False)["bkai"]
    assert s["dice_seg"] == s["dice_neo"] == s["dice_non"] == 1.0
    np.testing.assert_allclose(np.diag(s["confusion"]), 1.0)


def test_confusion_meter_pools_pixels_over_images():
    meter = ConfusionMeter(3)
    meter.update(np.array([[1, 1], [0, 2]]), np.array([[1, 2], [0, 2]]))
    meter.update(np.array([[0, 0], [0, 0]]), np.array([[1, 0], [0, 0]]))
    scores = meter.class_scores(("bg", "neo", "non"))
    assert scores["dice_neo"] == pytest.approx(2 * 1 / (2 * 1 + 1 + 1))  # tp 1, fp 1, fn 1
    assert scores["dice_non"] == pytest.approx(2 * 1 / (2 * 1 + 0 + 1))
    assert scores["iou_non"] == pytest.approx(0.5)
    assert scores["dice_seg"] == pytest.approx(2 * 3 / (2 * 3 + 0 + 1))  # polyp tp 3, fn 1
    assert meter.matrix.sum() == 8


def test_a_three_class_model_on_binary_masks_gets_binary_metrics(bkai_dir, tmp_path):
    from colonseg.data.labels import scheme_for_masks
    from colonseg.data.synthetic import write_folder_dataset
    from colonseg.engine.checkpoint import ModelMeta
    from colonseg.models import create_model

    neo = get_scheme("neopolyp")
    binary_dir = write_folder_dataset(tmp_path / "binary", n=3, size=64)
    empty = tmp_path / "empty.png"
    write_png(empty, np.zeros((64, 64), np.uint8))
    binary_masks = [empty, *sorted((binary_dir / "masks").iterdir())]
    assert scheme_for_masks(neo, binary_masks).name == "binary"  # the empty mask decides nothing
    assert scheme_for_masks(neo, sorted((bkai_dir / "train_gt" / "train_gt").iterdir())) == neo
    net = create_model("unet", encoder="test_efficientnet", classes=3, pretrained=False)
    meta = ModelMeta("unet", {"encoder": "test_efficientnet", "classes": 3}, labels="neopolyp")
    predictor = Predictor(net, meta, device="cpu")
    s = run_evaluate(predictor, [DataSource(str(binary_dir))], tmp_path / "ev", progress=False)
    assert "dice" in s["binary"] and "dice_neo" not in s["binary"]


def test_kaggle_dice_is_dice_per_image_and_class_with_empty_pairs_scoring_one():
    from colonseg.metrics import kaggle_dice

    truth = np.array([[1, 0], [0, 2]])
    # neo: predicted 2, true 1, overlap 1 → 2/3; non: predicted none of its 1 pixel → 0
    assert kaggle_dice(np.array([[1, 1], [0, 0]]), truth) == pytest.approx((2 / 3 + 0) / 2)
    assert kaggle_dice(truth, truth) == 1.0
    empty = np.zeros((2, 2), int)
    assert kaggle_dice(empty, empty) == 1.0  # both classes absent and not predicted
    assert kaggle_dice(np.array([[2, 0], [0, 0]]), empty) == 0.5  # a false class costs its row
    assert kaggle_dice(np.array([[1, 1], [1, 1]]), np.array([[1, 1], [1, 0]])) == pytest.approx(
        (2 * 3 / 7 + 1) / 2
    )
    with pytest.raises(ValueError, match="differ in shape"):
        kaggle_dice(empty, np.zeros((3, 2), int))


def test_deep_supervision_auto_follows_the_model(tiny_batch):
    from colonseg.methods.supervised.module import SupervisedModule
    from colonseg.models import create_model

    masks = tiny_batch["mask"] * 2
    for name, expected in (("pranet", True), ("emcad", True), ("unet", False)):
        net = create_model(name, encoder="test_efficientnet", pretrained=False, classes=3)
        module = SupervisedModule(net, loss="ce_dice", classes=3, deep_supervision="auto")
        assert module.hparams.deep_supervision is expected
        assert (module.ds_loss is not None) is expected
        loss, logits = module._loss(tiny_batch["image"], masks)
        assert torch.isfinite(loss) and logits.shape == (2, 3, 64, 64)


def test_recipe_rejects_an_unknown_deep_supervision_value():
    with pytest.raises(ColonsegError, match="loss.deep_supervision must be true, false or auto"):
        load_config("neopolyp_recipe", ["loss.deep_supervision=sometimes"])


def test_neopolyp_augmentation_keeps_class_labels():
    from colonseg.data.transforms import augment, create_augmentation

    image, classes = create_disc_image(64, seed=3, classes=2)
    transform = create_augmentation("neopolyp")
    changed = 0
    for seed in range(12):
        out = augment(transform, seed=seed, image=image, mask=classes)
        assert out["image"].shape == image.shape and set(np.unique(out["mask"])) <= {0, 1, 2}
        changed += not np.array_equal(out["image"], image)
    assert changed >= 6  # not the identity (each transform is random, p <= 0.5)


@pytest.mark.parametrize(
    "name", ["unet", "unetplusplus", "deeplabv3plus", "attention_unet", "pranet", "emcad"]
)
def test_recipe_trains_every_architecture_on_three_classes(name, tmp_path):
    """``neopolyp_recipe model.name=X --synthetic``: trains, predicts three classes, writes the
    Kaggle RLE CSV and is scored with the Kaggle metric."""
    cfg = load_config(
        "neopolyp_recipe",
        [
            f"model.name={name}",
            f"out_dir={tmp_path / 'runs'}",
            "model.encoder=test_efficientnet",
            "model.pretrained=false",
            "data.image_size=64",
            "data.batch_size=8",
            "trainer.max_epochs=1",
            "trainer.accelerator=cpu",
            "trainer.progress_bar=false",
            "test.after_training=false",
        ],
    )
    result = run_train(cfg, synthetic=True)
    assert 0.0 <= result["metrics"]["val/dice_neo"] <= 1.0
    predictor = Predictor.from_pretrained(result["model_dir"], device="cpu")
    val = result["run_dir"] / "synthetic_data" / "val"
    images = val / "train" / "train"
    out = predictor.predict(read_image(next(images.iterdir())))
    assert out.probs.shape == (3, 64, 64) and out.classes.max() <= 2

    written = run_predict(predictor, [images], tmp_path / "pred", rle_csv=tmp_path / "s.csv")
    assert len(written["written"]) == 4
    rows = dict(list(csv.reader((tmp_path / "s.csv").open()))[1:])
    assert len(rows) == 2 * 4
    scheme = get_scheme("neopolyp")
    for i in range(4):
        classes = read_label(tmp_path / "pred" / "masks" / f"case_{i}.png", scheme)
        for k in (1, 2):
            np.testing.assert_array_equal(rle_decode(rows[f"case_{i}_{k - 1}"], (64, 64)),
                                          classes == k)  # fmt: skip

    s = run_evaluate(predictor, [DataSource(str(val))], tmp_path / "ev", progress=False)["val"]
    assert 0.0 <= s["kaggle_dice"] <= 1.0
    per_case = list(csv.DictReader((tmp_path / "ev" / "per_case.csv").open()))
    mean = np.mean([float(r["kaggle_dice"]) for r in per_case])
    assert s["kaggle_dice"] == pytest.approx(mean, abs=1e-5)
