"""How mask files encode their labels, and the one rule that turns each encoding into 0/1.

A binary mask is read correctly or refused with a one-line message saying what was found and
what is expected; it is never read as empty (or merged) by a guess. The rules, in order:

``RGBA``      the alpha channel is ignored when it is constant; the label is read from the alpha
              channel when the colour channels are constant (a label drawn on a transparent layer);
              when both vary they must hold the same mask, else the file is refused.
``colour``    (channels differ by more than a quarter of full scale) foreground is any channel
              >= half scale, or >= half the brightest value when every colour is dimmer (a label
              drawn in dark blue). Refused when half or more of the coloured pixels fall below
              that threshold (a dark class beside a bright one), and when more than one colour
              is present (each covering >= 0.1 % of the pixels: JPEG edge colours are noise)
              unless they are the class colours of a known scheme (``neopolyp`` red/green, BKAI).
``grey``      (one channel, or RGB channels that agree):
              - 0 and one other value (0/1, 0/255, 0/65535...): foreground is that value;
              - lossless labels ``1..k`` plus one high value ``X >= 128`` (``{0, 1, 255}``): ``X``
                looks like an 'ignore' value (unlabelled pixels): refused, since reading it as
                foreground or background would both be wrong;
              - lossless, every value below 128: a label map (GlaS instance ids, class indices):
                every nonzero pixel is foreground;
              - lossless otherwise: an intensity mask thresholded at half scale (128 for 8 bits,
                half of ``2**bits`` for deeper files); refused when half or more of the nonzero
                pixels fall below it (neither an intensity mask nor small labels). CVC-ClinicDB's
                faint greys (< 31 % of the nonzero pixels) are thresholded away as before;
              - lossy (JPEG) reaching half scale: thresholded at half scale (Kvasir-SEG);
              - lossy below half scale (a 0/1 mask saved as JPEG, values 0..3): thresholded at half
                of the typical nonzero value (the median), at least 1.
``palette``   indices are labels: refused on the 'ignore' pattern above, else a pixel is foreground
              when its palette colour is not black.

Example:
    >>> binarize_mask(np.array([[0, 1], [2, 0]], np.uint8), lossy=True).tolist()  # 0/1 JPEG
    [[0, 1], [1, 0]]
"""

from __future__ import annotations

import numpy as np

from colonseg.errors import ColonsegError

__all__ = ["binarize_mask"]

_COLOUR_NAMES = ("black", "red", "green", "yellow", "blue", "magenta", "cyan", "white")
_NOISE_FLOOR = 0.001  # a colour covering less than this share of the pixels is edge noise
_AMBIGUOUS_SHARE = 0.5  # labelled pixels a threshold would drop before a mask is refused
_EXPECTED = "expected 0/1 or 0/255 grey, labels 0..k below 128, or one colour on black"


def binarize_mask(
    arr: np.ndarray,
    *,
    lossy: bool = False,
    bits: int | None = None,
    palette: np.ndarray | None = None,
    source: str = "mask",
) -> np.ndarray:
    """Turn a decoded mask into ``(H, W) uint8`` 0/1 by the rules in the module docstring.

    Args:
        arr: integer pixels as stored, ``(H, W)`` or ``(H, W, C)`` with C in 1, 3, 4.
        lossy: the file was JPEG-compressed (values carry compression noise).
        bits: significant bits of the pixels (default: the dtype's, 8 for uint8).
        palette: ``(N, 3)`` colours when ``arr`` holds palette indices.
        source: what to name in error messages (the file path).

    Raises:
        ColonsegError: the encoding is ambiguous (see the module docstring).
    """
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    if arr.dtype.kind != "u" and (arr.dtype.kind != "i" or (arr.size and arr.min() < 0)):
        raise ColonsegError(f"{source}: mask pixels are {arr.dtype} with negative or fractional "
                            "values; expected unsigned integers")  # fmt: skip
    half = 1 << ((bits or 8 * arr.dtype.itemsize) - 1)
    if palette is not None:
        _refuse_ignore_value(_values(arr), source, "palette indices")
        coloured = np.zeros(max(len(palette), int(arr.max()) + 1), np.uint8)
        coloured[: len(palette)] = np.asarray(palette).max(axis=1) > 0
        return coloured[arr]
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[2] == 4:
        rgb, alpha = arr[..., :3], arr[..., 3]
        if alpha.min() == alpha.max():
            arr = rgb
        elif (rgb == rgb[0, 0]).all():
            arr = alpha  # the label lives in the alpha channel alone
        else:
            return _colour_and_alpha(rgb, alpha, lossy, half, source)
    if arr.ndim == 3:
        r, g, b = arr[..., 0], arr[..., 1], arr[..., 2]
        top = np.maximum(np.maximum(r, g), b)
        coloured = top - np.minimum(np.minimum(r, g), b) > half // 4
        if coloured.any() and not (lossy and coloured.mean() < _NOISE_FLOOR):
            return _colour_foreground(arr, coloured, half, source)
        arr = top
    return _grey_foreground(arr, lossy, half, source)


