"""The region-aware refiner: the network, its training through the engine on out-of-fold base
probabilities, and its use as the ``refine=`` post-processing step."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from colonseg.cli.main import app
from colonseg.data.io import image_digest
from colonseg.data.synthetic import create_disc_image, write_neopolyp_dataset
from colonseg.engine.checkpoint import ModelMeta, load_pretrained, save_pretrained
from colonseg.engine.config import load_config
from colonseg.engine.predict import Predictor
from colonseg.engine.train import run_train
from colonseg.errors import ColonsegError
from colonseg.models import create_model
from colonseg.models.refiner import RegionRefiner, region_pool


def _probs(h: int = 32, w: int = 32, seed: int = 0) -> np.ndarray:
    """Random class probabilities ``(3, h, w)`` with two confident polyp blobs."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 0.3, (3, h, w))
    logits[0] += 3
    logits[1, 4:12, 4:12] += 8  # region 1: neoplastic
    logits[2, 20:28, 18:30] += 8  # region 2: non-neoplastic
    e = np.exp(logits - logits.max(0))
    return (e / e.sum(0)).astype(np.float32)


def _base_model(folder, trained_on=None):
    """A tiny untrained three-class U-Net checkpoint (a stand-in base model)."""
    kwargs = {"encoder": "test_efficientnet", "classes": 3}
    net = create_model("unet", pretrained=False, **kwargs)
    meta = ModelMeta(arch="unet", init_kwargs=kwargs, size=(64, 64), labels="neopolyp",
                     class_names=["neoplastic", "non-neoplastic"],
                     trained_on=trained_on or {})  # fmt: skip
    return save_pretrained(net, meta, folder)


def test_untrained_refiner_is_the_identity():
    refiner = RegionRefiner(classes=3).eval()
    probs = _probs()
    image = np.random.default_rng(1).integers(0, 255, (48, 40, 3), np.uint8)
    np.testing.assert_allclose(refiner.refine(probs, image), probs, atol=1e-5)
    assert 20_000 <= sum(p.numel() for p in refiner.parameters()) <= 80_000


def test_refined_output_is_a_probability_map():
    torch.manual_seed(0)
    refiner = RegionRefiner(classes=3, width=8)
    for p in refiner.head.parameters():  # a trained-looking head: the output moves
        torch.nn.init.normal_(p, std=0.5)
    probs = _probs()
    image = np.random.default_rng(1).integers(0, 255, (32, 32, 3), np.uint8)
    out = refiner.refine(probs, image)
    assert out.shape == probs.shape and out.dtype == np.float32
    assert np.abs(out - probs).max() > 1e-2
    assert (out >= 0).all() and np.allclose(out.sum(0), 1.0, atol=1e-5)


def test_region_pooling_gives_one_value_per_region():
    probs = _probs()
    pooled = region_pool(probs)
    fg = (1 - probs[0]) >= 0.5
    assert (pooled[:, ~fg] == 0).all()
    for box in ((slice(4, 12), slice(4, 12)), (slice(20, 28), slice(18, 30))):
        region = pooled[(slice(None), *box)]
        for c in range(3):  # constant over the region, the region's mean
            assert np.ptp(region[c]) < 1e-6
            np.testing.assert_allclose(region[c, 0, 0], probs[(c, *box)].mean(), rtol=1e-5)
    assert pooled[1, 5, 5] > pooled[2, 5, 5] and pooled[2, 22, 20] > pooled[1, 22, 20]
    assert (region_pool(np.stack([np.ones((8, 8)), np.zeros((8, 8))])) == 0).all()


def _refine_cfg(tmp_path, bases, *extra):
    folds = [write_neopolyp_dataset(tmp_path / f"fold{k}", n=4, size=64, seed=10 * k)
             for k in range(2)]  # fmt: skip
    return load_config(
        "refiner_neopolyp",
        [f"out_dir={tmp_path / 'runs'}", "name=ref", "data.image_size=64",
         "data.batch_size=4", f"data.train=[{{path: {folds[0]}}}, {{path: {folds[1]}}}]",
         f"data.val=[{{path: {folds[1]}}}]", f"refine.base_models=[{bases[0]}, {bases[1]}]",
         f"refine.val_base={bases[0]}", f"data.cache_dir={tmp_path / 'cache'}",
         "trainer.max_epochs=1", "trainer.accelerator=cpu", "trainer.progress_bar=false",
         "trainer.logger=false", "test.after_training=false", *extra],
    ), folds  # fmt: skip


