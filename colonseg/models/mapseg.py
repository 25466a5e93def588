"""MAPSeg's network: a frozen encoder, a memory of normal frames, attention fusion, a U-Net decoder.

Following MemSeg (Yang et al., CVPR 2023) as MAPSeg uses it: the memory holds the encoder's
features of ``N`` normal frames at three levels (strides 4, 8, 16). The checkpoint stores the
frames themselves (lossless PNG, about 2 MB for 30 frames of 256 px, against 10 MB for their
features in fp16); the features are recomputed from them by the frozen encoder when the weights
load, so they are exactly those the model was trained with. For an input, the memory item
with the smallest summed squared L2 distance over the levels is picked, and the *memory
information* — the element-wise squared difference between the input's and that item's features —
is concatenated to the input features (channels × 2). ``memory_match="patch"`` compares each
region with its nearest region in any memory frame instead (endoscope frames are not aligned;
see :class:`MemoryBank`). Each level then passes a multi-scale feature-fusion block with
coordinate attention, the coarser levels are gated by a spatial attention map, and a U-Net-style
decoder (with the stride-2 feature as its last skip) predicts lesion logits at input size
(``classes=1``: sigmoid; ``classes=2``: MemSeg's normal/lesion softmax). ``memory=False`` builds
the ablation without the memory: the features go to the fusion block alone. Registered as the
model ``mapseg``.

Example:
    >>> net = MemSegNet(size=256, memory_size=30)
    >>> net.fill_memory(normal_frames)            # (30, 256, 256, 3) uint8 RGB
    >>> logits = net(images)                      # (B, 1, 256, 256)
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from colonseg.data.datamodule import normalize
from colonseg.errors import ColonsegError
from colonseg.models.blocks import ConvBNAct, SpatialAttention, resize_to
from colonseg.models.encoders import encoder_normalization
from colonseg.models.registry import MODELS
from colonseg.models.timm_features import TimmFeatures

__all__ = ["CoordinateAttention", "MemSegNet", "MemoryBank"]


def check_memory_streams(data: np.ndarray, lengths: np.ndarray, side: int) -> None:
    """Refuse stored memory frames that are not ``len(lengths)`` 8-bit RGB PNGs of
    ``side × side`` (their headers are read, nothing is decoded).

    Raises:
        ColonsegError: naming the frame and what its header says.
    """
    if lengths.ndim != 1 or (lengths < 0).any() or int(lengths.sum()) != len(data):
        raise ColonsegError(f"memory frames: {len(data)} stored bytes do not match their lengths")
    if not len(data):
        return  # no frames stored: the memory is filled at training time
    start = 0
    for i, n in enumerate(lengths.tolist()):
        head = bytes(data[start : start + min(n, 29)])
        start += n
        if len(head) < 29 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
            raise ColonsegError(f"memory frame {i}: not a PNG stream")
        w, h = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
        depth, colour = head[24], head[25]
        if (w, h) != (side, side) or depth != 8 or colour != 2:
            raise ColonsegError(
                f"memory frame {i}: its PNG header says {w}×{h}, {depth}-bit, colour type "
                f"{colour}; this model's memory frames are {side}×{side} 8-bit RGB"
            )


class MemoryBank(nn.Module):
    """Multi-level features of ``size`` normal frames, and the frames they come from.

    The frames are the persistent part: ``encoded`` holds their PNG streams one after another
    (``lengths`` bytes each), ``frames()`` decodes them. The features (``level0``, ``level1``,
    ...) are not saved: the owning network recomputes them after loading (see
    :meth:`MemSegNet.refresh_memory`).

    ``forward(features)`` returns, per level, the squared difference to the matched memory
    features, and the matches. ``match="frame"`` is MemSeg's lookup: the one memory frame nearest
    to the whole input (summed squared L2 over the levels), compared position by position — it
    assumes inputs and memory frames are aligned, as MVTec's objects are. ``match="patch"`` drops
    that assumption (an endoscope frame has no fixed layout): every position of the coarsest
    level finds its nearest feature among all positions of all memory frames, and the finer
    levels compare with the same region of that frame (the matched coarse cell's sub-grid). The
    matches are ``(B,)`` frame indices, or ``(B, h, w)`` flat indices into the coarsest level's
    ``frames × positions``.
    """

    MATCHES = ("frame", "patch")

    def __init__(self, size: int, shapes: list[tuple[int, int, int]], match: str = "frame") -> None:
        super().__init__()
        if match not in self.MATCHES:
            raise ColonsegError(f"memory match must be one of {self.MATCHES}, got {match!r}")
        self.levels, self.match = len(shapes), match
        for i, (c, h, w) in enumerate(shapes):
            self.register_buffer(f"level{i}", torch.zeros(size, c, h, w), persistent=False)
        self.register_buffer("encoded", torch.zeros(0, dtype=torch.uint8))
        self.register_buffer("lengths", torch.zeros(size, dtype=torch.int64))
        self.register_buffer("filled", torch.zeros((), dtype=torch.bool))

    def items(self) -> list[torch.Tensor]:
        return [getattr(self, f"level{i}") for i in range(self.levels)]

    def store(self, frames: np.ndarray) -> None:
        """Keep ``frames`` (``(N, H, W, 3)`` uint8 RGB, ``N`` = the bank's size) as PNG."""
        if frames.dtype != np.uint8 or frames.ndim != 4 or len(frames) != len(self.lengths):
            raise ValueError(
                f"memory frames must be ({len(self.lengths)}, H, W, 3) uint8, "
                f"got {frames.shape} {frames.dtype}"
            )
        png = [cv2.IMWRITE_PNG_COMPRESSION, 9]  # smallest lossless
        streams = [cv2.imencode(".png", np.ascontiguousarray(f[..., ::-1]), png)[1] for f in frames]
        self.encoded = torch.from_numpy(np.concatenate(streams)).to(self.lengths.device)
        self.lengths.copy_(torch.tensor([len(b) for b in streams]))

    @property
    def frame_side(self) -> int:
        """The side of the stored frames: the finest level (stride 4) times 4."""
        return int(self.items()[0].shape[-1]) * 4

    def frames(self) -> np.ndarray:
        """The stored frames, ``(N, H, W, 3)`` uint8 RGB (``N`` = 0 when none are stored).

        Each PNG's header is checked before it is decoded (:func:`check_memory_streams`), so a
        crafted checkpoint cannot make colonseg decode a decompression bomb."""
        if not self.encoded.numel():
            return np.zeros((0, 0, 0, 3), np.uint8)
        data = self.encoded.cpu().numpy()
        lengths = self.lengths.cpu().numpy()
        check_memory_streams(data, lengths, self.frame_side)
        ends = np.cumsum(lengths)
        return np.stack([
            cv2.imdecode(data[end - n : end], cv2.IMREAD_COLOR)[..., ::-1]
            for end, n in zip(ends, lengths.tolist(), strict=True)
        ])  # fmt: skip

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing, unexpected, errors
    ) -> None:
        if prefix + "level0" in state_dict:
            raise ColonsegError(
                f"{prefix}level0: memory features, stored by colonseg before the memory kept its "
                "frames; retrain the model with this version"
            )
        stream = state_dict.get(prefix + "encoded")
        if stream is not None:  # its length is the stored PNGs', not known before loading
            self.encoded = torch.empty_like(stream, device=self.encoded.device)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing, unexpected, errors
        )

    @torch.no_grad()
    def fill(self, features: list[torch.Tensor]) -> None:
        for own, new in zip(self.items(), features, strict=True):
            if own.shape != new.shape:
                raise ValueError(f"memory level expects {tuple(own.shape)}, got {tuple(new.shape)}")
            own.copy_(new.detach().to(own.dtype))
        self.filled.fill_(True)

    def forward(self, features: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        if self.match == "patch":
            matched, nearest = self._patch_matches(features)
        else:
            # inputs at another resolution than the memory's compare with resized memory items
            items = [resize_to(m, f) for m, f in zip(self.items(), features, strict=True)]
            dist = sum(
                torch.cdist(f.flatten(1).float(), m.flatten(1).float()).pow(2)
                for f, m in zip(features, items, strict=True)
            )  # (B, N): summed squared L2 distance over the levels
            nearest = dist.argmin(1)
            matched = [m[nearest] for m in items]
        diffs = [(f - m.to(f.dtype)).pow(2) for f, m in zip(features, matched, strict=True)]
        return diffs, nearest

    @torch.no_grad()
    def _patch_matches(
        self, features: list[torch.Tensor]
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        items = self.items()
        coarse, bank = features[-1], items[-1]
        _, c, h, w = bank.shape
        keys = bank.permute(0, 2, 3, 1).reshape(-1, c).float()
        key_norms = (keys * keys).sum(1)
        queries = coarse.permute(0, 2, 3, 1).reshape(-1, c).float()
        # nearest key per query: |k|^2 - 2 q.k (|q|^2 is the same for every key); in fp32 even
        # under autocast, where bf16 would lose the small differences between large norms
        with torch.autocast(coarse.device.type, enabled=False):
            nearest = torch.cat([
                (key_norms - 2 * block @ keys.T).argmin(1) for block in queries.split(4096)
            ]).view(coarse.shape[0], *coarse.shape[-2:])  # fmt: skip
        matched = []
        for f, m in zip(features, items, strict=True):
            s = max(1, round(m.shape[-1] / w))  # this level's cells per coarse cell
            rows = torch.arange(f.shape[-2], device=f.device)
            cols = torch.arange(f.shape[-1], device=f.device)
            cell_r = (rows // s).clamp(max=coarse.shape[-2] - 1)
            cell_c = (cols // s).clamp(max=coarse.shape[-1] - 1)
            cell = nearest[:, cell_r][:, :, cell_c]  # each position's matched coarse cell
            frame, y, x = cell // (h * w), cell // w % h, cell % w
            my = (y * s + (rows % s)[:, None]).clamp(max=m.shape[-2] - 1)
            mx = (x * s + (cols % s)[None, :]).clamp(max=m.shape[-1] - 1)
            matched.append(m[frame, :, my, mx].permute(0, 3, 1, 2))  # (B, hq, wq, C) → NCHW
        return matched, nearest


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
        memory_match: str = "frame",
        pretrained: bool = True,
        encoder_weights: str | None = None,
        width: int = 64,
    ) -> None:
        super().__init__()
        self.encoder = TimmFeatures(encoder, (2, 4, 8, 16), 3, pretrained, encoder_weights)
        self.encoder.requires_grad_(False).eval()
        self.normalization = encoder_normalization(encoder)  # of the memory frames
        with torch.no_grad():
            probe = self.encoder(torch.zeros(1, 3, size, size))[1:]
        self.memory = (
            MemoryBank(memory_size, [tuple(f.shape[1:]) for f in probe], memory_match)
            if memory
            else None
        )
        if memory and memory_match == "patch":  # read by ONNX export, which refuses with it
            self.onnx_unsupported = "the patch-wise memory lookup does not trace to ONNX"
        if memory:
            self.register_load_state_dict_post_hook(_refresh_after_load)
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
    def fill_memory(self, frames: np.ndarray) -> None:
        """Make ``frames`` (``(N, S, S, 3)`` uint8 RGB normal frames) the memory."""
        if self.memory is None:
            raise ValueError("this model was built without a memory (memory=False)")
        self.memory.store(frames)
        self.refresh_memory()

    @torch.no_grad()
    def refresh_memory(self) -> None:
        """Recompute the memory features from the stored frames (done after loading weights)."""
        frames = self.memory.frames()
        if len(frames):
            param = next(self.encoder.parameters())
            x = normalize(frames, *self.normalization).to(param.device, param.dtype)
            self.memory.fill(self.features(x)[1:])

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


def _refresh_after_load(net: MemSegNet, incompatible_keys) -> None:
    net.refresh_memory()  # a module-level function: hooks must pickle (DDP spawn)


@MODELS.register("mapseg")
def mapseg(in_channels: int = 3, **kw) -> nn.Module:
    """MAPSeg / MemSeg: frozen encoder, memory of normal frames, attention fusion, U-Net decoder."""
    if in_channels != 3:
        raise ColonsegError("mapseg takes RGB input (in_channels=3)")
    return MemSegNet(**kw)
