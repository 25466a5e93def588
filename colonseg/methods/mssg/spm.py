"""Selective Proposal Mining (SPM): per-image unsupervised clustering → gland proposal.

For each image, a small CNN is trained from scratch on that image alone (Kim & Kanezaki's
differentiable feature clustering): its per-pixel responses are pushed toward their own argmax
labels (cross-entropy) and toward spatial continuity (L1 of neighbour differences). k-means on
the learnt per-pixel features then gives ``clusters`` regions, and MSSG's empirical cue picks the
gland-border proposal: the darkest cluster that covers enough of the image (the nuclei-dense
epithelium lining the glands). Size-dependent cleanup, dilation and hole filling turn it into a
proposal map: 0 background, 1 border, 2 interior (gland = border ∪ interior).

The paper runs 50 iterations of a 128-channel network at full GlaS resolution (~6 s an iteration
on 2 CPU cores). ``SpmSettings`` defaults trade that for ~40× less work — the image scaled by 0.5
and 32 channels (optionally an early stop once the loss settles) — and every area threshold is a
fraction of the image, so proposals mean the same at any scale. ``docs/benchmarks.md`` measures
what the reduction costs in proposal quality.

Example:
    >>> result = propose(read_image("train_1.jpg"), SpmSettings())
    >>> result.proposal          # (H, W) uint8 in {0, 1, 2}, full resolution
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from scipy import ndimage
from sklearn.cluster import KMeans
from torch import nn

__all__ = ["UNSURE", "ClusterNet", "SpmResult", "SpmSettings", "cluster_features", "propose",
           "proposal_from_border", "select_border", "mark_unsure"]  # fmt: skip

# MSSG's thresholds in pixels of a full 775×522 GlaS image, as fractions of the image area.
_GLAS_AREA = 775 * 522
BORDER_MIN_AREA = 10_000 / _GLAS_AREA
MSSG_HOLE_MAX = 15_000 / _GLAS_AREA
# (border area above this fraction of the image, erode first, smallest object kept in pixels)
_CLEANUP = ((0.70, True, 1000), (0.45, True, 600), (0.25, False, 400), (0.20, False, 100),
            (0.10, False, 50))  # fmt: skip


@dataclass
class SpmSettings:
    """Per-image clustering settings (paper: scale 1, channels 128, iterations 50, tol 0)."""

    scale: float = 0.5
    channels: int = 32
    n_conv: int = 3
    iterations: int = 50
    lr: float = 0.01
    momentum: float = 0.9
    continuity: float = 5.0
    tol: float = 0.0  # stop early when the loss changed by less than tol over 5 iterations
    clusters: int = 5
    seed: int = 9
    # enclosed holes up to this fraction of the image become interior (MSSG: 15,000 px of a
    # 775×522 image); 1 fills every hole the border closes (docs/benchmarks.md: no gain)
    hole_max: float = MSSG_HOLE_MAX


class ClusterNet(nn.Module):
    """[Conv3×3 → ReLU → BN] × n_conv, then Conv1×1 → BN: per-pixel responses (Kim & Kanezaki)."""

    def __init__(self, in_channels: int = 3, channels: int = 64, n_conv: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(n_conv):
            c_in = in_channels if i == 0 else channels
            layers += [nn.Conv2d(c_in, channels, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(channels)]
        layers += [nn.Conv2d(channels, channels, 1), nn.BatchNorm2d(channels)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def continuity_loss(response: torch.Tensor) -> torch.Tensor:
    """Mean L1 difference between vertical and horizontal neighbours of ``(N, C, H, W)``."""
    dy = (response[:, :, 1:] - response[:, :, :-1]).abs().mean()
    dx = (response[:, :, :, 1:] - response[:, :, :, :-1]).abs().mean()
    return dy + dx


def cluster_features(
    image: np.ndarray, settings: SpmSettings, device: str = "cpu"
) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Train a ``ClusterNet`` on one RGB image; return its features ``(h, w, C)`` at the working
    scale, the argmax labels ``(h, w)`` (Kim & Kanezaki's segmentation) and the loss per step."""
    h, w = image.shape[:2]
    size = (max(8, round(w * settings.scale)), max(8, round(h * settings.scale)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA) if settings.scale != 1 else image
    x = torch.from_numpy(small.transpose(2, 0, 1).astype(np.float32) / 255.0)[None].to(device)
    torch.manual_seed(settings.seed)
    net = ClusterNet(3, settings.channels, settings.n_conv).to(device).train()
    opt = torch.optim.SGD(net.parameters(), lr=settings.lr, momentum=settings.momentum)
    losses: list[float] = []
    for _ in range(settings.iterations):
        response = net(x)
        target = response.argmax(1).detach()
        loss = nn.functional.cross_entropy(response, target)
        loss = loss + settings.continuity * continuity_loss(response)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if settings.tol > 0 and len(losses) > 5 and abs(losses[-6] - losses[-1]) < settings.tol:
            break
    with torch.no_grad():
        response = net(x)[0]
    features = response.permute(1, 2, 0).float().cpu().numpy()
    return features, response.argmax(0).cpu().numpy().astype(np.int32), losses


def select_border(gray: np.ndarray, labels: np.ndarray, min_area: float = BORDER_MIN_AREA):
    """The darkest cluster covering more than ``min_area`` of the image, as a bool mask (the
    darkest cluster overall when none is that large)."""
    ids = np.unique(labels)
    means = [float(gray[labels == c].mean()) for c in ids]
    order = np.argsort(means)
    for i in order:
        region = labels == ids[i]
        if region.mean() > min_area:
            return region
    return labels == ids[order[0]]


def _remove_small(mask: np.ndarray, min_pixels: float) -> np.ndarray:
    count, comp, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = np.zeros(count, bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_pixels
    return keep[comp]


def proposal_from_border(border: np.ndarray, hole_max: float = MSSG_HOLE_MAX) -> np.ndarray:
    """MSSG's cleanup of a border mask → proposal map (0 background, 1 border, 2 interior).

    Size-dependent erosion and small-object removal (the larger the border cluster, the more
    noise it carries), a 5×5 dilation for sparse borders, then holes smaller than
    ``hole_max`` of the image filled: they are the interiors the border encloses."""
    area = border.size
    scale = area / _GLAS_AREA  # pixel thresholds in MSSG are for full-size GlaS images
    mask = border.astype(np.uint8)
    fraction = mask.mean()
    for above, erode, min_pixels in _CLEANUP:
        if fraction > above:
            if erode:
                mask = cv2.erode(mask, np.ones((3, 3), np.uint8))
            mask = _remove_small(mask, min_pixels * scale).astype(np.uint8)
            break
    if mask.mean() < 0.25:
        mask = cv2.dilate(mask, np.ones((5, 5), np.uint8))
    filled = mask.astype(bool)
    holes = ndimage.binary_fill_holes(filled) & ~filled
    count, comp, stats, _ = cv2.connectedComponentsWithStats(holes.astype(np.uint8), connectivity=4)
    small = np.zeros(count, bool)
    small[1:] = stats[1:, cv2.CC_STAT_AREA] < hole_max * area
    interior = small[comp]
    out = np.zeros(border.shape, np.uint8)
    out[filled] = 1
    out[interior] = 2
    return out


UNSURE = 3  # proposal value of pixels the segmentation losses ignore (see ``mark_unsure``)


def mark_unsure(proposal: np.ndarray, radius: float) -> np.ndarray:
    """The proposal with ``UNSURE`` where the background is enclosed once the gland's gaps are
    closed: a morphological closing of the gland (border ∪ interior) with a disk of ``radius``
    pixels of a 775×522 GlaS image (scaled with the image), then hole filling.

    Those pixels are either the lumen of a gland whose epithelial ring SPM left open, or stroma
    squeezed between glands; the proposal cannot tell, so MSG does not supervise them and the
    segmenter decides from what it learnt elsewhere. ``radius`` 0 returns the proposal as is."""
    if radius <= 0:
        return proposal
    r = max(1, round(radius * (proposal.size / _GLAS_AREA) ** 0.5))
    gland = ((proposal == 1) | (proposal == 2)).astype(np.uint8)
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    closed = cv2.morphologyEx(np.pad(gland, r), cv2.MORPH_CLOSE, disk)[r:-r, r:-r]
    out = proposal.copy()
    out[ndimage.binary_fill_holes(closed) & (gland == 0)] = UNSURE
    return out


@dataclass
class SpmResult:
    """Everything SPM found for one image (maps at the image's full resolution)."""

    proposal: np.ndarray  # uint8 {0 background, 1 border, 2 interior}
    clusters: np.ndarray  # uint8 k-means cluster ids
    argmax: np.ndarray  # int32 Kim & Kanezaki argmax labels
    border_cluster: int
    losses: list[float]


def _to_full(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if labels.shape == shape:
        return labels
    return cv2.resize(labels, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)


def propose(image: np.ndarray, settings: SpmSettings, device: str = "cpu") -> SpmResult:
    """Run SPM on one RGB ``uint8`` image."""
    features, argmax, losses = cluster_features(image, settings, device)
    h, w, c = features.shape
    km = KMeans(n_clusters=settings.clusters, random_state=settings.seed, n_init=1)
    clusters = km.fit_predict(features.reshape(-1, c)).reshape(h, w).astype(np.uint8)
    clusters = _to_full(clusters, image.shape[:2])
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    border = select_border(gray, clusters)
    border_id = int(np.bincount(clusters[border]).argmax())
    return SpmResult(
        proposal=proposal_from_border(border, settings.hole_max),
        clusters=clusters,
        argmax=_to_full(argmax, image.shape[:2]),
        border_cluster=border_id,
        losses=losses,
    )
