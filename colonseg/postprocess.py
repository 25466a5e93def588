"""Post-processing of predicted masks, configurable step by step.

Steps, applied in this order when enabled:

``refine=NAME``    multi-class models: the class probabilities at the model's input resolution
                   are refined by a trained region refiner (:mod:`colonseg.models.refiner`;
                   ``NAME`` a zoo name or a refiner checkpoint folder) from the image and
                   region-wise class evidence, before anything else
                   (:meth:`PostProcess.refine_probs`; the Predictor loads the refiner once). A
                   checkpoint's own default may name zoo refiners only: a folder is opened only
                   when the user names it (``--postprocess refine=runs/refiner/model``).
``smooth=S``       Gaussian smoothing of the probability maps at the model's input resolution,
                   σ = ``S`` pixels (``smooth`` alone: 4, the anomaly-map smoothing of
                   PatchCore, PaDiM and RD4AD), before anything else
                   (:meth:`PostProcess.smooth_probs`).
``fov``            outside the endoscope's field of view (the black border, burnt-in text and
                   status boxes; :func:`colonseg.data.field_of_view.valid_area`) every pixel
                   becomes background with certainty, before thresholding
                   (:meth:`PostProcess.restrict`, which needs the image); the Predictor also
                   paints text over the mucosa out of the frame before the model sees it.
``otsu``           threshold the probability map at Otsu's threshold (as MAPSeg's demo does)
                   instead of the model's fixed threshold; never below ``OTSU_FLOOR`` (0.2), so
                   a frame with no polyp does not turn its background noise into a mask.
                   ``otsu=F`` sets the floor; ``otsu=0`` is plain Otsu, MAPSeg's own rule.
``close=K``        morphological closing with a ``K x K`` square (MAPSeg's demo: ``close=5``).
``morphology``     adaptive morphology: each connected region is closed then opened with an
                   elliptical kernel scaled to its size (``~sqrt(area) / 10``, odd, 3..15 px), so
                   large polyps lose ragged edges and small ones are not erased.
``fill_holes``     fill holes inside regions.
``min_area=F``     drop connected regions smaller than the fraction ``F`` of the image.
``keep_largest``   keep only the largest region.
``class_vote``     multi-class models: every connected region takes one class, the one with the
                   largest summed probability over the region (region-wise class consistency).

A pipeline is written as a comma-separated spec, e.g. ``"fill_holes,min_area=0.001,class_vote"``
(``""`` or ``"none"``: no post-processing). Checkpoints record their default spec; ``predict``,
``evaluate`` and the app take ``--postprocess SPEC`` to change it.

Example:
    >>> pp = PostProcess.parse("fill_holes,min_area=0.001")
    >>> mask, classes = pp(prob, mask)            # binary: classes is the mask
    >>> probs = PostProcess.parse("fov").restrict(probs, image)   # before thresholding
    >>> probs = PostProcess.parse("refine=runs/refiner/model").refine_probs(probs, image, net)
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import cv2
import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

from colonseg.data.field_of_view import valid_area
from colonseg.errors import ColonsegError

__all__ = ["OTSU_FLOOR", "PostProcess"]

OTSU_FLOOR = 0.2
_VALUED = {  # step -> (value when written bare, valid values, what to write)
    "smooth": (4.0, lambda v: 0 <= v <= 64, "a Gaussian sigma in pixels such as smooth=4"),
    "otsu": (OTSU_FLOOR, lambda v: 0 <= v < 1, "a floor in [0, 1) such as otsu=0.1"),
    "close": (5, lambda v: v >= 2, "a kernel size in pixels such as close=5"),
    "min_area": (0.001, lambda v: 0 <= v < 1, "a fraction of the image such as min_area=0.001"),
}
_NAMED = {"refine": "a refiner checkpoint folder or zoo name such as refine=runs/refiner/model"}


@dataclass(frozen=True)
class PostProcess:
    """The enabled steps (see the module docstring); all off by default."""

    refine: str = ""  # refiner checkpoint folder or zoo name; "": off
    smooth: float = 0.0  # sigma in model-input pixels; 0: off
    fov: bool = False
    otsu: float | None = None  # the floor; None: off
    close: int = 0
    morphology: bool = False
    fill_holes: bool = False
    min_area: float = 0.0
    keep_largest: bool = False
    class_vote: bool = False

    @classmethod
    def parse(cls, spec: str | None) -> PostProcess:
        """``"step,step=value,..."`` → :class:`PostProcess` (one-line error on a bad spec)."""
        spec = (spec or "").strip()
        if spec.lower() in ("", "none", "off"):
            return cls()
        names = [f.name for f in fields(cls)]
        values: dict[str, bool | float | str] = {}
        for item in spec.split(","):
            name, _, value = item.strip().partition("=")
            if name not in names:
                raise ColonsegError(
                    f"post-processing '{spec}': unknown step '{name}' (steps: {', '.join(names)})"
                )
            if name in _NAMED:
                if not value.strip():
                    raise ColonsegError(f"post-processing '{spec}': {name} takes {_NAMED[name]}")
                values[name] = value.strip()
            elif name in _VALUED:
                default, valid, meaning = _VALUED[name]
                try:
                    number = type(default)(value) if value else default
                except ValueError:
                    number = None
                if number is None or not valid(number):
                    raise ColonsegError(
                        f"post-processing '{spec}': {name} takes {meaning}, not '{value}'"
                    )
                values[name] = number
            elif value:
                raise ColonsegError(f"post-processing '{spec}': step '{name}' takes no value")
            else:
                values[name] = True
        return cls(**values)

    def spec(self) -> str:
        """The canonical spec string (``""`` when nothing is enabled)."""
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _NAMED:
                if value:
                    parts.append(f"{f.name}={value}")
            elif f.name in _VALUED:
                if value is not None and (value > 0 or f.name == "otsu"):
                    bare = f.name == "otsu" and value == OTSU_FLOOR
                    parts.append(f.name if bare else f"{f.name}={value:g}")
            elif value is True:
                parts.append(f.name)
        return ",".join(parts)

    def __bool__(self) -> bool:
        return bool(self.spec())

    def refine_probs(self, probs: np.ndarray, image: np.ndarray, refiner: Any) -> np.ndarray:
        """With ``refine``: model-resolution class probabilities ``(C, S, S)`` of ``image`` (RGB
        uint8, any size) refined by ``refiner``, the loaded
        :class:`~colonseg.models.refiner.RegionRefiner` that ``refine`` names.

        Raises:
            ColonsegError: the probabilities are a binary model's (one channel).
        """
        if not self.refine:
            return probs
        if probs.shape[0] == 1:
            raise ColonsegError(
                f"refine={self.refine}: refines multi-class models' class probabilities; "
                "this model is binary"
            )
        return refiner.refine(probs, image)

    def smooth_probs(self, probs: np.ndarray) -> np.ndarray:
        """With ``smooth``: model-resolution probabilities ``(C, S, S)`` blurred channel by
        channel (a linear filter: class probabilities still sum to one)."""
        if not self.smooth:
            return probs
        return np.stack(
            [cv2.GaussianBlur(p, (0, 0), self.smooth, borderType=cv2.BORDER_REFLECT) for p in probs]
        )

    def restrict(self, probs: np.ndarray, image: np.ndarray) -> np.ndarray:
        """With ``fov``: probabilities ``(C, H, W)`` (``C = 1``: the polyp probability; else
        background first) made certain background outside ``image``'s field of view."""
        if not self.fov:
            return probs
        outside = valid_area(image, margin=0.0) == 0
        probs = probs.copy()
        probs[:, outside] = 0.0
        if probs.shape[0] > 1:
            probs[0, outside] = 1.0
        return probs

    def __call__(
        self,
        prob: np.ndarray,
        mask: np.ndarray,
        probs: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Post-process one prediction.

        Args:
            prob: polyp probability ``(H, W)`` in [0, 1].
            mask: the thresholded mask ``(H, W)`` uint8 {0, 1}.
            probs: multi-class models: class probabilities ``(C, H, W)``, background first.

        Returns:
            ``(mask, classes)``: the new mask and class map (``classes`` is the mask for binary
            models; polyp pixels take their most probable class unless ``class_vote`` is on).
        """
        if self.otsu is not None:
            mask = (prob >= max(_otsu(prob), self.otsu)).astype(np.uint8)
        if self.close:
            mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((self.close,) * 2, np.uint8))
        if self.morphology:
            mask = adaptive_morphology(mask)
        if self.fill_holes:
            mask = ndimage.binary_fill_holes(mask).astype(np.uint8)
        if self.min_area > 0 or self.keep_largest:
            mask = filter_regions(mask, self.min_area, self.keep_largest)
        if probs is None or probs.shape[0] == 1:
            return mask, mask
        if self.class_vote:
            return mask, vote_classes(mask, probs)
        best = probs[1:].argmax(0).astype(np.uint8) + 1
        return mask, np.where(mask > 0, best, 0).astype(np.uint8)

    def heat_top(self, prob: np.ndarray) -> float:
        """The probability a heat map of ``prob`` should show at full colour: 1, or with
        ``otsu`` (the mask is cut relative to the map, as for anomaly maps whose values stay
        small) the map's own maximum, never below the Otsu floor."""
        if self.otsu is None:
            return 1.0
        return max(float(prob.max()), self.otsu, 1e-6)


def _otsu(prob: np.ndarray) -> float:
    if float(prob.max()) - float(prob.min()) < 1e-6:
        return 1.0
    return float(threshold_otsu(prob))


def _regions(mask: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    return n, labels, stats


def adaptive_morphology(mask: np.ndarray) -> np.ndarray:
    """Close then open every connected region with a kernel scaled to its size."""
    n, labels, stats = _regions(mask)
    out = np.zeros_like(mask, dtype=np.uint8)
    h, w = mask.shape
    for i in range(1, n):
        x, y, bw, bh, area = stats[i]
        k = int(np.clip(round(np.sqrt(area) / 10), 3, 15)) | 1
        pad = k
        x0, y0, x1, y1 = (
            max(0, x - pad),
            max(0, y - pad),
            min(w, x + bw + pad),
            min(h, y + bh + pad),
        )
        region = (labels[y0:y1, x0:x1] == i).astype(np.uint8)
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
        region = cv2.morphologyEx(region, cv2.MORPH_CLOSE, kernel)
        region = cv2.morphologyEx(region, cv2.MORPH_OPEN, kernel)
        out[y0:y1, x0:x1] |= region
    return out


def filter_regions(
    mask: np.ndarray, min_area: float = 0.0, keep_largest: bool = False
) -> np.ndarray:
    """Drop regions below ``min_area`` (fraction of the image); optionally keep the largest."""
    n, labels, stats = _regions(mask)
    if n <= 1:
        return mask.astype(np.uint8)
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = areas >= min_area * mask.size
    if keep_largest:
        keep &= np.arange(n - 1) == areas.argmax()
    lut = np.concatenate([[0], keep.astype(np.uint8)])
    return lut[labels]


def vote_classes(mask: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Class map where each connected region of ``mask`` takes its probability-weighted class."""
    n, labels, _ = _regions(mask)
    if n <= 1:
        return np.zeros(mask.shape, np.uint8)
    flat = labels.reshape(-1)
    scores = np.stack(
        [np.bincount(flat, weights=p.reshape(-1), minlength=n) for p in probs[1:]], axis=1
    )  # (regions, C-1)
    lut = (scores.argmax(1) + 1).astype(np.uint8)
    lut[0] = 0
    return lut[labels]
