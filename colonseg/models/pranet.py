"""``pranet``: Parallel Reverse Attention Network (Fan et al., MICCAI 2020).

Receptive-field blocks on the three deepest encoder levels (strides 8, 16, 32) feed a parallel
partial decoder, whose coarse map is the global guidance; three reverse-attention stages then
refine it from the deepest level up, each erasing what is already found (``1 - sigmoid``) so the
features attend to the missed boundary. ``forward_with_aux`` returns the four side outputs (final
first) for deep supervision with the structure loss; ``forward`` returns the final map.
Default encoder: EfficientNet-Lite0 (offline ImageNet weights); the paper's Res2Net-50 is
``encoder="res2net50_26w_4s", encoder_weights=PATH``.

Several classes (``classes > 1``, e.g. NeoPolyp's background / neoplastic / non-neoplastic):
reverse attention stays on one polyp (foreground) logit ``f``, refined exactly as in PraNet, and a
light :class:`ClassHead` per level predicts which polyp class a pixel is, given that it is polyp
(logits ``c``, one per foreground class, refined coarse to fine like the polyp map). Each side
output is then ``[0, f + log_softmax(c)]``, whose softmax is exactly

    P(background) = 1 - sigmoid(f),    P(class k) = sigmoid(f) * softmax(c)_k,

so the polyp map of a three-class PraNet is the same sigmoid map the binary PraNet learns, and
the multi-class CE + Dice supervises every side output (``classes`` channels each). Why not
reverse attention per class: its ``1 - sigmoid`` erasing is defined for one map, and the classes
split the polyp rather than the frame (a NeoPolyp polyp is one class, neighbouring the
background, rarely the other class), so a cascade per class would search the same outline
once per class, each from fewer pixels (non-neoplastic polyps are ~12 % of BKAI's polyp
pixels). The class heads look *inside* the found polyp, weighting their features by
``sigmoid(f)`` (forward attention, the counterpart of the reverse one). ``classes=2`` needs no
head (``[0, f]``); ``classes=1`` builds and outputs exactly the binary PraNet.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from colonseg.errors import ColonsegError
from colonseg.models.blocks import ConvBNAct, resize_to
from colonseg.models.registry import MODELS
from colonseg.models.timm_features import TimmFeatures

__all__ = ["ClassHead", "PraNet", "class_logits"]


class RFB(nn.Module):
    """Receptive field block: four branches of growing (separable, dilated) receptive field."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()

        def branch(k: int) -> nn.Sequential:
            return nn.Sequential(
                ConvBNAct(cin, cout, 1, act=None),
                ConvBNAct(cout, cout, (1, k), act=None),
                ConvBNAct(cout, cout, (k, 1), act=None),
                ConvBNAct(cout, cout, 3, dilation=k, act=None),
            )

        self.branches = nn.ModuleList(
            [ConvBNAct(cin, cout, 1, act=None), branch(3), branch(5), branch(7)]
        )
        self.fuse = ConvBNAct(4 * cout, cout, 3, act=None)
        self.shortcut = ConvBNAct(cin, cout, 1, act=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fuse(torch.cat([b(x) for b in self.branches], 1))
        return F.relu(y + self.shortcut(x))


class PartialDecoder(nn.Module):
    """Aggregates the three RFB outputs (strides 32, 16, 8) into one coarse map at stride 8."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.up1, self.up2, self.up3 = (ConvBNAct(c, c, act=None) for _ in range(3))
        self.up4 = ConvBNAct(c, c, act=None)
        self.up5 = ConvBNAct(2 * c, 2 * c, act=None)
        self.cat2 = ConvBNAct(2 * c, 2 * c, act=None)
        self.cat3 = ConvBNAct(3 * c, 3 * c, act=None)
        self.conv4 = ConvBNAct(3 * c, 3 * c, act=None)
        self.out = nn.Conv2d(3 * c, 1, 1)

    def forward(self, x32: torch.Tensor, x16: torch.Tensor, x8: torch.Tensor) -> torch.Tensor:
        def up(t: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
            return resize_to(t, ref)

        x16_1 = self.up1(up(x32, x16)) * x16
        x8_1 = self.up2(up(x32, x8)) * self.up3(up(x16, x8)) * x8
        x16_2 = self.cat2(torch.cat([x16_1, self.up4(up(x32, x16))], 1))
        x8_2 = self.cat3(torch.cat([x8_1, self.up5(up(x16_2, x8))], 1))
        return self.out(self.conv4(x8_2))


class ReverseAttention(nn.Module):
    """Refines the guidance map with features weighted by ``1 - sigmoid(guidance)``."""

    def __init__(self, cin: int, width: int, kernel: int, depth: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [ConvBNAct(cin, width, 1)]
        layers += [ConvBNAct(width, width, kernel) for _ in range(depth)]
        layers.append(nn.Conv2d(width, 1, 3, padding=1))
        self.convs = nn.Sequential(*layers)

    def forward(self, feat: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
        guidance = resize_to(guidance, feat)
        reverse = 1.0 - torch.sigmoid(guidance)
        return guidance + self.convs(feat * reverse)


class ClassHead(nn.Module):
    """Which foreground class, given polyp: features weighted by the polyp map (``sigmoid``,
    forward attention), 1×1 → 3×3 → 1×1 to one logit per foreground class, added to the coarser
    level's class logits when there is one."""

    def __init__(self, cin: int, width: int, classes: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            ConvBNAct(cin, width, 1), ConvBNAct(width, width, 3), nn.Conv2d(width, classes, 1)
        )

    def forward(
        self, feat: torch.Tensor, polyp: torch.Tensor, coarser: torch.Tensor | None = None
    ) -> torch.Tensor:
        logits = self.convs(feat * torch.sigmoid(resize_to(polyp, feat)))
        return logits if coarser is None else logits + resize_to(coarser, feat)


def class_logits(polyp: torch.Tensor, given_polyp: torch.Tensor | None) -> torch.Tensor:
    """``(B, 1, h, w)`` polyp logit and ``(B, K, h', w')`` class-given-polyp logits (or ``None``
    for one foreground class) → ``(B, 1 + K, h, w)`` logits ``[0, f + log_softmax(c)]``, whose
    softmax is ``[1 - sigmoid(f), sigmoid(f) * softmax(c)]``."""
    if given_polyp is None:
        return torch.cat([torch.zeros_like(polyp), polyp], 1)
    return torch.cat(
        [torch.zeros_like(polyp), polyp + resize_to(given_polyp, polyp).log_softmax(1)], 1
    )


class PraNet(nn.Module):
    """PraNet on a timm encoder; ``classes > 1`` adds the class heads (see the module doc).

    Example:
        >>> net, x = PraNet(classes=3, pretrained=False), torch.rand(1, 3, 352, 352)
        >>> net(x).shape                                   # (1, 3, 352, 352) logits
        >>> [o.shape[1] for o in net.forward_with_aux(x)]  # [3, 3, 3, 3]
    """

    def __init__(
        self,
        encoder: str = "tf_efficientnet_lite0",
        in_channels: int = 3,
        classes: int = 1,
        pretrained: bool = True,
        encoder_weights: str | None = None,
        rfb_channels: int = 32,
    ) -> None:
        super().__init__()
        if classes < 1:
            raise ColonsegError(f"pranet needs classes >= 1 (got {classes})")
        self.classes = classes
        self.encoder = TimmFeatures(encoder, (8, 16, 32), in_channels, pretrained, encoder_weights)
        c8, c16, c32 = self.encoder.channels
        self.rfb8, self.rfb16, self.rfb32 = (RFB(c, rfb_channels) for c in (c8, c16, c32))
        self.decoder = PartialDecoder(rfb_channels)
        self.ra32 = ReverseAttention(c32, 256, 5, 3)
        self.ra16 = ReverseAttention(c16, 64, 3, 2)
        self.ra8 = ReverseAttention(c8, 64, 3, 2)
        if classes > 2:  # created last: a binary PraNet keeps its modules, keys and init order
            k = classes - 1
            self.cls32, self.cls16, self.cls8 = (ClassHead(c, 64, k) for c in (c32, c16, c8))

    def _side_outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        f8, f16, f32 = self.encoder(x)
        guidance = self.decoder(self.rfb32(f32), self.rfb16(f16), self.rfb8(f8))
        s32 = self.ra32(f32, guidance)
        s16 = self.ra16(f16, s32)
        s8 = self.ra8(f8, s16)
        if self.classes == 1:
            return s8, s16, s32, guidance
        if self.classes == 2:
            c8 = c16 = c32 = None
        else:
            c32 = self.cls32(f32, s32)
            c16 = self.cls16(f16, s16, c32)
            c8 = self.cls8(f8, s8, c16)
        # the global guidance has no level of its own: it takes the coarsest class logits
        pairs = ((s8, c8), (s16, c16), (s32, c32), (guidance, c32))
        return tuple(class_logits(s, c) for s, c in pairs)

    def forward_with_aux(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``[final (stride-8 RA), RA stride 16, RA stride 32, global guidance]`` at input size,
        ``classes`` channels each."""
        return [resize_to(s, x) for s in self._side_outputs(x)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return resize_to(self._side_outputs(x)[0], x)


@MODELS.register("pranet")
def pranet(**kw) -> nn.Module:
    """PraNet (partial decoder + reverse attention, deep supervision) on a timm encoder; with
    ``classes > 1`` reverse attention refines the polyp map and class heads split it."""
    return PraNet(**kw)
