from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image

from colonseg.data.io import read_image, read_instances, read_mask, write_atomic, write_png
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


# --- issue 31: channel counts, bit depth, mask encodings --------------------------------------


def _one_line(fn, path, match):
    with pytest.raises(ColonsegError, match=match) as info:
        fn(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def _bands(n, h=12, w=16):
    return np.random.default_rng(1).integers(0, 256, (h, w, n), dtype=np.uint8)


@pytest.mark.parametrize(
    "name, write, match",
    [
        ("five.tif", lambda p: tifffile.imwrite(p, _bands(5), photometric="minisblack",
                                                planarconfig="contig"), "5 channels"),
        ("planar.tif", lambda p: tifffile.imwrite(p, np.moveaxis(_bands(5), -1, 0),
                                                  photometric="minisblack",
                                                  planarconfig="separate"), "5 channels"),
        ("two.tif", lambda p: tifffile.imwrite(p, _bands(2), photometric="minisblack",
                                               planarconfig="contig"), "2 channels"),
        ("stack.tif", lambda p: tifffile.imwrite(p, _bands(5)), "several images"),  # 12 pages
    ],
)  # fmt: skip
def test_other_channel_counts_and_tiff_stacks_are_refused(tmp_path, name, write, match):
    write(tmp_path / name)
    for reader in (read_image, read_mask):
        _one_line(reader, tmp_path / name, match)


def _with_sbit(png: bytes, bits: int, channels: int) -> bytes:
    """Insert an ``sBIT`` chunk after IHDR (8-byte signature + 25-byte IHDR chunk)."""
    body = b"sBIT" + bytes([bits] * channels)
    chunk = struct.pack(">I", channels) + body + struct.pack(">I", zlib.crc32(body))
    return png[:33] + chunk + png[33:]


def test_deep_pixels_are_scaled_by_their_bit_depth(tmp_path):
    grey = np.arange(192, dtype=np.uint8).reshape(12, 16)

    def stored(bits):  # grey as a ``bits``-deep sensor stores it in 16 bits
        return np.round(grey.astype(np.float64) * ((1 << bits) - 1) / 255).astype(np.uint16)

    cv2.imwrite(str(tmp_path / "ten.png"), stored(10))  # max 749 <= 1023: 10-bit
    tifffile.imwrite(tmp_path / "twelve.tif", stored(12))  # max 3005 <= 4095: 12-bit
    for name in ("ten.png", "twelve.tif"):
        np.testing.assert_array_equal(read_image(tmp_path / name)[..., 0], grey)
    # a dark 12-bit image (max 749 would infer 10 bits) whose sBIT declares 12
    dark = stored(10)
    ok, png = cv2.imencode(".png", dark)
    (tmp_path / "sbit.png").write_bytes(_with_sbit(png.tobytes(), 12, 1))
    expected = np.round(dark * (255 / 4095)).astype(np.uint8)
    np.testing.assert_array_equal(read_image(tmp_path / "sbit.png")[..., 0], expected)
    # a declaration the pixels exceed is wrong: the depth is inferred instead
    (tmp_path / "wrong.png").write_bytes(_with_sbit(png.tobytes(), 8, 1))
    np.testing.assert_array_equal(read_image(tmp_path / "wrong.png")[..., 0], grey)


def _packed_12bit_tiff(values: np.ndarray) -> bytes:
    """A minimal uncompressed grey TIFF with BitsPerSample 12 (two pixels in three bytes)."""
    h, w = values.shape
    a, b = values.astype(np.uint32).reshape(h, w // 2, 2).transpose(2, 0, 1)
    packed = np.stack([a >> 4, (a & 15) << 4 | b >> 8, b & 255], -1).astype(np.uint8).tobytes()
    tags = [(256, w), (257, h), (258, 12), (259, 1), (262, 1), (273, 8 + 2 + 9 * 12 + 4),
            (277, 1), (278, h), (279, len(packed))]  # fmt: skip
    ifd = struct.pack("<H", len(tags)) + b"".join(struct.pack("<HHII", t, 4, 1, v) for t, v in tags)
    return b"II*\0" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + packed


def test_tiff_declaring_12_bits_is_scaled_by_4095(tmp_path):
    dark = np.round(np.arange(192).reshape(12, 16) * (1023 / 191)).astype(np.uint16)
    (tmp_path / "packed.tif").write_bytes(_packed_12bit_tiff(dark))  # max 1023: 10 bits inferred
    expected = np.round(dark * (255 / 4095)).astype(np.uint8)
    np.testing.assert_array_equal(read_image(tmp_path / "packed.tif")[..., 0], expected)


@pytest.mark.parametrize(
    "pixels, match",
    [
        (np.full((8, 8), -5, np.int16), "negative pixel values"),
        (np.full((8, 8), 300.0, np.float32), "floating-point pixels from 300 to 300"),
        (np.full((8, 8), np.nan, np.float32), "floating-point pixels"),
        (np.full((8, 8), 70_000, np.uint32), "32-bit integer pixels"),
    ],
)
def test_pixels_of_unknown_scale_are_refused(tmp_path, pixels, match):
    tifffile.imwrite(tmp_path / "odd.tif", pixels)
    _one_line(read_image, tmp_path / "odd.tif", match)


def _disc(size=32):
    yy, xx = np.mgrid[:size, :size]
    return ((yy - size / 2) ** 2 + (xx - size / 3) ** 2 < (size / 4) ** 2).astype(np.uint8)


def _rgb_of(mask, colour):
    out = np.zeros((*mask.shape, 3), np.uint8)
    out[mask > 0] = colour
    return out


def _png(path, arr):  # RGB(A) in, written in OpenCV's BGR(A) order
    if arr.ndim == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR if arr.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
    cv2.imwrite(str(path), arr)
    return path


def _two_labels(m):  # labels 3 and 5 (instance ids of two glands), both below 128
    return (m * np.where(np.arange(len(m))[:, None] < len(m) // 2, 3, 5)).astype(np.uint8)


def _neopolyp(m):
    out = _rgb_of(m, (255, 0, 0))
    out[:4, :4] = (0, 255, 0)  # a green (non-neoplastic) polyp beside the red one
    return out


def _palette(m, colours):
    im = Image.fromarray(m, mode="P")
    im.putpalette(colours + [0, 0, 0] * (256 - len(colours) // 3))
    return im


@pytest.mark.parametrize(
    "name, encode",
    [
        ("sixteen.png", lambda m: m.astype(np.uint16) * 65535),
        ("ten_bit.png", lambda m: m.astype(np.uint16) * 1023),
        ("alpha_on_black.png", lambda m: np.dstack([np.zeros((*m.shape, 3), np.uint8), m * 255])),
        ("alpha_on_white.png", lambda m: np.dstack([np.full((*m.shape, 3), 255, np.uint8),
                                                    m * 255])),
        ("alpha_and_colour.png", lambda m: np.dstack([_rgb_of(m, (255, 0, 0)), m * 128])),
        ("dark_blue.png", lambda m: _rgb_of(m, (0, 0, 100))),
        ("grey_labels_rgb.png", lambda m: np.dstack([_two_labels(m)] * 3)),
        ("two_level16.png", lambda m: m.astype(np.uint16) * 300),  # 10-bit depth, 300 < 512
    ],
)  # fmt: skip
def test_more_mask_encodings_are_read(tmp_path, name, encode):
    mask = _disc()
    np.testing.assert_array_equal(read_mask(_png(tmp_path / name, encode(mask))), mask)


def test_16_bit_instance_labels_keep_their_ids(tmp_path):
    labels = np.zeros((8, 8), np.uint16)
    labels[1:3, 1:3], labels[5:7, 5:7] = 1, 300
    cv2.imwrite(str(tmp_path / "anno.png"), labels)
    np.testing.assert_array_equal(read_instances(tmp_path / "anno.png"), labels)


def test_neopolyp_colours_are_one_foreground(tmp_path):
    mask = _disc()
    expected = mask.copy()
    expected[:4, :4] = 1
    np.testing.assert_array_equal(read_mask(_png(tmp_path / "rg.png", _neopolyp(mask))), expected)


def _ignore_band(m, value=255, dtype=np.uint8):
    out = m.astype(dtype)
    out[:3] = value  # unlabelled rows marked 'ignore'
    return out


def _big_instance_ids(m):  # 16-bit instance ids 200 and 300: neither intensity nor small labels
    out = m.astype(np.uint16) * 300
    out[:4, :4] = 200
    return out


@pytest.mark.parametrize(
    "name, encode, match",
    [
        ("ignore.png", _ignore_band, r"\{0, 1, 255\}.*'ignore' value"),
        ("ignore16.png", lambda m: _ignore_band(m, 65535, np.uint16), "'ignore' value"),
        ("red_blue.png", lambda m: np.maximum(_rgb_of(m, (255, 0, 0)),
                                              _rgb_of(1 - m, (0, 0, 255))),
         r"several label colours \(red .*, blue .*\)"),
        ("dark_class.png", lambda m: np.maximum(_rgb_of(m[:, ::-1] * (1 - m), (255, 0, 0)),
                                                _rgb_of(m, (0, 0, 90))),
         "darker than the threshold"),
        ("alpha_differs.png", lambda m: np.dstack([np.dstack([m * 255] * 3), m.T * 255]),
         "colour channels and the alpha channel hold different masks"),
        ("labels16.png", _big_instance_ids, "neither an intensity mask nor labels below 128"),
    ],
)  # fmt: skip
def test_ambiguous_masks_are_refused(tmp_path, name, encode, match):
    _one_line(read_mask, _png(tmp_path / name, encode(_disc())), match)


def test_palette_ignore_index_is_refused(tmp_path):
    voc = [0, 0, 0, 128, 0, 0] + [0, 0, 0] * 253 + [224, 224, 192]  # VOC: 255 = void boundary
    _palette(_ignore_band(_disc()), voc).save(tmp_path / "voc.png")
    _one_line(read_mask, tmp_path / "voc.png", r"palette indices \{0, 1, 255\}")
    _palette(_disc(), voc).save(tmp_path / "plain.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "plain.png"), _disc())


def test_unique_stems_suffix_repeats_and_never_collide():
    from colonseg.data.io import unique_stems

    assert unique_stems(["a", "a", "a_2", "b", "a"]) == ["a", "a_2", "a_2_2", "b", "a_3"]
    many = unique_stems(["x"] * 20_000)  # each name is probed against all taken ones
    assert len(set(many)) == 20_000 and many[-1] == "x_20000"
