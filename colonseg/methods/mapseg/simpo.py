"""SIMPO: synthetic polyp-like lesions pasted into normal colonoscopy frames (MAPSeg's supervision).

A lesion is a smooth random closed shape (a Fourier-perturbed ellipse, or a user shape mask)
placed inside the frame's valid endoscopic area, filled either from a geometrically transformed
copy of the same frame (*colon* fill) or from a texture colour-transferred to the frame's mucosa
in LAB (*texture* fill), blended with a soft edge and shaded so that it looks raised.

Example:
    >>> simpo = Simpo(textures=load_textures("../shared/datasets/textures-dtd"), p=0.5)
    >>> image, mask = simpo(frame, np.random.default_rng(0))   # mask all 0 when not synthesised
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from colonseg.data.field_of_view import valid_area
from colonseg.data.io import collect_images, read_image, read_mask
from colonseg.errors import ColonsegError

__all__ = ["Simpo", "image_files", "load_shapes", "load_textures", "shape_mask"]

FILLS = ("colon", "texture")


def shape_mask(size: int, rng: np.random.Generator, harmonics: int = 5) -> np.ndarray:
    """A smooth random closed shape in a ``size x size`` box: an ellipse whose radius is
    perturbed by a few low Fourier harmonics, randomly stretched and rotated."""
    theta = np.linspace(0, 2 * np.pi, 256, endpoint=False)
    radius = np.ones_like(theta)
    for k in range(2, harmonics + 1):
        radius += rng.uniform(0, 0.25 / k) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    aspect = rng.uniform(0.6, 1.0)
    x, y = radius * np.cos(theta), aspect * radius * np.sin(theta)
    rot = rng.uniform(0, np.pi)
    xr, yr = x * np.cos(rot) - y * np.sin(rot), x * np.sin(rot) + y * np.cos(rot)
    scale = 0.48 * size / max(np.abs(xr).max(), np.abs(yr).max())
    pts = np.stack([xr * scale + size / 2, yr * scale + size / 2], 1).round().astype(np.int32)
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [pts], 1)
    return mask


def image_files(folder: str | Path) -> list[Path]:
    """Every image file under ``folder`` (recursively, sorted); one-line error if none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ColonsegError(f"{folder}: folder not found")
    return collect_images([folder])


def load_textures(folder: str | Path, max_side: int = 320) -> list[np.ndarray]:
    """Every image under ``folder`` (DTD ``<class>/*.jpg``, MAPSeg's ``KTH/`` layout, any tree)."""
    out = []
    for f in image_files(folder):
        img = read_image(f)
        s = max_side / max(img.shape[:2])
        out.append(
            cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA) if s < 1 else img
        )
    return out


def load_shapes(folder: str | Path) -> list[np.ndarray]:
    """User shape masks (MAPSeg's ``polyp_like_mask/``), each cropped to its bounding box."""
    shapes = []
    for f in image_files(folder):
        m = read_mask(f)
        ys, xs = np.nonzero(m)
        if len(ys):
            shapes.append(m[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1])
    if not shapes:
        raise ColonsegError(f"{folder}: every shape mask is empty")
    return shapes


