"""The bad-input corpus (issue 9, ``docs/reliability.md``): every case is generated here and
must end in correct handling or a one-line :class:`ColonsegError` naming the file."""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
import torch
from PIL import Image, ImageOps

from colonseg.data.check import run_check
from colonseg.data.io import MAX_PIXELS, read_image, read_mask
from colonseg.data.layouts import find_pairs
from colonseg.data.synthetic import create_disc_image, write_folder_dataset
from colonseg.errors import ColonsegError


def _rgb(h=24, w=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _write(path: Path, image: np.ndarray, params: tuple = ()) -> Path:
    if path.suffix in (".tif", ".tiff"):
        tifffile.imwrite(path, image)
    else:
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
        cv2.imwrite(str(path), bgr, list(params))
    return path


def _one_line_error(fn, path, match):
    with pytest.raises(ColonsegError, match=match) as info:
        fn(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message and "Traceback" not in message
    return message


# --- images ---------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", [".jpg", ".png", ".tif"])
def test_zero_byte_and_truncated_files(tmp_path, ext):
    empty = tmp_path / f"empty{ext}"
    empty.write_bytes(b"")
    _one_line_error(read_image, empty, "file is empty")
    full = _write(tmp_path / f"full{ext}", _rgb())
    cut = tmp_path / f"cut{ext}"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    _one_line_error(read_image, cut, "not a readable image|cannot decode TIFF")


@pytest.mark.parametrize(
    "name, content",
    [
        ("notes.jpg", b"meeting notes, not a picture\n" * 20),
        ("page.png", b"<!DOCTYPE html><html><body>404</body></html>"),
        ("archive.tif", b"PK\x03\x04" + bytes(200)),
        ("random.bmp", np.random.default_rng(1).bytes(4096)),
    ],
)
def test_non_images_with_image_extensions(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    _one_line_error(read_image, path, "not a readable image|cannot decode TIFF")


def test_rgba_16bit_grayscale_and_palette_images_become_rgb(tmp_path):
    rgb = _rgb()
    rgba = cv2.cvtColor(np.dstack([rgb, np.full(rgb.shape[:2], 9, np.uint8)]), cv2.COLOR_RGBA2BGRA)
    cv2.imwrite(str(tmp_path / "rgba.png"), rgba)
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png"), rgb)
    deep = rgb.astype(np.uint16) * 257
    _write(tmp_path / "deep.png", deep)
    tifffile.imwrite(tmp_path / "deep.tif", deep)
    for name in ("deep.png", "deep.tif"):
        np.testing.assert_array_equal(read_image(tmp_path / name), rgb)
    gray = rgb[..., 0]
    _write(tmp_path / "gray.png", gray)
    np.testing.assert_array_equal(read_image(tmp_path / "gray.png"), np.dstack([gray] * 3))
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "pal.png")
    expected = np.asarray(Image.open(tmp_path / "pal.png").convert("RGB"))
    np.testing.assert_array_equal(read_image(tmp_path / "pal.png"), expected)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_rotated_photos_are_read_upright(tmp_path, orientation):
    photo = Image.fromarray(_rgb(20, 36))
    exif = photo.getexif()
    exif[274] = orientation
    path = tmp_path / f"o{orientation}.jpg"
    photo.save(path, exif=exif, quality=95)
    upright = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    got = read_image(path)
    assert got.shape == upright.shape
    assert np.abs(got.astype(int) - upright).mean() < 2  # the two JPEG decoders round alike


def _png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header claims ``width x height`` (a decompression bomb's header)."""
    raw = b"".join(b"\0" + bytes(1) for _ in range(1))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_claiming(50_000, 50_000))  # 2.5 gigapixels in a 70-byte file
    msg = _one_line_error(read_image, path, "image too large")
    assert f"{MAX_PIXELS / 1e6:.0f}" in msg
    small = _write(tmp_path / "small.png", _rgb())
    _one_line_error(lambda p: read_image(p, max_pixels=100), small, "image too large")


# --- masks ----------------------------------------------------------------------------------


def _disc_mask(size=48):
    return create_disc_image(size, seed=3)[1]


@pytest.mark.parametrize("scale", [1, 255])
def test_masks_with_0_1_and_0_255_values(tmp_path, scale):
    mask = _disc_mask()
    _write(tmp_path / "m.png", mask * scale)
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), mask)


