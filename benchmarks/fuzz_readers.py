"""Bounded fuzzing of the file readers with hypothesis: a crash is any exception other than the
one-line ``ColonsegError`` (or a result of the wrong shape or type).

Seeds are small valid files of every supported kind (JPEG, PNG 8/16-bit/palette/RGBA, TIFF,
BMP, NIfTI); hypothesis mutates them — byte flips, truncation, inserted runs, spliced headers —
and also feeds raw random bytes. Each input goes through ``read_image``, ``read_mask`` and
``read_instances`` (image kinds) or the NIfTI volume reader (NIfTI kinds).

    python benchmarks/fuzz_readers.py --examples 2000 --out docs/fuzz_readers.json

Counts per reader (inputs, decoded, clean errors, crashes) print as a Markdown table;
``docs/reliability.md`` records the last run.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from colonseg.data.io import read_image, read_instances, read_mask
from colonseg.errors import ColonsegError


def _encode(ext: str, image: np.ndarray) -> bytes:
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    return cv2.imencode(ext, bgr)[1].tobytes()


def _pil(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def _nifti(volume: np.ndarray) -> bytes:
    import nibabel as nib

    img = nib.Nifti1Image(volume, np.eye(4))
    return img.to_bytes()


def seeds() -> dict[str, bytes]:
    """Small valid files, keyed by the extension they are saved under."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    mask = np.zeros((24, 32), np.uint8)
    mask[5:15, 8:20] = 255
    exif_photo = Image.fromarray(rgb)
    exif = exif_photo.getexif()
    exif[274] = 6
    buf = io.BytesIO()
    exif_photo.save(buf, format="JPEG", exif=exif)
    volume = rng.normal(size=(12, 10, 4)).astype(np.float32)
    return {
        "jpg": _encode(".jpg", rgb),
        "exif.jpg": buf.getvalue(),
        "png": _encode(".png", rgb),
        "mask.png": _encode(".png", mask),
        "16bit.png": _encode(".png", rgb.astype(np.uint16) * 257),
        "palette.png": _pil(Image.fromarray(rgb).convert("P"), "PNG"),
        "rgba.png": _pil(Image.fromarray(rgb).convert("RGBA"), "PNG"),
        "tif": _encode(".tif", rgb),
        "bmp": _encode(".bmp", rgb),
        "nii": _nifti(volume),
        "nii.gz": gzip.compress(_nifti(volume)),
    }


def mutations(seed: bytes):
    """A strategy of byte strings derived from ``seed``."""
    n = len(seed)
    flips = st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, 255)), min_size=1, max_size=8)

    def flip(pairs):
        out = bytearray(seed)
        for i, v in pairs:
            out[i] = v
        return bytes(out)

    header = min(n, 64)
    return st.one_of(
        flips.map(flip),  # a few bytes changed anywhere
        st.integers(0, n - 1).map(lambda k: seed[:k]),  # truncated
        st.tuples(st.integers(0, n), st.binary(min_size=1, max_size=64)).map(
            lambda t: seed[: t[0]] + t[1] + seed[t[0] :]
        ),  # bytes inserted
        st.tuples(st.integers(0, header - 1), st.integers(0, 2**32 - 1)).map(
            lambda t: seed[: t[0]] + t[1].to_bytes(4, "big") + seed[t[0] + 4 :]
        ),  # a header field overwritten by an arbitrary 32-bit value (sizes, offsets)
        st.binary(max_size=256),  # anything at all
    )


def _image(path: Path) -> None:
    image = read_image(path)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3, image.shape


def _mask(path: Path) -> None:
    mask = read_mask(path)
    assert mask.dtype == np.uint8 and mask.ndim == 2 and set(np.unique(mask)) <= {0, 1}


def _instances(path: Path) -> None:
    labels = read_instances(path)
    assert labels.dtype == np.int32 and labels.ndim == 2 and labels.min() >= 0


def _nifti_volume(path: Path) -> None:
    from colonseg.methods.medsam_box.data import _load_nifti

    _load_nifti.cache_clear()
    volume, affine = _load_nifti(path)
    assert volume.ndim == 3 and affine.shape == (4, 4)


IMAGE_READERS = {"read_image": _image, "read_mask": _mask, "read_instances": _instances}
NIFTI_READERS = {"nifti volume": _nifti_volume}


def fuzz(kind: str, seed: bytes, examples: int, folder: Path) -> list[dict]:
    """Run ``examples`` inputs derived from ``seed`` through every reader of that kind."""
    readers = NIFTI_READERS if kind.startswith("nii") else IMAGE_READERS
    counts = {name: Counter() for name in readers}
    crashes: dict[str, list[str]] = {name: [] for name in readers}
    path = folder / f"input.{kind}"

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(mutations(seed))
    def run(data: bytes) -> None:
        path.write_bytes(data)
        for name, check in readers.items():
            counts[name]["inputs"] += 1
            try:
                check(path)
                counts[name]["decoded"] += 1
            except ColonsegError as exc:
                counts[name]["clean errors"] += 1
                if "\n" in str(exc) or str(path) not in str(exc):
                    crashes[name].append(f"unclear message: {exc!r}")
            except Exception as exc:  # noqa: BLE001 - this is what the fuzzer looks for
                where = traceback.extract_tb(exc.__traceback__)[-1]
                crashes[name].append(
                    f"{exc.__class__.__name__} at {where.filename}:{where.lineno}: {exc}"
                )

    run()
    return [
        {
            "seed": kind,
            "reader": name,
            **{k: counts[name][k] for k in ("inputs", "decoded", "clean errors")},
            "crashes": len(crashes[name]),
            "crash_examples": sorted(set(crashes[name]))[:10],
        }
        for name in readers
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=500, help="inputs per seed file")
    parser.add_argument("--out", type=Path, help="write the counts as JSON here")
    args = parser.parse_args()
    start, rows = time.time(), []
    with tempfile.TemporaryDirectory(prefix="colonseg-fuzz-") as tmp:
        for kind, seed in seeds().items():
            rows += fuzz(kind, seed, args.examples, Path(tmp))
    keys = ("inputs", "decoded", "clean errors", "crashes")
    print("| seed file | reader | inputs | decoded | clean errors | crashes |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['seed']} | {r['reader']} | " + " | ".join(str(r[k]) for k in keys) + " |")
    total = {k: sum(r[k] for r in rows) for k in keys}
    print("| **all** | | " + " | ".join(str(total[k]) for k in keys) + " |")
    print(f"{time.time() - start:.0f} s")
    for r in rows:
        for line in r["crash_examples"]:
            print(f"CRASH {r['seed']} {r['reader']}: {line}")
    if args.out:
        args.out.write_text(json.dumps({"total": total, "per_seed": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
