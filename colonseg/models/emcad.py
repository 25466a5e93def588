"""``emcad``: Efficient Multi-scale Convolutional Attention Decoding (Rahman et al., CVPR 2024).

On a four-level hierarchical encoder (strides 4–32), each decoder stage is: efficient
up-convolution (EUCB: ×2 upsampling, depth-wise 3×3, point-wise), a large-kernel grouped
attention gate (LGAG) on the skip, additive aggregation, and the multi-scale convolutional
attention module (MSCAM: channel attention → spatial attention → multi-scale convolution block,
MSCB, whose depth-wise kernels 1/3/5 run in parallel). One 1×1 head per stage gives four maps.

Deep supervision: ``forward_with_aux`` returns ``[p4 + p3 + p2 + p1, p4, p3, p2, p1]`` (the sum
first); ``forward`` returns the sum, as the paper predicts. The paper's MUTATION loss sums the
loss of all 15 non-empty combinations; supervising the full sum and the four single maps is the
cheaper subset used here. Default encoder: EfficientNet-Lite0 (offline weights); the paper's
PVTv2-b2 is ``encoder="pvt_v2_b2", encoder_weights=PATH``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from colonseg.models.blocks import ChannelAttention, ConvBNAct, SpatialAttention, resize_to
from colonseg.models.registry import MODELS
from colonseg.models.timm_features import TimmFeatures

__all__ = ["EMCAD"]


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class MSCB(nn.Module):
    """Multi-scale convolution block: expand → parallel depth-wise k×k (summed) → shuffle →
    project, with a residual connection."""

    def __init__(self, channels: int, kernels=(1, 3, 5), expansion: int = 6) -> None:
        super().__init__()
        wide = channels * expansion
        self.expand = ConvBNAct(channels, wide, 1, act=nn.ReLU6)
        self.depthwise = nn.ModuleList(
            ConvBNAct(wide, wide, k, groups=wide, act=nn.ReLU6) for k in kernels
        )
        self.project = ConvBNAct(wide, channels, 1, act=None)
        self.groups = math.gcd(wide, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x)
        y = sum(dw(y) for dw in self.depthwise)
        return x + self.project(channel_shuffle(y, self.groups))


class MSCAM(nn.Module):
    """Channel attention, then spatial attention, then an MSCB.

    The spatial-attention block is passed in: the paper shares one across all stages."""

    def __init__(self, channels: int, expansion: int) -> None:
        super().__init__()
        self.channel = ChannelAttention(channels)
        self.mscb = MSCB(channels, expansion=expansion)

    def forward(self, x: torch.Tensor, spatial: SpatialAttention) -> torch.Tensor:
        x = x * self.channel(x)
        x = x * spatial(x)
        return self.mscb(x)


class EUCB(nn.Module):
    """Efficient up-convolution: ×2 upsampling, depth-wise 3×3 + BN + ReLU, shuffle, 1×1."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.dw = ConvBNAct(cin, cin, 3, groups=cin)
        self.pw = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=ref.shape[-2:], mode="nearest")
        return self.pw(self.dw(x))


class LGAG(nn.Module):
    """Large-kernel grouped attention gate: grouped 3×3 convs on gate and skip → sigmoid map."""

    def __init__(self, channels: int, kernel: int = 3) -> None:
        super().__init__()
        inter = max(1, channels // 2)
        groups = math.gcd(channels, inter)
        self.w_g = ConvBNAct(channels, inter, kernel, groups=groups, act=None)
        self.w_x = ConvBNAct(channels, inter, kernel, groups=groups, act=None)
        self.psi = nn.Sequential(ConvBNAct(inter, 1, 1, act=None), nn.Sigmoid())

    def forward(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x * self.psi(F.relu(self.w_g(g) + self.w_x(x)))


class EMCAD(nn.Module):
    def __init__(
        self,
        encoder: str = "tf_efficientnet_lite0",
        in_channels: int = 3,
        classes: int = 1,
        pretrained: bool = True,
        encoder_weights: str | None = None,
        expansion: int = 6,
        lgag_kernel: int = 3,
    ) -> None:
        super().__init__()
        self.encoder = TimmFeatures(
            encoder, (4, 8, 16, 32), in_channels, pretrained, encoder_weights
        )
        c4, c8, c16, c32 = self.encoder.channels
        self.spatial = SpatialAttention(7)
        self.mscam32 = MSCAM(c32, expansion)
        self.up16, self.up8, self.up4 = EUCB(c32, c16), EUCB(c16, c8), EUCB(c8, c4)
        self.gate16, self.gate8, self.gate4 = (LGAG(c, lgag_kernel) for c in (c16, c8, c4))
        self.mscam16, self.mscam8, self.mscam4 = (MSCAM(c, expansion) for c in (c16, c8, c4))
        self.heads = nn.ModuleList(nn.Conv2d(c, classes, 1) for c in (c32, c16, c8, c4))

    def _stage_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        f4, f8, f16, f32 = self.encoder(x)
        sab = self.spatial
        d32 = self.mscam32(f32, sab)
        d16 = self.up16(d32, f16)
        d16 = self.mscam16(d16 + self.gate16(d16, f16), sab)
        d8 = self.up8(d16, f8)
        d8 = self.mscam8(d8 + self.gate8(d8, f8), sab)
        d4 = self.up4(d8, f4)
        d4 = self.mscam4(d4 + self.gate4(d4, f4), sab)
        return [resize_to(h(d), x) for h, d in zip(self.heads, (d32, d16, d8, d4), strict=True)]

    def forward_with_aux(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``[sum of the four stage maps, p32, p16, p8, p4]`` at input size."""
        maps = self._stage_maps(x)
        return [sum(maps), *maps]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum(self._stage_maps(x))


@MODELS.register("emcad")
def emcad(**kw) -> nn.Module:
    """EMCAD decoder (MSCAM, LGAG, EUCB, deep supervision) on a hierarchical timm encoder."""
    return EMCAD(**kw)
