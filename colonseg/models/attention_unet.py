"""``attention_unet``: U-Net with spatial attention (SA-UNet, Guo et al., ICPR 2020) in the
bottleneck and additive attention gates (Attention U-Net, Oktay et al., MIDL 2018) on every skip.
``drop_block`` > 0 adds SA-UNet's DropBlock (block size 7) after the decoder's conv blocks at
strides 16 to 2 (none at full resolution); it has no weights, so checkpoints are the same.

The attention maps are kept for inspection: ``forward_with_attention`` returns them with the
logits, each ``(B, 1, H, W)`` in [0, 1] at input size, ready to colour as heat maps.
"""

from __future__ import annotations

import torch
from timm.layers import DropBlock2d
from torch import nn

from colonseg.errors import ColonsegError
from colonseg.models.blocks import ConvBNAct, SpatialAttention, resize_to
from colonseg.models.registry import MODELS
from colonseg.models.timm_features import TimmFeatures

__all__ = ["AttentionUNet"]


class AttentionGate(nn.Module):
    """Additive attention gate: a per-pixel weight for the skip ``x`` from the gating ``g``."""

    def __init__(self, g_channels: int, x_channels: int, inter: int) -> None:
        super().__init__()
        self.w_g = ConvBNAct(g_channels, inter, 1, act=None)
        self.w_x = ConvBNAct(x_channels, inter, 1, act=None)
        self.psi = nn.Sequential(ConvBNAct(inter, 1, 1, act=None), nn.Sigmoid())

    def forward(self, g: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        att = self.psi(torch.relu(self.w_g(g) + self.w_x(x)))
        return x * att, att


class DecoderStage(nn.Module):
    def __init__(self, cin: int, skip: int, cout: int, drop_block: float = 0.0) -> None:
        super().__init__()
        self.gate = AttentionGate(cin, skip, max(8, skip // 2)) if skip else None
        self.convs = nn.Sequential(ConvBNAct(cin + skip, cout), ConvBNAct(cout, cout))
        # SA-UNet's DropBlock (block 7) after each conv block; identity at inference
        self.drop = DropBlock2d(drop_block, 7) if drop_block > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None):
        x = nn.functional.interpolate(x, scale_factor=2.0, mode="nearest")
        att = None
        if skip is not None and self.gate is not None:
            x = resize_to(x, skip)
            skip, att = self.gate(x, skip)
            x = torch.cat([x, skip], 1)
        for conv in self.convs:
            x = self.drop(conv(x))
        return x, att


class AttentionUNet(nn.Module):
    """U-Net on a timm encoder (strides 2–32) with SA bottleneck and gated skips."""

    def __init__(
        self,
        encoder: str = "tf_efficientnet_lite0",
        in_channels: int = 3,
        classes: int = 1,
        pretrained: bool = True,
        encoder_weights: str | None = None,
        decoder_channels: tuple[int, ...] = (128, 64, 32, 16, 16),
        attention_kernel: int = 7,
        drop_block: float = 0.0,
    ) -> None:
        super().__init__()
        self.encoder = TimmFeatures(
            encoder, (2, 4, 8, 16, 32), in_channels, pretrained, encoder_weights
        )
        if len(decoder_channels) != 5:
            raise ColonsegError(f"decoder_channels needs 5 widths, got {list(decoder_channels)}")
        ch = self.encoder.channels
        self.bottleneck_in = ConvBNAct(ch[-1], ch[-1])
        self.spatial_attention = SpatialAttention(attention_kernel)
        self.bottleneck_out = ConvBNAct(ch[-1], ch[-1])
        skips = [*ch[-2::-1], 0]  # strides 16, 8, 4, 2, then full resolution (no skip)
        widths = [ch[-1], *decoder_channels]
        self.stages = nn.ModuleList(
            DecoderStage(widths[i], skips[i], widths[i + 1], drop_block if i < 4 else 0.0)
            for i in range(len(skips))
        )
        self.head = nn.Conv2d(widths[-1], classes, 3, padding=1)

    def _decode(self, x: torch.Tensor, maps: dict | None) -> torch.Tensor:
        feats = self.encoder(x)
        y = self.bottleneck_in(feats[-1])
        sa = self.spatial_attention(y)
        y = self.bottleneck_out(y * sa)
        if maps is not None:
            maps["spatial_attention"] = sa
        skips = [*feats[-2::-1], None]
        for i, (stage, skip) in enumerate(zip(self.stages, skips, strict=True)):
            y, att = stage(y, skip)
            if maps is not None and att is not None:
                maps[f"gate_stride{self.encoder.strides[-2 - i]}"] = att
        return resize_to(self.head(y), x)

    def forward_with_attention(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Logits and the attention maps (``spatial_attention``, ``gate_stride16`` … ``2``)."""
        maps: dict = {}
        logits = self._decode(x, maps)
        return logits, {k: resize_to(v, x).clamp(0, 1) for k, v in maps.items()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._decode(x, None)


@MODELS.register("attention_unet")
def attention_unet(**kw) -> nn.Module:
    """U-Net with SA-UNet spatial attention and attention-gated skips on a timm encoder."""
    return AttentionUNet(**kw)
