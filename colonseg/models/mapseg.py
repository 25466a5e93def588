"""MAPSeg's network: a frozen encoder, a memory of normal frames, attention fusion, a U-Net decoder.

Following MemSeg (Yang et al., CVPR 2023) as MAPSeg uses it: the memory holds the encoder's
features of ``N`` normal frames at three levels (strides 4, 8, 16). For an input, the memory item
with the smallest summed squared L2 distance over the levels is picked, and the *memory
information* — the element-wise squared difference between the input's and that item's features —
is concatenated to the input features (channels × 2). Each level then passes a multi-scale
feature-fusion block with coordinate attention, the coarser levels are gated by a spatial
attention map, and a U-Net-style decoder (with the stride-2 feature as its last skip) predicts
lesion logits at input size (``classes=1``: sigmoid; ``classes=2``: MemSeg's normal/lesion
softmax). ``memory=False`` builds the ablation without the memory: the features go to the fusion
block alone. Registered as the model ``mapseg``.

Example:
    >>> net = MemSegNet(size=256, memory_size=30)
    >>> net.fill_memory(normal_batch)             # (30, 3, 256, 256), normalised
    >>> logits = net(images)                      # (B, 1, 256, 256)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from colonseg.errors import ColonsegError
from colonseg.models.blocks import ConvBNAct, SpatialAttention, resize_to
from colonseg.models.registry import MODELS
from colonseg.models.timm_features import TimmFeatures

__all__ = ["CoordinateAttention", "MemSegNet", "MemoryBank"]


class MemoryBank(nn.Module):
    """Multi-level features of ``size`` normal frames, kept as buffers (saved with the weights).

    ``forward(features)`` returns, per level, the squared difference to the nearest item and the
    index of that item for every input.
    """

    def __init__(self, size: int, shapes: list[tuple[int, int, int]]) -> None:
        super().__init__()
        self.levels = len(shapes)
        for i, (c, h, w) in enumerate(shapes):
            self.register_buffer(f"level{i}", torch.zeros(size, c, h, w))
        self.register_buffer("filled", torch.zeros((), dtype=torch.bool))

    def items(self) -> list[torch.Tensor]:
        return [getattr(self, f"level{i}") for i in range(self.levels)]

    @torch.no_grad()
    def fill(self, features: list[torch.Tensor]) -> None:
        for own, new in zip(self.items(), features, strict=True):
            if own.shape != new.shape:
                raise ValueError(f"memory level expects {tuple(own.shape)}, got {tuple(new.shape)}")
            own.copy_(new.detach().to(own.dtype))
        self.filled.fill_(True)

    def forward(self, features: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        # inputs at another resolution than the memory's compare with resized memory items
        items = [resize_to(m, f) for m, f in zip(self.items(), features, strict=True)]
        dist = sum(
            torch.cdist(f.flatten(1).float(), m.flatten(1).float()).pow(2)
            for f, m in zip(features, items, strict=True)
        )  # (B, N): summed squared L2 distance over the levels
        nearest = dist.argmin(1)
        diffs = [(f - m[nearest].to(f.dtype)).pow(2) for f, m in zip(features, items, strict=True)]
        return diffs, nearest


class CoordinateAttention(nn.Module):
    """Coordinate attention (Hou et al., CVPR 2021): channel gates factorised along height and
    width, so the gate keeps *where* along each axis a channel responds."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(8, channels // reduction)
        self.shared = ConvBNAct(channels, hidden, 1)
        self.gate_h = nn.Conv2d(hidden, channels, 1)
        self.gate_w = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        pooled = torch.cat([x.mean(3, keepdim=True), x.mean(2, keepdim=True).transpose(2, 3)], 2)
        y = self.shared(pooled)
        yh, yw = y.split([h, w], dim=2)
        return x * self.gate_h(yh).sigmoid() * self.gate_w(yw.transpose(2, 3)).sigmoid()


class FusionBlock(nn.Module):
    """MSFF: a 3×3 conv, coordinate attention, then two 3×3 convs to ``cout`` channels."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = ConvBNAct(cin, cin)
        self.attention = CoordinateAttention(cin)
        self.out = nn.Sequential(ConvBNAct(cin, cout), ConvBNAct(cout, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.attention(self.conv(x)))


class MemSegNet(nn.Module):
    """See the module docstring. ``encoder`` is any timm ``features_only`` model; its weights
    are frozen (ImageNet: offline EfficientNet-Lite, or ``encoder_weights=PATH``)."""

    def __init__(
        self,
        encoder: str = "tf_efficientnet_lite0",
        classes: int = 1,
        size: int = 256,
        memory_size: int = 30,
        memory: bool = True,
        pretrained: bool = True,
        encoder_weights: str | None = None,
        width: int = 64,
    ) -> None:
        super().__init__()
        self.encoder = TimmFeatures(encoder, (2, 4, 8, 16), 3, pretrained, encoder_weights)
        self.encoder.requires_grad_(False).eval()
        with torch.no_grad():
            probe = self.encoder(torch.zeros(1, 3, size, size))[1:]
        self.memory = (
            MemoryBank(memory_size, [tuple(f.shape[1:]) for f in probe]) if memory else None
        )
        factor = 2 if memory else 1
        chans = self.encoder.channels
        self.fusion = nn.ModuleList(
            FusionBlock(factor * c, width * 2**i) for i, c in enumerate(chans[1:])
        )
        self.spatial = SpatialAttention()
        self.up = nn.ModuleList(
            ConvBNAct(width * 2 ** (i + 1) + width * 2**i, width * 2**i) for i in range(2)
        )
        self.up_stem = ConvBNAct(width + chans[0], width // 2)
        self.head = nn.Sequential(
            ConvBNAct(width // 2, width // 2), nn.Conv2d(width // 2, classes, 1)
        )

    def train(self, mode: bool = True) -> MemSegNet:
        super().train(mode)
        self.encoder.eval()  # frozen: BatchNorm statistics stay ImageNet's
        return self

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        with torch.no_grad():
            return self.encoder(x)

    @torch.no_grad()
    def fill_memory(self, normal: torch.Tensor) -> None:
        """Store the features of ``normal`` frames (``(N, 3, S, S)``, normalised) as the memory."""
        if self.memory is None:
            raise ValueError("this model was built without a memory (memory=False)")
        self.memory.fill(self.features(normal)[1:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stem, *levels = self.features(x)
        if self.memory is not None:
            diffs, _ = self.memory(levels)
            levels = [torch.cat([f, d], 1) for f, d in zip(levels, diffs, strict=True)]
        fused = [block(f) for block, f in zip(self.fusion, levels, strict=True)]
        gate = self.spatial(fused[-1])  # the coarsest level's spatial attention gates every level
        gated = [f * resize_to(gate, f) for f in fused]
        y = gated[2]
        for i in (1, 0):
            y = self.up[i](torch.cat([resize_to(y, gated[i]), gated[i]], 1))
        y = self.up_stem(torch.cat([resize_to(y, stem), stem], 1))
        return F.interpolate(self.head(y), size=x.shape[-2:], mode="bilinear", align_corners=False)


@MODELS.register("mapseg")
def mapseg(in_channels: int = 3, **kw) -> nn.Module:
    """MAPSeg / MemSeg: frozen encoder, memory of normal frames, attention fusion, U-Net decoder."""
    if in_channels != 3:
        raise ColonsegError("mapseg takes RGB input (in_channels=3)")
    return MemSegNet(**kw)
