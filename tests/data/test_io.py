from __future__ import annotations

import cv2
import numpy as np
import pytest
import tifffile

from colonseg.data.io import read_image, read_mask, write_atomic, write_png
from colonseg.errors import ColonsegError


def _rgb(h=12, w=16):
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("ext", [".png", ".bmp", ".tif"])
def test_lossless_roundtrip(tmp_path, ext):
    img = _rgb()
    cv2.imwrite(str(tmp_path / f"a{ext}"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    np.testing.assert_array_equal(read_image(tmp_path / f"a{ext}"), img)


def test_jpeg_is_rgb_order(tmp_path):
    img = np.zeros((16, 16, 3), np.uint8)
    img[..., 0] = 250  # pure red
    cv2.imwrite(str(tmp_path / "r.jpg"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    out = read_image(tmp_path / "r.jpg")
    assert out[..., 0].mean() > 200 and out[..., 2].mean() < 50


def test_planar_rgb_tiff_via_tifffile(tmp_path):
    img = _rgb()
    tifffile.imwrite(tmp_path / "p.tiff", np.moveaxis(img, -1, 0), planarconfig="separate")
    np.testing.assert_array_equal(read_image(tmp_path / "p.tiff"), img)


def test_gray_rgba_and_16bit(tmp_path):
    gray = np.arange(12 * 16, dtype=np.uint8).reshape(12, 16)
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    assert read_image(tmp_path / "g.png").shape == (12, 16, 3)
    rgba = np.dstack([_rgb(), np.full((12, 16), 7, np.uint8)])
    cv2.imwrite(str(tmp_path / "a.png"), rgba)
    assert read_image(tmp_path / "a.png").shape == (12, 16, 3)
    deep = gray.astype(np.uint16) * 257
    cv2.imwrite(str(tmp_path / "d.png"), deep)
    np.testing.assert_array_equal(read_image(tmp_path / "d.png")[..., 0], gray)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty"),
        (b"not an image at all", "not a readable image"),
        (b"\x89PNG\r\n\x1a\n\0\0", "not a readable"),
    ],
)
def test_bad_files_give_one_line_error(tmp_path, content, message):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(ColonsegError, match=message) as info:
        read_image(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ColonsegError, match="not found"):
        read_image(tmp_path / "nope.jpg")


def test_masks_binarised(tmp_path):
    m01 = np.zeros((8, 8), np.uint8)
    m01[2:5, 2:5] = 1
    cv2.imwrite(str(tmp_path / "m01.png"), m01)
    np.testing.assert_array_equal(read_mask(tmp_path / "m01.png"), m01)
    noisy = m01 * 255
    noisy[0, 0], noisy[3, 3] = 100, 140  # JPEG-like noise around 128
    cv2.imwrite(str(tmp_path / "m.png"), noisy)
    expected = m01.copy()
    expected[0, 0] = 0
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), expected)
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[1, 1] = (0, 200, 0)  # a green (non-neoplastic) BKAI pixel is foreground
    cv2.imwrite(str(tmp_path / "c.png"), rgb)
    assert read_mask(tmp_path / "c.png")[1, 1] == 1 and read_mask(tmp_path / "c.png").sum() == 1


def test_instance_label_png_is_foreground(tmp_path):
    labels = np.zeros((8, 8), np.uint8)
    labels[1:3, 1:3], labels[5:7, 5:7] = 1, 7  # GlaS-style instance ids
    cv2.imwrite(str(tmp_path / "anno.png"), labels)
    np.testing.assert_array_equal(read_mask(tmp_path / "anno.png"), (labels > 0).astype(np.uint8))


def test_write_atomic_leaves_nothing_on_failure(tmp_path):
    def boom(tmp):
        tmp.write_text("half")
        raise RuntimeError("crash")

    with pytest.raises(RuntimeError):
        write_atomic(tmp_path / "out.txt", boom)
    assert list(tmp_path.iterdir()) == []
    write_png(tmp_path / "ok.png", np.zeros((4, 4), np.uint8))
    assert [p.name for p in tmp_path.iterdir()] == ["ok.png"]
