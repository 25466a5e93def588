from __future__ import annotations

import numpy as np
import pytest
import torch

from colonseg.models.mapseg import MemoryBank, MemSegNet
from tests.conftest import random_frames


def test_memory_lookup_picks_the_nearest_item_and_returns_its_squared_difference():
    bank = MemoryBank(3, [(2, 2, 2), (1, 1, 1)])
    items = [torch.stack([torch.full((2, 2, 2), v) for v in (0.0, 1.0, 5.0)]),
             torch.stack([torch.full((1, 1, 1), v) for v in (0.0, 1.0, 5.0)])]  # fmt: skip
    bank.fill(items)
    query = [torch.full((2, 2, 2, 2), 0.0), torch.full((2, 1, 1, 1), 0.0)]
    query[0][1], query[1][1] = 4.2, 4.2  # the second input is nearest to item 2 (value 5)
    diffs, nearest = bank(query)
    assert nearest.tolist() == [0, 2]
    torch.testing.assert_close(diffs[0][1], torch.full((2, 2, 2), (4.2 - 5.0) ** 2))
    assert diffs[0][0].abs().sum() == 0
    assert bool(bank.filled)


def test_network_shapes_frozen_encoder_and_memory_saved_with_the_weights():
    torch.manual_seed(0)
    net = MemSegNet("test_efficientnet", size=64, memory_size=4, pretrained=False, width=16)
    net.fill_memory(random_frames(4))
    net.train()
    x = torch.rand(2, 3, 64, 64)
    logits = net(x)
    assert logits.shape == (2, 1, 64, 64)
    logits.mean().backward()
    assert all(p.grad is None for p in net.encoder.parameters())
    trainable = [p for n, p in net.named_parameters() if not n.startswith("encoder.")]
    assert trainable and all(p.grad is not None for p in trainable)
    assert not net.encoder.training  # BatchNorm statistics of the frozen encoder stay fixed
    copy = MemSegNet("test_efficientnet", size=64, memory_size=4, pretrained=False, width=16)
    copy.load_state_dict(net.state_dict())
    net.eval(), copy.eval()
    with torch.no_grad():
        torch.testing.assert_close(copy(x), net(x))
    plain = MemSegNet("test_efficientnet", size=64, memory=False, pretrained=False, width=16)
    assert plain(x).shape == (2, 1, 64, 64) and plain.memory is None
    assert net(torch.rand(1, 3, 96, 96)).shape == (1, 1, 96, 96)  # memory resized to the input
    patch = MemSegNet("test_efficientnet", size=64, memory_size=4, memory_match="patch",
                      pretrained=False, width=16)  # fmt: skip
    patch.fill_memory(random_frames(4))
    assert patch(torch.rand(1, 3, 96, 80)).shape == (1, 1, 96, 80)


def test_the_weights_store_the_memory_frames_and_loading_recomputes_their_features(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from colonseg.engine.checkpoint import ModelMeta, load_pretrained, save_pretrained
    from colonseg.errors import ColonsegError

    torch.manual_seed(0)
    kw = {"encoder": "test_efficientnet", "size": 64, "memory_size": 3, "width": 16}
    net = MemSegNet(pretrained=False, **kw).eval()
    frames = random_frames(3)
    net.fill_memory(frames)
    np.testing.assert_array_equal(net.memory.frames(), frames)  # lossless
    meta = ModelMeta(arch="mapseg", init_kwargs={**kw, "pretrained": False}, size=(64, 64))
    save_pretrained(net, meta, tmp_path / "m")
    with safe_open(str(tmp_path / "m" / "weights.safetensors"), "pt") as f:
        assert "memory.encoded" in f.keys() and not any("level" in k for k in f.keys())
    loaded, _ = load_pretrained(tmp_path / "m")
    for own, new in zip(net.memory.items(), loaded.memory.items(), strict=True):
        torch.testing.assert_close(new, own, rtol=0, atol=0)
        assert own.abs().sum() > 0
    with pytest.raises(ValueError, match=r"\(3, H, W, 3\) uint8"):
        net.fill_memory(random_frames(2))
    older = {**load_file(tmp_path / "m" / "weights.safetensors"), "memory.level0": own}
    save_file(older, tmp_path / "m" / "weights.safetensors")  # a file of the feature format
    with pytest.raises(ColonsegError, match="memory.level0: memory features"):
        load_pretrained(tmp_path / "m")


def test_patch_memory_matches_each_region_anywhere_in_any_memory_frame():
    torch.manual_seed(0)
    fine, coarse = torch.rand(2, 3, 4, 4), torch.rand(2, 5, 2, 2)  # 2 frames, fine = 2 × coarse
    bank = MemoryBank(2, [(3, 4, 4), (5, 2, 2)], match="patch")
    bank.fill([fine, coarse])
    # the input is memory frame 1 turned half a turn: frame-wise it matches nothing; patch-wise
    # every coarse cell finds its own cell of frame 1, and the fine level the same sub-grid
    query = [fine[1:].flip(-1, -2), coarse[1:].flip(-1, -2)]
    query[0][..., 0:2, 0:2] = fine[1][..., 2:4, 2:4]  # fine cells of the top-left coarse cell
    diffs, nearest = bank(query)
    assert nearest.shape == (1, 2, 2)
    assert (nearest // 4 == 1).all()  # every region found in frame 1
    assert nearest[0, 0, 0] == 4 + 3  # top-left cell <- frame 1's bottom-right cell (index 3)
    assert diffs[1].abs().max() == 0
    torch.testing.assert_close(diffs[0][..., 0:2, 0:2], torch.zeros(1, 3, 2, 2))
    assert diffs[0][..., 2:4, 2:4].abs().sum() > 0  # flipped within the cell: not the same
    frame = MemoryBank(2, [(3, 4, 4), (5, 2, 2)])
    frame.fill([fine, coarse])
    assert frame(query)[0][1].abs().sum() > 0  # MemSeg's frame-wise lookup cannot align them


def test_patch_memory_matches_in_fp32_under_autocast_and_at_any_size(tmp_path):
    torch.manual_seed(0)
    # features with large norms: bf16 would blur |k|^2 - 2 q.k and pick wrong neighbours
    fine, coarse = torch.rand(3, 4, 76, 76) + 5, torch.rand(3, 8, 19, 19) + 5  # 304 px / 4, / 16
    bank = MemoryBank(3, [(4, 76, 76), (8, 19, 19)], match="patch")
    bank.fill([fine, coarse])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        diffs, _ = bank([fine[1:2], coarse[1:2]])  # a memory frame finds itself everywhere
    assert all(d.abs().max() == 0 for d in diffs)
    net = MemSegNet("test_efficientnet", size=64, memory_size=2, memory_match="patch",
                    pretrained=False, width=16)  # fmt: skip
    from colonseg.engine.checkpoint import ModelMeta, save_pretrained
    from colonseg.engine.onnx_backend import export_onnx
    from colonseg.errors import ColonsegError

    init = {"encoder": "test_efficientnet", "size": 64, "memory_size": 2, "memory_match": "patch",
            "pretrained": False, "width": 16}  # fmt: skip
    model = save_pretrained(net, ModelMeta("mapseg", init, size=(64, 64)), tmp_path / "m")
    with pytest.raises(ColonsegError, match="patch-wise memory lookup does not trace"):
        export_onnx(model, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