def test_jpeg_noise_and_rgb_masks(tmp_path):
    mask = _disc_mask(96)
    _write(tmp_path / "m.jpg", mask * 255, (cv2.IMWRITE_JPEG_QUALITY, 60))
    noisy = cv2.imread(str(tmp_path / "m.jpg"), cv2.IMREAD_GRAYSCALE)
    assert len(np.unique(noisy)) > 2  # the file really carries compression noise
    assert (read_mask(tmp_path / "m.jpg") == mask).mean() > 0.995
    colour = np.zeros((*mask.shape, 3), np.uint8)
    colour[mask > 0] = (0, 255, 0)  # a green (non-neoplastic) BKAI polyp
    _write(tmp_path / "c.png", colour)
    np.testing.assert_array_equal(read_mask(tmp_path / "c.png"), mask)


def test_empty_mask_is_a_valid_all_background_mask(tmp_path):
    _write(tmp_path / "e.png", np.zeros((16, 16), np.uint8))
    assert read_mask(tmp_path / "e.png").sum() == 0


def test_palette_mask_is_read_by_index_not_by_brightness(tmp_path):
    mask = _disc_mask()
    palette = Image.fromarray(mask, mode="P")
    palette.putpalette([0, 0, 0, 0, 0, 60] + [0, 0, 0] * 254)  # label 1 drawn in dark blue
    palette.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "p.png"), mask)


# --- no silent wrong reads (issue 31) --------------------------------------------------------


def test_five_channel_tiff_is_refused_not_read_as_a_strip(tmp_path):
    five = np.random.default_rng(0).integers(0, 256, (64, 48, 5), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "pages.tif", five)  # tifffile's default: 64 pages of 48x5
    _one_line_error(read_image, tmp_path / "pages.tif", "TIFF holds several images")
    tifffile.imwrite(tmp_path / "bands.tif", five, photometric="minisblack", planarconfig="contig")
    _one_line_error(read_image, tmp_path / "bands.tif", "image has 5 channels; expected 1")


@pytest.mark.parametrize("bits", [10, 12])
def test_10_and_12_bit_data_in_a_16_bit_png_keeps_its_brightness(tmp_path, bits):
    rgb = _rgb()
    stored = np.round(rgb * (((1 << bits) - 1) / 255)).astype(np.uint16)
    _write(tmp_path / "deep.png", stored)
    np.testing.assert_array_equal(read_image(tmp_path / "deep.png"), rgb)


def test_0_1_mask_saved_as_jpeg_is_not_read_as_empty(tmp_path):
    mask = _disc_mask(128)
    Image.fromarray(mask).save(tmp_path / "m.jpg", quality=75)
    assert np.asarray(Image.open(tmp_path / "m.jpg")).max() == 2  # noise above the label 1
    assert (read_mask(tmp_path / "m.jpg") == mask).mean() > 0.99


def _ignored(mask):
    out = mask.copy()
    out[:4] = 255  # 0/1 labels, 255 = ignore (unlabelled rows)
    return out


def test_mask_with_an_ignore_value_is_refused(tmp_path):
    _write(tmp_path / "m.png", _ignored(_disc_mask()))
    msg = _one_line_error(read_mask, tmp_path / "m.png", "'ignore' value")
    assert "{0, 1, 255}" in msg and "expected 0/1 or 0/255" in msg


def test_label_stored_only_in_the_alpha_channel_is_read(tmp_path):
    mask = _disc_mask()
    rgba = np.zeros((*mask.shape, 4), np.uint8)
    rgba[..., 3] = mask * 255  # RGB all black; the label is the opacity
    cv2.imwrite(str(tmp_path / "a.png"), rgba)
    np.testing.assert_array_equal(read_mask(tmp_path / "a.png"), mask)


