"""Small building blocks shared by the hand-written architectures."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ConvBNAct", "SpatialAttention", "ChannelAttention", "resize_to"]


class ConvBNAct(nn.Sequential):
    """Conv → BatchNorm → activation (ReLU unless ``act=None``); 'same' padding."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int | tuple[int, int] = 3,
        dilation: int = 1,
        groups: int = 1,
        act: type[nn.Module] | None = nn.ReLU,
    ) -> None:
        k = (kernel, kernel) if isinstance(kernel, int) else kernel
        pad = (dilation * (k[0] - 1) // 2, dilation * (k[1] - 1) // 2)
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, k, padding=pad, dilation=dilation, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        ]
        if act is not None:
            layers.append(act())
        super().__init__(*layers)


class SpatialAttention(nn.Module):
    """CBAM/SA-UNet spatial attention: a ``(B, 1, H, W)`` map in (0, 1) from the channel-wise
    mean and max of the input, through one ``kernel``×``kernel`` convolution."""

    def __init__(self, kernel: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel, padding=kernel // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)
        return torch.sigmoid(self.conv(pooled))


class ChannelAttention(nn.Module):
    """CBAM channel attention: a ``(B, C, 1, 1)`` gate from average- and max-pooled features
    through a shared bottleneck MLP."""

    def __init__(self, channels: int, ratio: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // ratio)
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.mlp(F.adaptive_avg_pool2d(x, 1))
        mx = self.mlp(F.adaptive_max_pool2d(x, 1))
        return torch.sigmoid(avg + mx)


def resize_to(x: torch.Tensor, ref: torch.Tensor | tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``x`` to the spatial size of ``ref`` (a tensor or ``(H, W)``)."""
    size = tuple(ref.shape[-2:]) if isinstance(ref, torch.Tensor) else tuple(ref)
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