def _colour_transfer(texture: np.ndarray, image: np.ndarray, area: np.ndarray) -> np.ndarray:
    """Reinhard colour transfer in LAB: the texture takes the mucosa's mean and spread."""
    src = cv2.cvtColor(texture, cv2.COLOR_RGB2LAB).astype(np.float32)
    ref = cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float32)[area > 0]
    mu_s, sd_s = src.reshape(-1, 3).mean(0), src.reshape(-1, 3).std(0) + 1e-3
    mu_r, sd_r = ref.mean(0), ref.std(0) + 1e-3
    out = (src - mu_s) / sd_s * sd_r + mu_r
    return cv2.cvtColor(out.clip(0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


def _tissue(image: np.ndarray, area: np.ndarray, keep: float = 0.6) -> np.ndarray:
    """The central ``keep`` part of the field of view's bounding box, resized to the frame: pure
    mucosa, without the black border or overlays a whole-frame copy would paste in."""
    ys, xs = np.nonzero(area)
    cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
    hh, hw = keep * (ys.max() - ys.min() + 1) / 2, keep * (xs.max() - xs.min() + 1) / 2
    crop = image[int(cy - hh) : int(cy + hh) + 1, int(cx - hw) : int(cx + hw) + 1]
    return cv2.resize(crop, image.shape[1::-1], interpolation=cv2.INTER_LINEAR)


def _transform(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random rotation, zoom, shift and flip of ``image`` (reflected at the borders)."""
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), rng.uniform(-180, 180), rng.uniform(0.8, 1.6))
    m[:, 2] += rng.uniform(-0.2, 0.2, 2) * (w, h)
    out = cv2.warpAffine(image, m, (w, h), borderMode=cv2.BORDER_REFLECT_101)
    return out[:, ::-1] if rng.random() < 0.5 else out


@dataclass
class Simpo:
    """The lesion synthesiser; ``__call__`` returns ``(image, mask)``.

    Args:
        textures: texture images for the texture fill (required when ``"texture"`` is in fills).
        shapes: user shape masks; procedural Fourier shapes when empty.
        fills: which fills to draw from (``colon``, ``texture``), uniformly.
        p: probability that a frame receives a lesion at all.
        area_range: lesion area as a fraction of the valid area, drawn log-uniformly.
        lobes: probability that a lesion is lobulated (a cluster of domes).
        relief: probability that the fill's fine detail becomes surface relief.
    """

    textures: list[np.ndarray] = field(default_factory=list)
    shapes: list[np.ndarray] = field(default_factory=list)
    fills: tuple[str, ...] = FILLS
    p: float = 0.5
    area_range: tuple[float, float] = (0.04, 0.7)
    lobes: float = 0.0
    relief: float = 0.0

    def __post_init__(self) -> None:
        unknown = set(self.fills) - set(FILLS)
        if unknown or not self.fills:
            raise ColonsegError(f"SIMPO fills must be among {FILLS}, got {self.fills}")
        if "texture" in self.fills and not self.textures:
            raise ColonsegError("SIMPO texture fill needs textures (a DTD or KTH folder)")

    def lesion_mask(self, area: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A shape of realistic size placed inside ``area`` (the valid field of view)."""
        h, w = area.shape
        total = int(area.sum())
        if total < 64:
            return np.zeros_like(area)
        lo, hi = np.log(self.area_range[0]), np.log(self.area_range[1])
        side = max(8, round(np.sqrt(np.exp(rng.uniform(lo, hi)) * total * 4 / np.pi)))
        side = min(side, h, w)
        if self.shapes:
            base = self.shapes[int(rng.integers(len(self.shapes)))]
            shape = cv2.resize(base, (side, side), interpolation=cv2.INTER_NEAREST)
        else:
            shape = shape_mask(side, rng)
        inner = cv2.erode(area, np.ones((3, 3), np.uint8))
        ys, xs = np.nonzero(inner)
        i = int(rng.integers(len(ys)))  # a random valid pixel becomes the shape's centre
        y0, x0 = ys[i] - side // 2, xs[i] - side // 2
        mask = np.zeros_like(area)
        sy, sx = slice(max(0, y0), min(h, y0 + side)), slice(max(0, x0), min(w, x0 + side))
        mask[sy, sx] = shape[sy.start - y0 : sy.stop - y0, sx.start - x0 : sx.stop - x0]
        return mask & area

    def __call__(
        self,
        image: np.ndarray,
        rng: np.random.Generator,
        force: bool = False,
        area: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Paste a lesion with probability ``p`` (always with ``force``); ``area`` is the frame's
        precomputed :func:`valid_area`."""
        area = valid_area(image) if area is None else area
        if not force and rng.random() >= self.p:
            return image, np.zeros(image.shape[:2], np.uint8)
        mask = self.lesion_mask(area, rng)
        if not mask.any():
            return image, mask
        fill = self.fills[int(rng.integers(len(self.fills)))]
        if fill == "colon":
            source = _transform(_tissue(image, area), rng)
        else:
            texture = self.textures[int(rng.integers(len(self.textures)))]
            tiled = np.tile(texture, (image.shape[0] // texture.shape[0] + 1,
                                      image.shape[1] // texture.shape[1] + 1, 1))  # fmt: skip
            texture = _colour_transfer(
                _transform(tiled[: image.shape[0], : image.shape[1]], rng), image, area
            )
            # the texture as a surface pattern over the same mucosa, at a random strength
            beta = rng.uniform(0.4, 1.0)
            tissue = _transform(_tissue(image, area), rng).astype(np.float32)
            source = (beta * texture + (1 - beta) * tissue).astype(np.uint8)
        return _render(image, source, mask, rng, self.lobes, self.relief), mask


def _render(
    image: np.ndarray,
    source: np.ndarray,
    mask: np.ndarray,
    rng: np.random.Generator,
    lobes: float = 0.0,
    relief: float = 0.0,
) -> np.ndarray:
    """Paste ``source`` into ``image`` through ``mask`` as a raised lesion.

    A dome height field over the mask drives every effect: the fill is magnified towards the
    apex (mucosa stretched over a bump) and optionally smoothed, its colour shifts in LAB (most
    polyps are redder or paler than the wall around them), it is lit by a light near the camera
    (diffuse shading from the dome's normals plus specular glints), the base casts a soft shadow
    on the wall on the side away from the light, and the edge is feathered by a random width.
    With probability ``lobes`` the dome is a cluster of 2-5 smaller domes (lobulated polyps);
    with probability ``relief`` the fill's own fine detail also becomes surface relief, so the
    light brings out a nodular or pitted surface.
    """
    h, w = mask.shape
    dist = cv2.distanceTransform(mask, cv2.DIST_L2, 5)
    radius = max(float(dist.max()), 1.0)
    x = np.minimum(dist / (rng.uniform(0.3, 1.0) * radius), 1)  # flat to round tops
    height = 1 - (1 - x) ** 2
    ys, xs = np.nonzero(mask)
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    if lobes and rng.random() < lobes:
        for _ in range(int(rng.integers(2, 6))):
            i = int(rng.integers(len(ys)))
            r = rng.uniform(0.3, 0.7) * radius
            lobe = 1 - ((gy - ys[i]) ** 2 + (gx - xs[i]) ** 2) / r**2
            height = np.maximum(height, rng.uniform(0.7, 1.1) * lobe.clip(0, None))
    if relief and rng.random() < relief:
        gray = cv2.cvtColor(source, cv2.COLOR_RGB2GRAY).astype(np.float32)
        detail = gray - cv2.GaussianBlur(gray, (0, 0), 4)
        height = height + rng.uniform(0.02, 0.08) * detail / (detail.std() + 1e-3)
    height = cv2.GaussianBlur(height.clip(0, 1), (0, 0), max(1.0, radius / 8)) * mask
    cy, cx = ys.mean(), xs.mean()
    # magnify the fill towards the apex
    k = rng.uniform(0.1, 0.45) * height
    map_x = (cx + (gx - cx) * (1 - k)).astype(np.float32)
    map_y = (cy + (gy - cy) * (1 - k)).astype(np.float32)
    fill = cv2.remap(source, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    if rng.random() < 0.5:
        fill = cv2.GaussianBlur(fill, (0, 0), rng.uniform(0.5, 2.0))
    lab = cv2.cvtColor(fill, cv2.COLOR_RGB2LAB).astype(np.float32)
    lab += np.array([rng.uniform(-12, 18), rng.uniform(-4, 22), rng.uniform(-10, 10)], np.float32)
    fill = cv2.cvtColor(lab.clip(0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB).astype(np.float32)
    # light from near the camera: diffuse from the dome normals, specular glints near the apex
    elevation = rng.uniform(0.2, 0.8) * radius
    dy, dx = np.gradient(height * elevation)
    normal = np.dstack([-dx, -dy, np.ones_like(dx)])
    normal /= np.linalg.norm(normal, axis=2, keepdims=True)
    tilt, azimuth = rng.uniform(0, 0.6), rng.uniform(0, 2 * np.pi)
    light = np.array([tilt * np.cos(azimuth), tilt * np.sin(azimuth), 1.0])
    light /= np.linalg.norm(light)
    diffuse = normal @ light / light[2]
    shade = (0.25 + 0.75 * diffuse.clip(0, 1.5)) * rng.uniform(0.95, 1.15)
    halfway = (light + np.array([0.0, 0.0, 1.0])) / np.linalg.norm(light + [0.0, 0.0, 1.0])
    glint = (normal @ halfway).clip(0, 1) ** rng.uniform(300, 3000) * rng.uniform(0, 1.2)
    lesion = fill * shade[..., None] + 255 * glint[..., None] * (height[..., None] > 0.2)
    # soft shadow cast on the wall around the base, away from the light
    ring = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), max(1.5, radius / 4))
    offset = rng.uniform(0.15, 0.4) * radius * np.array([-np.cos(azimuth), -np.sin(azimuth)])
    shift = np.float32([[1, 0, offset[0]], [0, 1, offset[1]]])
    shadow = cv2.warpAffine(ring, shift, (w, h)) * (1 - mask) * rng.uniform(0.0, 0.4)
    wall = image.astype(np.float32) * (1 - shadow)[..., None]
    alpha = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), rng.uniform(0.7, 2.5))
    alpha = np.where(mask > 0, np.maximum(alpha, 0.5), alpha)[..., None]
    out = (1 - alpha) * wall + alpha * lesion
    return out.clip(0, 255).astype(np.uint8)
