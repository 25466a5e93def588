from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data

from colonseg.models import MODELS, create_model, list_models
from colonseg.models.encoders import load_encoder_state_dict

# the segmentation networks (region_refiner also takes probabilities: tests/test_refiner.py)
SEGMENTERS = [name for name in MODELS.names() if name != "region_refiner"]


def _outputs(model, x):
    """Every output a loss can see: the auxiliary ones too, for deeply supervised models."""
    return model.forward_with_aux(x) if hasattr(model, "forward_with_aux") else [model(x)]


@pytest.mark.parametrize("name", SEGMENTERS)
def test_forward_backward(name, tiny_batch):
    model = create_model(name, encoder="test_efficientnet", pretrained=False, classes=1)
    outs = _outputs(model, tiny_batch["image"])
    for out in outs:
        assert out.shape == (2, 1, 64, 64) and torch.isfinite(out).all()
    sum(o.mean() for o in outs).backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, f"parameters outside the graph: {no_grad[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", SEGMENTERS)
def test_save_load_round_trip(name, tmp_path):
    from colonseg.engine.checkpoint import ModelMeta, load_pretrained, save_pretrained

    kwargs = {"encoder": "test_efficientnet", "classes": 1}
    net = create_model(name, pretrained=False, **kwargs).eval()
    save_pretrained(net, ModelMeta(arch=name, init_kwargs=kwargs), tmp_path / name)
    loaded, meta = load_pretrained(tmp_path / name)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(net(x), loaded(x))
    assert meta.arch == name


@pytest.mark.parametrize("name", ["attention_unet", "emcad", "pranet"])
def test_hand_written_models_take_offline_weights(name):
    model = create_model(name, encoder="tf_efficientnet_lite0", pretrained=True)
    ref = load_encoder_state_dict("tf_efficientnet_lite0")
    torch.testing.assert_close(model.encoder.body.conv_stem.weight, ref["conv_stem.weight"])


def test_main_output_is_first_aux_output(tiny_batch):
    for name in ("pranet", "emcad"):
        model = create_model(name, encoder="test_efficientnet", pretrained=False).eval()
        with torch.no_grad():
            torch.testing.assert_close(
                model(tiny_batch["image"]), model.forward_with_aux(tiny_batch["image"])[0]
            )


def test_attention_maps_are_heat_maps(tiny_batch):
    model = create_model("attention_unet", encoder="test_efficientnet", pretrained=False).eval()
    with torch.no_grad():
        logits, maps = model.forward_with_attention(tiny_batch["image"])
        torch.testing.assert_close(logits, model(tiny_batch["image"]))
    assert set(maps) == {"spatial_attention"} | {f"gate_stride{s}" for s in (16, 8, 4, 2)}
    for m in maps.values():
        assert m.shape == (2, 1, 64, 64) and 0 <= m.min() and m.max() <= 1


def test_option_of_another_model_is_a_clear_error():
    with pytest.raises(ValueError, match="'pranet' does not take the option 'decoder_channels'"):
        create_model("pranet", pretrained=False, decoder_channels=[16])


def test_encoder_without_the_strides_is_a_clear_error():
    with pytest.raises(ValueError, match="has feature strides"):
        create_model("emcad", encoder="test_vit", pretrained=False)


def test_list_and_did_you_mean():
    assert list_models() == [
        "attention_unet",
        "automedsam",
        "deeplabv3plus",
        "emcad",
        "ensemble",
        "mapseg",
        "pranet",
        "pspnet",
        "region_refiner",
        "unet",
        "unetplusplus",
    ]
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


@pytest.mark.parametrize(
    "name, encoder",
    [
        ("deeplabv3plus", "resnet50"),  # the NeoPolyp project's encoders
        ("deeplabv3plus", "regnetx_320"),
        ("pranet", "res2net50_26w_4s"),  # the papers' encoders
        ("emcad", "pvt_v2_b2"),
    ],
)
def test_reference_encoders(name, encoder):
    """The encoders of the reference projects build (their weights come from the user)."""
    model = create_model(name, encoder=encoder, pretrained=False).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 64)).shape == (1, 1, 64, 64)