def test_rgb_mask_whose_channels_disagree_is_refused_unless_known_class_colours(tmp_path):
    mask = _disc_mask()
    colour = np.zeros((*mask.shape, 3), np.uint8)
    colour[mask > 0] = (255, 0, 0)
    colour[:6, :6] = (0, 0, 255)  # a blue class of no known scheme
    _write(tmp_path / "rb.png", colour)
    msg = _one_line_error(read_mask, tmp_path / "rb.png", "several label colours")
    assert "red" in msg and "blue" in msg
    colour[:6, :6] = (0, 255, 0)  # NeoPolyp red + green: polyp either way
    _write(tmp_path / "rg.png", colour)
    expected = mask.copy()
    expected[:6, :6] = 1
    np.testing.assert_array_equal(read_mask(tmp_path / "rg.png"), expected)


# --- dataset folders ------------------------------------------------------------------------


def test_image_mask_size_mismatch_is_named(tmp_path):
    root = write_folder_dataset(tmp_path / "d", n=2, size=32)
    _write(root / "masks" / "case_1.png", np.zeros((20, 32), np.uint8))
    problems = run_check(root)["problems"]
    assert problems == [f"{root / 'masks' / 'case_1.png'}: mask 32x20 differs from image 32x32"]
    from colonseg.data.cache import load_resized_pairs

    with pytest.raises(ColonsegError, match="case_1.png: mask size 32x20 differs from image 32x32"):
        load_resized_pairs(find_pairs(root), 16, tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


def test_duplicate_stems_and_missing_partners(tmp_path):
    root = write_folder_dataset(tmp_path / "d", n=2, size=32)
    _write(root / "images" / "case_0.jpg", _rgb())
    with pytest.raises(ColonsegError, match="duplicate image stem 'case_0'"):
        find_pairs(root)
    (root / "images" / "case_0.jpg").unlink()
    (root / "masks" / "case_1.png").unlink()
    with pytest.raises(ColonsegError, match="case_1.png: no matching mask"):
        find_pairs(root)


def test_check_reports_empty_constant_and_ambiguous_masks(tmp_path):
    root = write_folder_dataset(tmp_path / "d", n=4, size=32)
    masks = root / "masks"
    _write(masks / "case_0.png", np.zeros((32, 32), np.uint8))
    _write(masks / "case_1.png", np.full((32, 32), 255, np.uint8))
    _write(masks / "case_2.png", _ignored(create_disc_image(32, seed=2)[1]))
    report = run_check(root)
    assert report["warnings"] == [f"{masks / 'case_0.png'}: empty mask (all background)"]
    assert len(report["problems"]) == 2
    assert report["problems"][0].startswith(f"{masks / 'case_1.png'}: constant mask")
    assert report["problems"][1].startswith(f"{masks / 'case_2.png'}: mask values {{0, 1, 255}}")
    for i in range(4):
        _write(masks / f"case_{i}.png", np.zeros((32, 32), np.uint8))
    assert run_check(root)["problems"] == [
        f"{root}: all 4 masks are empty (all background): a misread mask encoding?"
    ]


def test_image_only_folders_are_valid_unlabelled_datasets(tmp_path):
    from typer.testing import CliRunner

    from colonseg.cli.main import app

    nested = write_folder_dataset(tmp_path / "normal", n=3, size=32)
    for m in (nested / "masks").iterdir():
        m.unlink()
    (nested / "masks").rmdir()
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(2):
        _write(flat / f"frame_{i}.jpg", _rgb())
    for root, layout, n in ((nested, "folder", 3), (flat, "images", 2)):
        report = run_check(root)
        assert (report["unlabelled"], report["n_pairs"], report["problems"]) == (True, n, [])
        result = CliRunner().invoke(app, ["datasets", "check", str(root)])
        assert result.exit_code == 0, result.output
        assert result.output == f"{root}: layout {layout}, unlabelled: {n} images\n"
    (flat / "frame_1.jpg").write_bytes(b"")
    assert run_check(flat)["problems"] == [f"{flat / 'frame_1.jpg'}: file is empty (0 bytes)"]
    report = run_check(nested, layout="negatives")  # the same frames as known negatives
    assert (report["n_pairs"], report["problems"], report["warnings"]) == (3, [], [])


def test_ambiguous_mask_stops_evaluation_with_one_line_and_exit_2(tmp_path):
    from typer.testing import CliRunner

    from colonseg.cli.main import app

    root = write_folder_dataset(tmp_path / "d", n=2, size=32)
    _write(root / "masks" / "case_0.png", _ignored(create_disc_image(32, seed=0)[1]))
    args = ["evaluate", "--data", str(root), "--out", str(tmp_path / "out"), "--model", "default"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert f"{root / 'masks' / 'case_0.png'}: mask values {{0, 1, 255}}" in result.output
    errors = [line for line in re.split(r"[\r\n]", result.output) if line.startswith("error")]
    assert "Traceback" not in result.output and len(errors) == 1  # (the rest: a progress bar)
    assert not (tmp_path / "out" / "summary.json").exists()


# --- NIfTI ----------------------------------------------------------------------------------


def _nifti_dataset(root: Path, image: np.ndarray, label: np.ndarray, label_affine=None):
    import nibabel as nib

    for folder, arr, affine in (
        ("imagesTr", image, np.eye(4)),
        ("labelsTr", label, np.eye(4) if label_affine is None else label_affine),
    ):
        (root / folder).mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(arr, affine), str(root / folder / "case.nii.gz"))
    return root


def _volume():
    vol = np.zeros((24, 20, 3), np.float32)
    vol[4:10, 6:14, 1] = 1  # one box on slice 1
    return vol


def test_nifti_label_in_another_orientation_still_lines_up(tmp_path):
    from colonseg.data.sources import DataSource
    from colonseg.methods.medsam_box.data import collect_samples

    vol = _volume()
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = vol.shape[0] - 1  # same voxels in space, first axis stored reversed
    root = _nifti_dataset(tmp_path / "n", vol * 100, vol[::-1].astype(np.uint8), flip)
    samples = collect_samples(DataSource(str(root)))
    assert [s.slice for s in samples] == [1]
    np.testing.assert_array_equal(samples[0].boxes, [[6, 4, 13, 9]])  # x0 y0 x1 y1, inclusive


def test_nifti_4d_series_and_mismatched_grids_are_refused(tmp_path):
    from colonseg.data.sources import DataSource
    from colonseg.methods.medsam_box.data import collect_samples

    vol = _volume()
    ok = _nifti_dataset(tmp_path / "single", vol[..., None] * 100, vol[..., None].astype(np.uint8))
    assert len(collect_samples(DataSource(str(ok)))) == 1  # a trailing 4th axis of 1 is fine
    series = _nifti_dataset(tmp_path / "series", np.stack([vol] * 3, -1), vol.astype(np.uint8))
    with pytest.raises(ColonsegError, match="expected a 2-D or 3-D volume.*one file per volume"):
        collect_samples(DataSource(str(series)))
    spaced = _nifti_dataset(
        tmp_path / "spaced", vol, vol.astype(np.uint8), np.diag([2.0, 2.0, 1.0, 1.0])
    )
    with pytest.raises(ColonsegError, match="affine .* differs from its image"):
        collect_samples(DataSource(str(spaced)))
    broken = tmp_path / "broken"
    _nifti_dataset(broken, vol, vol.astype(np.uint8))
    path = broken / "labelsTr" / "case.nii.gz"
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ColonsegError, match="case.nii.gz: not a readable NIfTI volume"):
        collect_samples(DataSource(str(broken)))


