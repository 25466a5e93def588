from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from colonseg.config import ALIASES, CONFIG_DIR
from colonseg.data.io import read_image, read_mask
from colonseg.data.layouts import detect_layout, find_pairs
from colonseg.engine.config import load_config
from colonseg.errors import ColonsegError
from colonseg.methods import METHODS
from colonseg.methods.supervised import SupervisedModule
from colonseg.models import create_model
from tests.conftest import shared_dataset

SHIPPED = sorted(CONFIG_DIR.rglob("*.yaml"))
FIXTURES = Path(__file__).parent / "fixtures" / "old_configs"


def _keys(node, prefix=""):
    for k, v in node.items():
        yield f"{prefix}{k}"
        if isinstance(v, dict):
            yield from _keys(v, f"{prefix}{k}.")


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(CONFIG_DIR)))
def test_shipped_configs_validate_and_build(path):
    """Every shipped config, in every sub-folder: in the one vocabulary (no upper-case key, no
    alias), valid for its method, and its model builds."""
    raw = yaml.safe_load(path.read_text())
    keys = list(_keys(raw))
    assert not [k for k in keys if k != k.lower()], "upper-case keys"
    assert not [k for k in keys if k in ALIASES], "keys that are aliases"
    cfg = load_config(path)
    assert cfg.method in METHODS.names() and cfg.model.name and cfg.name and cfg.out_dir
    assert {"max_epochs", "checkpoint_minutes", "devices"} <= set(cfg.trainer)
    assert {"only", "checkpoint", "after_training"} <= set(cfg.test)
    if cfg.method == "supervised":
        net = create_model(cfg.model.name, encoder=cfg.model.encoder, classes=cfg.model.classes,
                           pretrained=False, **cfg.model.kwargs)  # fmt: skip
        SupervisedModule(net, loss=cfg.loss.name, deep_supervision=cfg.loss.deep_supervision)


@pytest.mark.parametrize("method", ["supervised", "mapseg", "medsam_box", "mssg"])
def test_run_folders_written_before_the_redesign_still_load(method):
    """``config.yaml`` files of older run folders (their own keys, MAPSeg's upper-case ones)
    load through the alias table onto today's names, with their values."""
    old = yaml.safe_load((FIXTURES / f"{method}.yaml").read_text())
    cfg = load_config(FIXTURES / f"{method}.yaml")
    assert cfg.method == method
    if method == "mapseg":
        assert cfg.name == old["EXP_NAME"] and cfg.out_dir == old["RESULT_DIR"]
        assert cfg.trainer.max_epochs == old["TRAIN"]["epochs"] and cfg.seed == old["TRAIN"]["seed"]
        assert cfg.data.image_size == old["DATASET"]["resize"]
        assert cfg.model.memory_size == old["MEMORY"]["nb_memory_sample"]
        assert cfg.loss.focal == old["TRAIN"]["focal_weight"] and cfg.test.tta == old["TEST"]["tta"]
    elif method == "supervised":
        assert cfg.loss.name == old["optim"]["loss"] and cfg.seed == old["trainer"]["seed"]
        assert cfg.loss.deep_supervision == old["optim"]["deep_supervision"]
    elif method == "mssg":
        assert cfg.model.name == old["model"]["arch"] and cfg.optim.lr == old["trainer"]["lr"]
    else:
        assert cfg.data.snapshots == old["trainer"]["snapshots"]
        assert cfg.trainer.checkpoint_every == old["trainer"]["checkpoint_every"]


def test_config_errors():
    with pytest.raises(ColonsegError, match="Did you mean 'unet'"):
        load_config("polyp_unet_lite0", ["model.name=unte"])
    with pytest.raises(ColonsegError, match="Did you mean 'polyp_unet_lite0'"):
        load_config("polyp_unet_lite")
    with pytest.raises(ColonsegError, match="could not be converted to Integer"):
        load_config("polyp_unet_lite0", ["trainer.max_epochs=four"])
    with pytest.raises(ColonsegError, match=r"override 'data.train_scales=\[1,2': not a valid"):
        load_config("polyp_unet_lite0", ["data.train_scales=[1,2"])


def test_overrides_replace_rather_than_merge():
    """Switching the U-Net config to PraNet needs the U-Net's decoder options gone."""
    cfg = load_config(
        "polyp_unet_lite0",
        ["model.name=pranet", "model.kwargs={}", "data.train_scales=[0.75,1,1.25]"],
    )
    assert cfg.model.name == "pranet" and dict(cfg.model.kwargs) == {}
    assert list(cfg.data.train_scales) == [0.75, 1.0, 1.25]
    cfg = load_config("polyp_unet_lite0", ["model.kwargs.decoder_channels=[64,32,16,8,8]"])
    assert list(cfg.model.kwargs.decoder_channels) == [64, 32, 16, 8, 8]


@pytest.mark.parametrize(
    "name, layout, split, n",
    [
        ("kvasir-seg", "kvasir_seg", "pranet_test", 100),
        ("cvc-clinicdb", "folder", "pranet_test", 62),
        ("bkai-neopolyp", "bkai", "test", 200),
        ("glas", "glas", None, 165),
    ],
)
def test_shared_datasets_read(name, layout, split, n):
    root = shared_dataset(name)
    assert detect_layout(root) == layout
    pairs = find_pairs(root, split=split)
    assert len(pairs) == n
    image, mask = read_image(pairs[0].image), read_mask(pairs[0].mask)
    assert image.shape[:2] == mask.shape and image.shape[2] == 3 and mask.max() == 1
