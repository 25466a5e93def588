"""What a model costs: parameters and multiply-adds, as papers report them."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_gflops", "count_params_m"]


def count_params_m(net: nn.Module) -> float:
    """Parameters in millions."""
    return sum(p.numel() for p in net.parameters()) / 1e6


def count_gflops(net: nn.Module, size: int = 352) -> float:
    """Multiply-adds (what papers call GFLOPs) of one fp32 forward pass on a ``size``² image."""
    counter = FlopCounterMode(display=False)
    param = next(net.parameters())
    x = torch.rand(1, 3, size, size, device=param.device, dtype=param.dtype)
    with torch.no_grad(), counter:
        net(x)
    return counter.get_total_flops() / 2e9
