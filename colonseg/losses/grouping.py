"""MSSG's morphology-aware semantic grouping (MSG) on per-pixel embeddings.

A gland proposal from SPM holds two sub-regions — the dark epithelial border (1) and the interior
it encloses (2) — that look nothing alike but are one gland. On L2-normalised embeddings
``(B, D, H, W)``:

- :func:`variation_loss` (MSG-Variation) pulls the border and the interior embeddings of an image
  toward one shared gland anchor (the mean of the two sub-region centres);
- :func:`push_loss` keeps gland and background apart: each side's embeddings at least ``margin``
  from the other side's centre (squared hinge);
- :func:`omission_refine` (MSG-Omission) re-labels pixels the proposal missed next to a gland
  boundary — within ``band`` pixels of it, predicted gland with confidence and embedded closer to
  the gland centre than to the background centre — so the refined proposal supervises the
  segmenter.

``push_loss`` and ``omission_refine`` take the background explicitly when some pixels are neither
gland nor background (the proposal's unsupervised pixels); by default it is everything not gland.

Each image samples at most ``max_pixels`` pixels per region (MSSG's GlandSAM code: 1,000), so
the cost does not grow with the image. An image without one of the regions adds nothing.

Example:
    >>> emb = F.normalize(projection(features), dim=1)
    >>> loss = variation_loss(emb, proposal) + push_loss(emb, proposal > 0)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["omission_refine", "push_loss", "variation_loss"]


def _sample(emb: torch.Tensor, region: torch.Tensor, n: int, gen: torch.Generator | None):
    """Up to ``n`` embeddings ``(k, D)`` of one image ``(D, H, W)`` inside ``region (H, W)``."""
    idx = region.reshape(-1).nonzero().squeeze(1)
    if len(idx) > n:
        pick = torch.randperm(len(idx), generator=gen, device="cpu")[:n].to(idx.device)
        idx = idx[pick]
    return emb.reshape(emb.shape[0], -1)[:, idx].T


def _mean(terms: list[torch.Tensor], emb: torch.Tensor) -> torch.Tensor:
    return torch.stack(terms).mean() if terms else emb.sum() * 0.0


def variation_loss(
    emb: torch.Tensor,
    proposal: torch.Tensor,
    max_pixels: int = 1000,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Mean squared distance of border (1) and interior (2) embeddings to their shared anchor."""
    terms = []
    for e, p in zip(emb, proposal, strict=True):
        border = _sample(e, p == 1, max_pixels, generator)
        interior = _sample(e, p == 2, max_pixels, generator)
        if len(border) == 0 or len(interior) == 0:
            continue
        anchor = 0.5 * (border.mean(0) + interior.mean(0))
        spread = (border - anchor).pow(2).sum(1).mean() + (interior - anchor).pow(2).sum(1).mean()
        terms.append(0.5 * spread)
    return _mean(terms, emb)


def push_loss(
    emb: torch.Tensor,
    gland: torch.Tensor,
    margin: float = 1.0,
    max_pixels: int = 1000,
    generator: torch.Generator | None = None,
    background: torch.Tensor | None = None,
) -> torch.Tensor:
    """Squared hinge ``max(0, margin - ‖e - c‖)²`` of gland embeddings to the background centre
    and of background embeddings to the gland centre."""
    gland = gland.bool()
    background = ~gland if background is None else background.bool()
    terms = []
    for e, g, bg in zip(emb, gland, background, strict=True):
        inside = _sample(e, g, max_pixels, generator)
        outside = _sample(e, bg, max_pixels, generator)
        if len(inside) == 0 or len(outside) == 0:
            continue
        to_bg = (inside - outside.mean(0)).norm(dim=1)
        to_gland = (outside - inside.mean(0)).norm(dim=1)
        hinge = F.relu(margin - to_bg).pow(2).mean() + F.relu(margin - to_gland).pow(2).mean()
        terms.append(0.5 * hinge)
    return _mean(terms, emb)


@torch.no_grad()
def omission_refine(
    gland: torch.Tensor,
    prob: torch.Tensor,
    emb: torch.Tensor,
    band: int = 7,
    threshold: float = 0.7,
    background: torch.Tensor | None = None,
) -> torch.Tensor:
    """The proposal ``gland (B, H, W)`` plus the omitted pixels near its boundary (see above)."""
    gland = gland.bool()
    background = ~gland if background is None else background.bool()
    near = F.max_pool2d(gland[:, None].float(), 2 * band + 1, 1, band)[:, 0] > 0
    candidates = near & ~gland & (prob > threshold)
    out = gland.clone()
    for b in range(len(gland)):
        if not candidates[b].any() or not gland[b].any() or not background[b].any():
            continue
        e = emb[b].reshape(emb.shape[1], -1)
        g, bg = gland[b].reshape(-1), background[b].reshape(-1)
        centre_gland, centre_bg = e[:, g].mean(1, keepdim=True), e[:, bg].mean(1, keepdim=True)
        closer = (e - centre_gland).norm(dim=0) < (e - centre_bg).norm(dim=0)
        out[b] |= candidates[b] & closer.reshape(gland.shape[1:])
    return out