# --- checkpoints ----------------------------------------------------------------------------


def _saved_model(folder: Path) -> Path:
    from colonseg.engine.checkpoint import ModelMeta, save_pretrained
    from colonseg.models import create_model

    net = create_model("unet", encoder="test_efficientnet", pretrained=False)
    return save_pretrained(net, ModelMeta("unet", {"encoder": "test_efficientnet"}), folder)


def test_corrupt_and_truncated_checkpoints(tmp_path):
    from colonseg.engine.checkpoint import load_pretrained

    model = _saved_model(tmp_path / "m")
    weights = model / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ColonsegError, match="weights.safetensors: .*corrupt"):
        load_pretrained(model)
    (model / "config.json").write_text("{ not json")
    with pytest.raises(ColonsegError, match="config.json: invalid JSON"):
        load_pretrained(model)
    model = _saved_model(tmp_path / "m2")
    pth = tmp_path / "w.pth"
    torch.save(torch.nn.Linear(2, 2).state_dict(), pth)
    pth.write_bytes(pth.read_bytes()[:100])
    with pytest.raises(ColonsegError, match="w.pth: .*refused or unreadable"):
        load_pretrained(model, weights=pth)


def test_pickled_checkpoint_carrying_code_is_refused_and_never_run(tmp_path):
    from colonseg.engine.checkpoint import load_pretrained

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": Payload()}, evil)
    with pytest.raises(ColonsegError, match="evil.pth: .*refused"):
        load_pretrained(_saved_model(tmp_path / "m"), weights=evil)
    assert not marker.exists()


