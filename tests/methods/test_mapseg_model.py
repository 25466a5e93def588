from __future__ import annotations

import torch

from colonseg.models.mapseg import MemoryBank, MemSegNet


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
    net.fill_memory(torch.rand(4, 3, 64, 64))
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