def test_trains_through_the_engine_and_applies_as_postprocessing(tmp_path):
    bases = [_base_model(tmp_path / f"base{k}") for k in range(2)]
    cfg, folds = _refine_cfg(tmp_path, bases)
    result = run_train(cfg)
    model_dir = result["model_dir"]
    net, meta = load_pretrained(model_dir)
    assert meta.arch == "region_refiner" and isinstance(net, RegionRefiner)
    assert "val/mdice" in result["metrics"] and "val/base_mdice" in result["metrics"]
    assert json.loads((model_dir / "config.json").read_text())["provenance"]["base_models"]
    assert (tmp_path / "cache" / "refine").is_dir()  # the base probabilities are cached

    image, _ = create_disc_image(80, seed=3, classes=2)
    plain = Predictor.from_pretrained(bases[0], device="cpu", postprocess="none")
    refined = Predictor.from_pretrained(bases[0], device="cpu", postprocess=f"refine={model_dir}")
    assert refined.refiner() is refined.refiner()  # loaded once
    x = refined.predict_torch(refined.preprocess([image]))[0].cpu().numpy()
    want = net.refine(x, image)
    out, base = refined.predict(image), plain.predict(image)
    assert out.probs.shape == base.probs.shape == (3, 80, 80)
    np.testing.assert_allclose(out.probs.sum(0), 1.0, atol=1e-4)
    assert not np.allclose(out.probs, base.probs)  # the refiner was applied
    assert want.shape == (3, 64, 64)

    result = CliRunner().invoke(app, ["evaluate", "--model", str(bases[0]), "--data",
                                      str(folds[1]), "--out", str(tmp_path / "eval"),
                                      "--postprocess", f"refine={model_dir}"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"post-processing refine={model_dir}" in result.output
    assert json.loads((tmp_path / "eval" / "summary.json").read_text())


def test_in_fold_base_model_is_refused(tmp_path):
    folds = [write_neopolyp_dataset(tmp_path / f"fold{k}", n=4, size=64, seed=10 * k)
             for k in range(2)]  # fmt: skip
    seen = {"fold1": sorted(image_digest(p) for p in (folds[1] / "train" / "train").iterdir())}
    bases = [_base_model(tmp_path / "base0"), _base_model(tmp_path / "base1", trained_on=seen)]
    cfg, _ = _refine_cfg(tmp_path, bases)
    with pytest.raises(ColonsegError, match=r"refine.base_models\[1\].*not out-of-fold") as err:
        run_train(cfg)
    assert "\n" not in str(err.value)


def test_synthetic_run_from_the_command_line(tmp_path):
    result = CliRunner().invoke(
        app, ["train", "refiner_neopolyp", f"out_dir={tmp_path}", "trainer.accelerator=cpu",
              "trainer.progress_bar=false", "--synthetic", "--quick"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    model = tmp_path / "refiner_neopolyp-quick" / "model"
    assert (model / "config.json").is_file()
    # the printed evaluate command applies the refiner to a model instead of loading it as one
    assert f"--postprocess refine={model}" in result.output


def test_binary_model_or_wrong_refiner_is_a_one_line_error(tmp_path):
    binary = create_model("unet", encoder="test_efficientnet", pretrained=False)
    bmeta = ModelMeta(arch="unet", init_kwargs={"encoder": "test_efficientnet", "classes": 1})
    refiner = save_pretrained(
        RegionRefiner(classes=3, width=8),
        ModelMeta(arch="region_refiner", init_kwargs={"classes": 3, "width": 8},
                  labels="neopolyp"), tmp_path / "refiner",
    )  # fmt: skip
    with pytest.raises(ColonsegError, match="this unet is binary"):
        Predictor(binary, bmeta, device="cpu", postprocess=f"refine={refiner}")
    four = save_pretrained(RegionRefiner(classes=4, width=8),
                           ModelMeta(arch="region_refiner", init_kwargs={"classes": 4, "width": 8}),
                           tmp_path / "four")  # fmt: skip
    three = _base_model(tmp_path / "base")
    with pytest.raises(ColonsegError, match="refines 4 classes, the model has 3"):
        Predictor.from_pretrained(three, device="cpu", postprocess=f"refine={four}")
    with pytest.raises(ColonsegError, match="not a region refiner"):
        Predictor.from_pretrained(three, device="cpu", postprocess=f"refine={three}")
    with pytest.raises(ColonsegError, match="is a post-processing step"):
        Predictor.from_pretrained(refiner, device="cpu")


def test_a_checkpoints_default_may_name_zoo_refiners_only(tmp_path):
    base = _base_model(tmp_path / "base")
    refiner = save_pretrained(
        RegionRefiner(classes=3, width=8),
        ModelMeta(arch="region_refiner", init_kwargs={"classes": 3, "width": 8}), tmp_path / "r"
    )  # fmt: skip
    config = json.loads((base / "config.json").read_text())
    config["postprocess"] = f"refine={refiner}"
    (base / "config.json").write_text(json.dumps(config))
    with pytest.raises(ColonsegError, match="names a file .*pass it yourself with --postprocess"):
        Predictor.from_pretrained(base, device="cpu")
    assert Predictor.from_pretrained(base, device="cpu", postprocess=f"refine={refiner}").post


def test_refiner_width_is_bounded_in_config_json(tmp_path):
    folder = save_pretrained(
        RegionRefiner(classes=3, width=8),
        ModelMeta(arch="region_refiner", init_kwargs={"classes": 3, "width": 8}), tmp_path / "r"
    )  # fmt: skip
    config = json.loads((folder / "config.json").read_text())
    config["init_kwargs"]["width"] = 4000
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ColonsegError, match=r"init_kwargs.width = 4000 \(1 to 256\)"):
        load_pretrained(folder)


def test_a_few_duplicates_of_training_frames_are_left_out_more_are_refused():
    from colonseg.methods.refine.data import check_out_of_fold

    digests = [f"{i:016x}" for i in range(100)]
    assert check_out_of_fold({"a": [digests[7]]}, digests, "base") == [7]  # 1 %: left out
    assert check_out_of_fold({"a": ["ffff"]}, digests, "base") == []
    with pytest.raises(ColonsegError, match="base: the base model trained on 3 of its 100"):
        check_out_of_fold({"a": digests[:3]}, digests, "base")
