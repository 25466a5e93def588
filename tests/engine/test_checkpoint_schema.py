"""A checkpoint is untrusted input: its config.json and weight header are checked before
anything heavy runs (issue 31: crafted checkpoints end in one line, fast, in bounded memory)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from colonseg.engine.checkpoint import ModelMeta, load_pretrained, save_pretrained
from colonseg.errors import ColonsegError
from colonseg.models import create_model


def _saved(folder: Path, arch: str = "unet", **init) -> Path:
    init = {"encoder": "test_efficientnet", **init}
    net = create_model(arch, **{**init, "pretrained": False})
    return save_pretrained(net, ModelMeta(arch, init), folder)


def _edit_config(folder: Path, edit) -> None:
    path = folder / "config.json"
    d = json.loads(path.read_text())
    edit(d)
    path.write_text(json.dumps(d))


def _refused_fast(folder: Path, match: str, **kw) -> None:
    start = time.perf_counter()
    with pytest.raises(ColonsegError, match=match) as info:
        load_pretrained(folder, **kw)
    assert time.perf_counter() - start < 1.0
    assert "\n" not in str(info.value) and str(folder) in str(info.value)


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda d: d["init_kwargs"].update(encoder="hf-hub:org/x"), "not an encoder of the local"),
        (lambda d: d["init_kwargs"].update(encoder="timm/resnet18"), "not an encoder of the local"),
        (lambda d: d["init_kwargs"].update(decoder_channels=[10**6] * 5), "out of range"),
        (lambda d: d["init_kwargs"].update(classes=100000), "out of range"),
        (lambda d: d.update(arch="os.system"), "not a colonseg architecture"),
        (lambda d: d.update(loader="pickle"), "unknown keys 'loader'"),
        (lambda d: d["preprocessing"].update(size=[100000, 100000]), "preprocessing.size"),
        (lambda d: d["preprocessing"].update(std=[0, 0, 0]), "preprocessing.std"),
        (lambda d: d.update(threshold=7), "threshold"),
        (lambda d: d.update(init_kwargs=[1, 2]), "wrong type"),
    ],
)
def test_crafted_config_json_is_refused_in_one_line_before_building(tmp_path, edit, match):
    folder = _saved(tmp_path / "m")
    _edit_config(folder, edit)
    _refused_fast(folder, match)


def test_a_sam_checkpoint_path_stored_in_config_json_is_never_opened(tmp_path):
    folder = tmp_path / "m"
    net = create_model("automedsam", pretrained=False)
    init = {"backbone": "litemedsam", "sam_checkpoint": str(tmp_path / "theirs.pth")}
    save_pretrained(net, ModelMeta("automedsam", init, packaged=["sam"]), folder)
    _refused_fast(folder, "names a file .*pass it with --sam-checkpoint")
    # a file the user names is the one opened (here: one that does not exist)
    mine = tmp_path / "mine.pth"
    with pytest.raises(ColonsegError, match="mine.pth: LiteMedSAM checkpoint not found"):
        load_pretrained(folder, files={"sam_checkpoint": mine})


def test_encoder_weights_named_in_config_json_are_not_needed_and_not_opened(tmp_path):
    folder = _saved(tmp_path / "m", arch="attention_unet")
    _edit_config(folder, lambda d: d["init_kwargs"].update(encoder_weights="/no/such/file.pth"))
    net, meta = load_pretrained(folder)  # the weight file holds the trained encoder
    assert meta.init_kwargs["encoder_weights"] == "/no/such/file.pth"
    assert sum(p.abs().sum() for p in net.parameters()) > 0


def test_weight_shapes_are_checked_from_the_header_before_any_tensor_is_read(tmp_path, monkeypatch):
    import colonseg.engine.checkpoint as checkpoint

    folder = _saved(tmp_path / "m")
    path = folder / "weights.safetensors"
    state = load_file(path)
    key = next(k for k in state if k.endswith("weight") and state[k].ndim == 4)
    state[key] = torch.zeros(2, 2, 1, 1)
    save_file(state, path)

    def no_read(*args, **kwargs):
        raise AssertionError("tensors were read before their shapes were checked")

    monkeypatch.setattr(checkpoint, "read_state_dict", no_read)
    _refused_fast(folder, rf"{key} is \[2, 2, 1, 1\], the model's is")
    del state[key]
    save_file(state, path)
    _refused_fast(folder, f"missing {key}")


def _png_stream(side: int) -> np.ndarray:
    return cv2.imencode(".png", np.zeros((side, side, 3), np.uint8))[1]


def test_mapseg_memory_png_bomb_is_refused_from_its_header(tmp_path):
    from colonseg.models.mapseg import MemSegNet

    kw = {"encoder": "test_efficientnet", "size": 64, "memory_size": 2, "width": 16}
    net = MemSegNet(pretrained=False, **kw).eval()
    net.fill_memory(np.random.default_rng(0).integers(0, 255, (2, 64, 64, 3), np.uint8))
    folder = save_pretrained(net, ModelMeta("mapseg", kw, size=(64, 64)), tmp_path / "m")
    path = folder / "weights.safetensors"
    state = load_file(path)
    streams = [_png_stream(64), _png_stream(8192)]  # 8192² RGB: 200 MB decoded from ~200 kB
    state["memory.encoded"] = torch.from_numpy(np.concatenate(streams))
    state["memory.lengths"] = torch.tensor([len(s) for s in streams])
    save_file(state, path)
    _refused_fast(folder, r"memory frame 1: its PNG header says 8192×8192.* 64×64 8-bit RGB")
    state["memory.lengths"] = torch.tensor([len(streams[0]), len(streams[1]) + 5])
    save_file(state, path)
    _refused_fast(folder, "do not match their lengths")
    # the same check guards decoding in the model itself
    with pytest.raises(ColonsegError, match="memory frame 1"):
        net.memory.encoded = state["memory.encoded"]
        net.memory.lengths.copy_(torch.tensor([len(s) for s in streams]))
        net.memory.frames()


def test_oversized_config_json_is_refused_unread(tmp_path):
    folder = _saved(tmp_path / "m")
    with (folder / "config.json").open("a") as f:
        f.write(" " * (16 * 2**20 + 1))
    _refused_fast(folder, "too large for a config")


def test_every_shipped_model_passes_the_checks():
    from colonseg.engine.checkpoint import ZOO_DIR, _read_config, list_zoo

    for name in list_zoo():
        _read_config(ZOO_DIR / name)