# --- configs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "loader, config, override, match",
    [
        ("supervised", "polyp_unet_lite0", "trainer.max_epoch=1", "Did you mean: 'max_epochs'"),
        ("supervised", "polyp_unet_lite0", "model.encoder=resnet5", "Did you mean 'resnet50'"),
        ("supervised", "polyp_unet_lite0", "data.augment=polip", "Did you mean 'polyp'"),
        ("mapseg", "mapseg/polyp", "DATASET.targt=polyp", "Did you mean: 'target'"),
        ("mssg", "mssg/glas", "model.name=pspnt", "Did you mean 'pspnet'"),
        ("mssg", "mssg/glas", "model.arch=pspnt", "Did you mean 'pspnet'"),  # the old name
        ("mssg", "mssg/glas", "spm.chanels=32", "Did you mean: 'channels'"),
        ("medsam_box", "medsam_box/polyp", "loss.lambda_siz=1", r"keys: empty, tight, size"),
    ],
)
def test_configs_with_unknown_keys_or_misspelt_names(loader, config, override, match):
    from colonseg.engine.config import load_config

    with pytest.raises(ColonsegError, match=match) as info:
        load_config(config, [override])
    assert "\n" not in str(info.value)


def test_misspelt_config_name_and_invalid_yaml(tmp_path):
    from colonseg.engine.config import load_config

    with pytest.raises(ColonsegError, match="Did you mean 'polyp_unet_lite0'"):
        load_config("polyp_unet_lit0")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ColonsegError, match="bad.yaml"):
        load_config(bad)


# --- the command line -----------------------------------------------------------------------


def test_folder_prediction_continues_past_every_bad_file(tmp_path):
    from typer.testing import CliRunner

    from colonseg.cli.main import app

    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(2):
        _write(folder / f"good_{i}.png", create_disc_image(64, seed=i)[0])
    _write(folder / "dup.png", _rgb())
    _write(folder / "dup.jpg", _rgb())
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.png").write_text("hello")
    (folder / "bomb.png").write_bytes(_png_claiming(50_000, 50_000))
    five = np.random.default_rng(0).integers(0, 256, (32, 32, 5), dtype=np.uint8)
    tifffile.imwrite(folder / "bands.tif", five, photometric="minisblack", planarconfig="contig")
    args = ["predict", str(folder), "--out", str(tmp_path / "out"), "--model", "default"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    for bad in ("empty.jpg", "text.png", "bomb.png", "bands.tif: image has 5 channels"):
        assert bad in result.output
    assert "Traceback" not in result.output
    written = sorted(p.name for p in (tmp_path / "out" / "masks").iterdir())
    assert written == ["dup.png", "dup_2.png", "good_0.png", "good_1.png"]
    assert not [p for p in (tmp_path / "out").rglob(".*")], "a temporary file was left behind"
    assert CliRunner().invoke(app, [*args, "--skip-bad"]).exit_code == 0