def test_attention_unet_maps_have_the_input_size_lie_in_0_1_and_follow_the_input():
    torch.manual_seed(0)
    net = create_model("attention_unet", encoder="test_efficientnet", pretrained=False).eval()
    x = torch.rand(2, 3, 64, 96)
    x[1] = 0.1  # a dark frame with one bright disk, against noise
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(96), indexing="ij")
    x[1, :, (yy - 30) ** 2 + (xx - 40) ** 2 < 200] = 0.9
    with torch.no_grad():
        logits, maps = net.forward_with_attention(x)
        torch.testing.assert_close(logits, net(x))  # the maps are the forward pass's own
    names = ["spatial_attention", *(f"gate_stride{s}" for s in (16, 8, 4, 2))]
    assert sorted(maps) == sorted(names)
    for name, m in maps.items():
        assert m.shape == (2, 1, 64, 96), name
        assert 0 <= m.min() and m.max() <= 1, name
        # two different images get different maps (a constant map would not)
        assert not torch.allclose(m[0], m[1]), name
        assert m[1].std() > 0, name


def test_attention_unet_drop_block_acts_in_training_only_and_adds_no_weights():
    torch.manual_seed(0)
    plain = create_model("attention_unet", encoder="test_efficientnet", pretrained=False)
    dropped = create_model(
        "attention_unet", encoder="test_efficientnet", pretrained=False, drop_block=0.2
    )
    dropped.load_state_dict(plain.state_dict(), strict=True)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(plain.eval()(x), dropped.eval()(x))
        assert (plain.train()(x) - dropped.train()(x)).abs().max() > 1e-3


@pytest.mark.parametrize("name", ["pranet", "emcad"])
def test_deep_supervised_models_train_on_three_classes_with_ce_dice(name, tiny_batch):
    from colonseg.losses import DeepSupervisionLoss, create_loss

    model = create_model(name, encoder="test_efficientnet", pretrained=False, classes=3)
    outs = model.forward_with_aux(tiny_batch["image"])
    assert len(outs) >= 4 and all(o.shape == (2, 3, 64, 64) for o in outs)
    target = tiny_batch["mask"] * 2  # classes 0 and 2
    loss = DeepSupervisionLoss(create_loss("ce_dice", classes=3))(outs, target)
    assert torch.isfinite(loss)
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, f"parameters outside the graph: {no_grad[:5]}"
    x = tiny_batch["image"]
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), model.forward_with_aux(x)[0])


def test_binary_pranet_is_still_the_shipped_pranet():
    """``classes=1`` builds exactly the modules of the shipped ``polyp_pranet_lite0`` weights."""
    from pathlib import Path

    from safetensors import safe_open

    import colonseg

    weights = Path(colonseg.__file__).parent / "weights/polyp_pranet_lite0/weights.safetensors"
    with safe_open(str(weights), "pt") as f:
        shapes = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
    net = create_model("pranet", encoder="tf_efficientnet_lite0", pretrained=False, classes=1)
    assert {k: list(v.shape) for k, v in net.state_dict().items()} == shapes
    three = create_model("pranet", encoder="tf_efficientnet_lite0", pretrained=False, classes=3)
    extra = set(three.state_dict()) - set(shapes)
    assert extra and all(k.startswith(("cls32.", "cls16.", "cls8.")) for k in extra)
    assert set(shapes) <= set(three.state_dict())  # binary weights fit a 3-class PraNet


def test_three_class_pranet_factorises_the_polyp_map(tiny_batch):
    """softmax = [1 - sigmoid(f), sigmoid(f) * softmax(c)]: the polyp map is the binary one."""
    from colonseg.models.pranet import class_logits

    f, c = torch.randn(2, 1, 8, 8), torch.randn(2, 2, 4, 4)
    probs = class_logits(f, c).softmax(1)
    torch.testing.assert_close(probs[:, :1], 1 - f.sigmoid())
    c_up = F.interpolate(c, size=(8, 8), mode="bilinear", align_corners=False)
    torch.testing.assert_close(probs[:, 1:], f.sigmoid() * c_up.softmax(1))
    torch.testing.assert_close(class_logits(f, None).softmax(1)[:, 1:], f.sigmoid())

    binary = create_model("pranet", encoder="test_efficientnet", pretrained=False).eval()
    three = create_model("pranet", encoder="test_efficientnet", pretrained=False, classes=3)
    missing, unexpected = three.load_state_dict(binary.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("cls") for k in missing)
    x = tiny_batch["image"]
    with torch.no_grad():
        pairs = zip(binary._side_outputs(x), three.eval()._side_outputs(x), strict=True)
        for one, multi in pairs:  # logsumexp of [f + log_softmax(c)] over the classes is f
            assert multi.shape[1] == 3 and (multi[:, :1] == 0).all()
            torch.testing.assert_close(multi[:, 1:].logsumexp(1, keepdim=True), one)
