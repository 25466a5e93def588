from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data

from colonseg.models import MODELS, create_model, list_models
from colonseg.models.encoders import load_encoder_state_dict


@pytest.mark.parametrize("name", MODELS.names())
def test_forward_backward(name, tiny_batch):
    model = create_model(name, encoder="test_efficientnet", pretrained=False, classes=1)
    out = model(tiny_batch["image"])
    assert out.shape == (2, 1, 64, 64) and torch.isfinite(out).all()
    out.mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_list_and_did_you_mean():
    assert {"unet", "unetplusplus", "deeplabv3plus"} <= set(list_models())
    with pytest.raises(ValueError, match="Did you mean 'unet'"):
        create_model("unte")


def test_offline_lite0_weights_classify_the_cat():
    import timm

    net = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    net.load_state_dict(load_encoder_state_dict("tf_efficientnet_lite0"))
    x = torch.from_numpy(data.chelsea().astype(np.float32) / 255).permute(2, 0, 1)[None]
    x = (F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True) - 0.5) / 0.5
    with torch.no_grad():
        top = net(x).argmax(1).item()
    assert 281 <= top <= 285  # ImageNet cat classes


def test_pretrained_unet_carries_imagenet_weights():
    model = create_model("unet", encoder="tf_efficientnet_lite0", pretrained=True)
    ref = load_encoder_state_dict("tf_efficientnet_lite0")
    torch.testing.assert_close(model.encoder.model.conv_stem.weight, ref["conv_stem.weight"])


def test_no_offline_weights_is_a_clear_error():
    with pytest.raises(ValueError, match="no offline ImageNet weights for encoder 'resnet18'"):
        create_model("unet", encoder="resnet18", pretrained=True)


def test_user_weight_file(tmp_path):
    import timm

    src = timm.create_model("test_efficientnet", pretrained=False).state_dict()
    torch.save(src, tmp_path / "enc.pth")
    model = create_model(
        "unet",
        encoder="test_efficientnet",
        pretrained=False,
        encoder_weights=str(tmp_path / "enc.pth"),
    )
    torch.testing.assert_close(model.encoder.model.conv_stem.weight, src["conv_stem.weight"])
