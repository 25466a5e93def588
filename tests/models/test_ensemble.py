from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors import safe_open

from colonseg.engine.checkpoint import ModelMeta, load_pretrained, save_pretrained
from colonseg.engine.ensemble import combine_checkpoints
from colonseg.engine.predict import Predictor
from colonseg.errors import ColonsegError
from colonseg.models import create_model
from colonseg.models.ensemble import Ensemble
from tests.conftest import random_frames


def _unet(seed: int, classes: int = 1) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("unet", encoder="test_efficientnet", classes=classes, pretrained=False)


def _checkpoint(path, seed: int, size=(64, 64), half: bool = False, **meta) -> str:
    meta = ModelMeta("unet", {"encoder": "test_efficientnet"}, size=size, **meta)
    save_pretrained(_unet(seed), meta, path, half=half)
    return str(path)


def test_ensemble_averages_member_probabilities_binary_and_multiclass():
    x = torch.rand(2, 3, 64, 64)
    a, b = _unet(0).eval(), _unet(1).eval()
    with torch.no_grad():
        pa, pb = a(x).sigmoid(), b(x).sigmoid()
        assert (pa - pb).abs().max() > 1e-3  # the members disagree: the test can fail
        both = Ensemble([a, b])(x)
        torch.testing.assert_close(both.sigmoid(), (pa + pb) / 2, atol=1e-5, rtol=0)
        c, d = _unet(2, classes=3).eval(), _unet(3, classes=3).eval()
        three = Ensemble([c, d])(x).softmax(1)
        torch.testing.assert_close(
            three, (c(x).softmax(1) + d(x).softmax(1)) / 2, atol=1e-5, rtol=0
        )
    with pytest.raises(ColonsegError, match="at least two members"):
        Ensemble([a])


def test_combined_checkpoint_predicts_the_mean_of_its_members(tmp_path):
    first = _checkpoint(tmp_path / "a", 0, half=True, threshold=0.4, postprocess="fill_holes")
    second = _checkpoint(tmp_path / "b", 1)
    out = combine_checkpoints([first, second], tmp_path / "both")
    with safe_open(str(out / "weights.safetensors"), "pt") as f:  # each member as it was stored
        dtypes = {f.get_tensor(k).dtype for k in f.keys() if k.endswith("weight")}
        assert f.get_tensor("members.0.segmentation_head.0.weight").dtype == torch.float16
        assert f.get_tensor("members.1.segmentation_head.0.weight").dtype == torch.float32
    assert dtypes == {torch.float16, torch.float32}
    net, meta = load_pretrained(out)
    assert meta.arch == "ensemble" and isinstance(net, Ensemble) and len(net.members) == 2
    assert meta.threshold == 0.4 and meta.postprocess == "fill_holes"  # the first one's
    assert [m["model"] for m in meta.provenance["ensemble_of"]] == [first, second]
    image = np.random.default_rng(0).integers(0, 256, (48, 80, 3), np.uint8)
    probs = [
        Predictor.from_pretrained(m, precision="fp32").predict(image).prob for m in (first, second)
    ]
    mean = Predictor.from_pretrained(out, precision="fp32").predict(image).prob
    np.testing.assert_allclose(mean, (probs[0] + probs[1]) / 2, atol=1e-4)


def test_combining_refuses_one_model_and_models_that_see_differently(tmp_path):
    first = _checkpoint(tmp_path / "a", 0)
    with pytest.raises(ColonsegError, match="at least two models"):
        combine_checkpoints([first], tmp_path / "x")
    other = _checkpoint(tmp_path / "b", 1, size=(96, 96))
    with pytest.raises(ColonsegError, match=r"b: its size \(96, 96\) differs"):
        combine_checkpoints([first, other], tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_ensemble_of_mapseg_members_keeps_their_packaged_encoders_out_of_the_file(tmp_path):
    kw = {"encoder": "tf_efficientnet_lite0", "size": 64, "memory_size": 2, "width": 8}
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        net = create_model("mapseg", pretrained=True, **kw).eval()
        net.fill_memory(random_frames(2, seed=seed))
        meta = ModelMeta(arch="mapseg", init_kwargs=kw, size=(64, 64), packaged=["encoder"])
        paths.append(str(save_pretrained(net, meta, tmp_path / f"m{seed}")))
    out = combine_checkpoints(paths, tmp_path / "both", half=True)
    with safe_open(str(out / "weights.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert any(k.startswith("members.1.memory") for k in keys)
    assert not any(".encoder." in k for k in keys)
    net, meta = load_pretrained(out)
    assert meta.packaged == ["members.0.encoder", "members.1.encoder"]
    members = [load_pretrained(p)[0] for p in paths]
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        expected = (members[0](x).sigmoid() + members[1](x).sigmoid()) / 2
        torch.testing.assert_close(net(x).sigmoid(), expected, atol=2e-3, rtol=0)  # fp16 file
