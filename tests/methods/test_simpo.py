from __future__ import annotations

import cv2
import numpy as np
import pytest

from colonseg.data.field_of_view import erase_text, text_lines, valid_area
from colonseg.data.io import write_png
from colonseg.errors import ColonsegError
from colonseg.methods.mapseg.simpo import Simpo, load_shapes, load_textures, shape_mask


def _frame(seed: int = 0, size: int = 160) -> np.ndarray:
    """A fake endoscopic frame: textured mucosa in an octagon on black, a white text overlay in
    the black margin, a blue status box inside the view."""
    rng = np.random.default_rng(seed)
    image = np.zeros((size, size, 3), np.uint8)
    mucosa = np.clip(rng.normal((170, 90, 70), 20, (size, size, 3)), 0, 255).astype(np.uint8)
    view = np.zeros((size, size), np.uint8)
    c, r = size // 2, int(size * 0.42)
    octagon = np.array(
        [(c + r * np.cos(a), c + r * np.sin(a)) for a in np.arange(8) * np.pi / 4 + np.pi / 8]
    )
    cv2.fillPoly(view, [octagon.round().astype(np.int32)], 1)
    image[view > 0] = mucosa[view > 0]
    cv2.putText(image, "12:30", (2, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1)
    image[100:110, 30:90] = (20, 20, 200)  # blue status box over the view
    return image


def test_valid_area_is_the_view_without_border_text_or_boxes():
    image = _frame()
    area = valid_area(image)
    assert area[80, 80] == 1  # centre of the view
    assert area[0:20, 0:40].sum() == 0  # black corner with the text overlay
    assert area[100:110, 30:90].sum() == 0  # the blue status box
    assert 0.3 < area.mean() < 0.55  # the octagon (~0.5 of the frame) less box and margin


def test_text_burnt_into_the_mucosa_is_cut_out_but_glints_are_not():
    rng = np.random.default_rng(3)
    size = 300
    image = np.clip(rng.normal((170, 90, 70), 12, (size, size, 3)), 0, 255).astype(np.uint8)
    for i, line in enumerate(["05/10/2015", "11:11:18", "CVP:8"]):  # a Kvasir-like block
        cv2.putText(image, line, (12, 60 + 14 * i), cv2.FONT_HERSHEY_PLAIN, 0.9, (235,) * 3, 1)
    for j in range(5):  # the row of white squares above Kvasir's corner box
        image[200:207, 12 + 10 * j : 19 + 10 * j] = 240
    glints = np.zeros((size, size), np.uint8)
    for _ in range(25):  # specular glints of varied size over the right half
        x, y = rng.integers(160, 290), rng.integers(20, 290)
        cv2.circle(glints, (int(x), int(y)), int(rng.integers(1, 6)), 1, -1)
    image[glints > 0] = 250
    text = text_lines(image)
    assert text[50:90, 12:90].mean() > 0.6  # the three lines
    assert text[200:207, 12:60].mean() > 0.9  # the squares
    assert text[:, 150:].sum() == 0  # no glint taken for text
    assert valid_area(image, margin=0.0)[52:60, 15:100].sum() == 0  # the date line
    big = cv2.resize(image, None, fx=9, fy=9, interpolation=cv2.INTER_NEAREST)  # 2700 px
    found = text_lines(big)  # searched at WORK_SIDE, answered at full size
    assert found.shape == big.shape[:2] and found[9 * 52 : 9 * 60, 9 * 15 : 9 * 90].mean() > 0.9
    erased = erase_text(image)
    assert erased[52:60, 15:100].max() < 215, "the date is painted over with mucosa"
    np.testing.assert_array_equal(erased[text == 0], image[text == 0])
    plain = np.full((100, 100, 3), 170, np.uint8)
    assert erase_text(plain) is plain  # nothing to erase: the frame itself


def test_shape_masks_are_single_smooth_blobs():
    for seed in range(5):
        mask = shape_mask(64, np.random.default_rng(seed))
        n = cv2.connectedComponents(mask)[0] - 1
        assert n == 1 and 0.3 < mask.mean() < 0.8


@pytest.mark.parametrize("fills", [("colon",), ("texture",)])
def test_simpo_is_deterministic_and_stays_inside_the_view(fills):
    textures = [np.random.default_rng(9).integers(0, 255, (40, 40, 3), dtype=np.uint8)]
    simpo = Simpo(textures=textures, fills=fills, p=1.0)
    image = _frame(1)
    a_img, a_mask = simpo(image, np.random.default_rng(7))
    b_img, b_mask = simpo(image, np.random.default_rng(7))
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_mask, b_mask)
    assert a_mask.any() and not (a_mask & (1 - valid_area(image))).any()
    changed = np.abs(a_img.astype(int) - image.astype(int)).sum(-1) > 0
    assert changed[a_mask > 0].mean() > 0.9  # the lesion replaced the mucosa under the mask
    other_img, _ = simpo(image, np.random.default_rng(8))
    assert not np.array_equal(other_img, a_img)


def test_probability_p_controls_how_often_a_lesion_is_pasted():
    simpo = Simpo(fills=("colon",), p=0.5)
    rng = np.random.default_rng(0)
    pasted = [simpo(_frame(2, 96), rng)[1].any() for _ in range(40)]
    assert 10 < sum(pasted) < 30
    image, mask = Simpo(fills=("colon",), p=0.0)(_frame(2, 96), rng)
    assert not mask.any() and np.array_equal(image, _frame(2, 96))


def test_user_shape_and_texture_folders_load(tmp_path):
    shapes = tmp_path / "polyp_like_mask"
    write_png(shapes / "a.png", (shape_mask(50, np.random.default_rng(0)) * 255))
    write_png(tmp_path / "KTH" / "cork" / "t.png", np.full((30, 30, 3), 120, np.uint8))
    assert load_shapes(shapes)[0].shape[0] <= 50
    assert load_textures(tmp_path / "KTH")[0].shape == (30, 30, 3)
    simpo = Simpo(shapes=load_shapes(shapes), fills=("colon",), p=1.0)
    assert simpo(_frame(3), np.random.default_rng(0))[1].any()
    with pytest.raises(ColonsegError, match="needs textures"):
        Simpo(fills=("texture",))
    with pytest.raises(ColonsegError, match="fills must be among"):
        Simpo(fills=("paint",))
    with pytest.raises(ColonsegError, match="folder not found"):
        load_textures(tmp_path / "missing")
