from __future__ import annotations

import pytest

from colonseg.config import CONFIG_DIR
from colonseg.data.io import read_image, read_mask
from colonseg.data.layouts import detect_layout, find_pairs
from colonseg.engine.config import load_config
from colonseg.errors import ColonsegError
from tests.conftest import shared_dataset


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_configs_validate(path):
    from colonseg.methods.supervised import SupervisedModule
    from colonseg.models import create_model

    cfg = load_config(path)
    assert cfg.data.train and cfg.model.name
    net = create_model(
        cfg.model.name,
        encoder=cfg.model.encoder,
        classes=cfg.model.classes,
        pretrained=False,
        **cfg.model.kwargs,
    )
    SupervisedModule(net, loss=cfg.loss.name, deep_supervision=cfg.loss.deep_supervision)


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