def _colour_and_alpha(
    rgb: np.ndarray, alpha: np.ndarray, lossy: bool, half: int, source: str
) -> np.ndarray:
    """Both vary: accept them only when they hold the same mask (99.5 % of the pixels)."""
    bits = half.bit_length()
    from_alpha = binarize_mask(alpha, lossy=lossy, bits=bits, source=source)
    try:
        from_colour = binarize_mask(rgb, lossy=lossy, bits=bits, source=source)
    except ColonsegError:  # colours no rule reads: they cannot match the alpha either
        from_colour = None
    if from_colour is None or (from_colour != from_alpha).mean() > 0.005:
        raise ColonsegError(
            f"{source}: the colour channels and the alpha channel hold different masks; expected "
            "the label in the colour channels (alpha constant) or in the alpha channel alone"
        )
    return from_colour


def _colour_foreground(arr: np.ndarray, coloured: np.ndarray, half: int, source: str) -> np.ndarray:
    brightest = int(arr.max())
    cut = half if brightest >= half else (brightest + 1) // 2  # one dim colour is still a label
    lit3 = (arr >= cut).view(np.uint8)
    code = lit3[..., 0] | lit3[..., 1] << 1 | lit3[..., 2] << 2
    lit = code > 0
    dark = int((coloured & ~lit).sum())
    if dark >= _AMBIGUOUS_SHARE * (dark + int(lit.sum())):
        raise ColonsegError(
            f"{source}: colour mask with {100 * dark / (dark + lit.sum()):.0f}% of its coloured "
            f"pixels darker than the threshold {cut} (brightest value {brightest}): a label in a "
            f"dark colour would be lost; {_EXPECTED}"
        )
    counts = np.bincount(code.ravel(), minlength=8)
    present = {c for c in range(1, 8) if counts[c] >= max(1, _NOISE_FLOOR * code.size)}
    if len(present) > 1 and not any(present <= s for s in _scheme_codes()):
        found = ", ".join(f"{_COLOUR_NAMES[c]} {100 * counts[c] / code.size:.1f}%" for c in present)
        raise ColonsegError(
            f"{source}: colour mask with several label colours ({found}) of no known class "
            f"scheme ({_scheme_text()}); {_EXPECTED}"
        )
    return lit.astype(np.uint8)


def _grey_foreground(grey: np.ndarray, lossy: bool, half: int, source: str) -> np.ndarray:
    values = _values(grey)
    labels = values[values > 0]
    if labels.size <= 1:
        return (grey > 0).astype(np.uint8)
    if lossy:
        if labels[-1] >= half:
            return (grey >= half).astype(np.uint8)
        level = float(np.median(grey[grey > 0]))
        return (grey >= max(1, int(np.ceil(level / 2)))).astype(np.uint8)
    _refuse_ignore_value(values, source, "values")
    if labels[-1] < 128:
        return (grey > 0).astype(np.uint8)
    nonzero = int(np.count_nonzero(grey))
    kept = int((grey >= half).sum())
    if nonzero - kept >= _AMBIGUOUS_SHARE * nonzero:
        raise ColonsegError(
            f"{source}: mask values {int(labels[0])}..{int(labels[-1])} with "
            f"{100 * (nonzero - kept) / nonzero:.0f}% of the labelled pixels below half scale "
            f"({half}): neither an intensity mask nor labels below 128; {_EXPECTED}"
        )
    return (grey >= half).astype(np.uint8)


def _values(arr: np.ndarray) -> np.ndarray:
    """The distinct values of an integer array (a histogram for 8 and 16 bits: no sort)."""
    if arr.dtype.itemsize > 2:
        return np.unique(arr)
    return np.flatnonzero(np.bincount(arr.ravel(), minlength=1)).astype(arr.dtype)


def _refuse_ignore_value(values: np.ndarray, source: str, what: str) -> None:
    """Refuse ``{0?, 1..k, X}`` with ``X >= 128`` apart from the labels: ``X`` marks 'ignore'."""
    labels = values[values > 0]
    if labels.size < 2 or labels[-1] < 128 or labels[-2] >= 128:
        return
    small = labels[:-1]
    if small[0] == 1 and small[-1] == small.size and labels[-1] > small[-1] + 1:
        shown = values.tolist() if values.size <= 6 else [*values[:3].tolist(), "...", labels[-1]]
        raise ColonsegError(
            f"{source}: mask {what} {{{', '.join(map(str, shown))}}}: labels 1..{small.size} "
            f"plus {int(labels[-1])}, which looks like an 'ignore' value; {_EXPECTED} (set the "
            "ignored pixels to 0 or to a label first)"
        )


def _scheme_codes() -> list[set[int]]:
    from colonseg.data.labels import SCHEMES  # labels imports io, which imports this module

    return [{(r >= 128) + 2 * (g >= 128) + 4 * (b >= 128) for r, g, b in s.colours[1:]}
            for s in SCHEMES.values()]  # fmt: skip


def _scheme_text() -> str:
    from colonseg.data.labels import SCHEMES

    return "; ".join(
        f"{name}: "
        + ", ".join(f"{c}={rgb}" for c, rgb in zip(s.class_names[1:], s.colours[1:], strict=True))
        for name, s in SCHEMES.items()
        if s.multiclass
    )
