from __future__ import annotations

import cv2
import numpy as np
import pytest

from colonseg.data.labels import decide, get_scheme, nearest_colour, read_label
from colonseg.data.rle import rle_decode, rle_encode, submission_rows, write_submission
from colonseg.data.synthetic import write_neopolyp_dataset
from colonseg.errors import ColonsegError

NEO = get_scheme("neopolyp")


def _class_map(seed: int = 0, size: int = 96) -> np.ndarray:
    rng = np.random.default_rng(seed)
    classes = np.zeros((size, size), np.uint8)
    for label in (1, 2, 1):
        cx, cy, r = rng.integers(15, size - 15, 2).tolist() + [int(rng.integers(6, 14))]
        cv2.circle(classes, (cx, cy), r, label, -1)
    return classes


def test_noisy_jpeg_rgb_masks_decode_to_their_classes(tmp_path):
    truth = _class_map()
    path = tmp_path / "m.jpeg"
    rgb = NEO.colorize(truth)
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 60]
    )
    path.write_bytes(buf.tobytes())
    noisy = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    assert (noisy != rgb).any(), "JPEG must have added colour noise for this test to mean anything"
    decoded = read_label(path, NEO)
    # away from the boundaries every pixel is exact; overall almost every pixel is
    interior = cv2.erode((truth > 0).astype(np.uint8), np.ones((5, 5))) | cv2.erode(
        (truth == 0).astype(np.uint8), np.ones((5, 5))
    )
    np.testing.assert_array_equal(decoded[interior > 0], truth[interior > 0])
    assert (decoded == truth).mean() > 0.99
    assert set(np.unique(decoded)) == {0, 1, 2}


def test_nearest_colour_picks_the_closest_class():
    pixels = np.array([[[30, 20, 10], [200, 40, 30], [50, 210, 60], [140, 130, 0]]], np.uint8)
    assert nearest_colour(pixels, NEO.colours).tolist() == [[0, 1, 2, 1]]


def test_single_channel_masks_hold_class_indices_or_fail_clearly(tmp_path):
    truth = _class_map(1)
    cv2.imwrite(str(tmp_path / "idx.png"), truth)
    np.testing.assert_array_equal(read_label(tmp_path / "idx.png", NEO), truth)
    cv2.imwrite(str(tmp_path / "grey.png"), truth * 100)
    with pytest.raises(ColonsegError, match="grey.png: single-channel mask with values up to 200"):
        read_label(tmp_path / "grey.png", NEO)


def test_binary_scheme_reads_both_bkai_colours_as_polyp(tmp_path):
    root = write_neopolyp_dataset(tmp_path / "bkai", n=2, size=64)
    path = next((root / "train_gt" / "train_gt").iterdir())
    classes = read_label(path, NEO)
    np.testing.assert_array_equal(read_label(path, get_scheme("binary")), classes > 0)


def test_decide_thresholds_polyp_probability_and_takes_the_best_class():
    import torch

    # three pixels (C, 1, 3): background; neoplastic (fg 0.8); non-neoplastic (fg 0.9)
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.1, 0.3, 0.6]])[:, None, :]
    fg, classes = decide(probs, 0.5)
    torch.testing.assert_close(fg, torch.tensor([[0.3, 0.8, 0.9]]))
    assert classes.tolist() == [[0, 1, 2]]
    fg, classes = decide(probs, 0.85)
    assert classes.tolist() == [[0, 0, 2]]


def test_rle_known_runs_and_round_trip():
    mask = np.array([[0, 1, 1], [1, 0, 0], [0, 0, 1]])
    assert rle_encode(mask) == "2 3 9 1"  # row-major, 1-based starts
    assert rle_encode(np.zeros((2, 2))) == ""
    assert rle_encode(np.ones((2, 2))) == "1 4"
    for seed in range(3):
        m = _class_map(seed) == 1
        np.testing.assert_array_equal(rle_decode(rle_encode(m), m.shape), m)
    with pytest.raises(ColonsegError, match="outside"):
        rle_decode("8 5", (3, 3))


def test_submission_csv_has_one_row_per_class(tmp_path):
    classes = np.array([[0, 1], [2, 2]], np.uint8)
    write_submission(tmp_path / "sub.csv", submission_rows("abc", classes))
    lines = (tmp_path / "sub.csv").read_text().splitlines()
    assert lines == ["Id,Expected", "abc_0,2 1", "abc_1,3 2"]


def test_decide_gives_the_same_answer_on_numpy_and_torch():
    import torch

    probs = np.random.default_rng(0).dirichlet([1, 1, 1], (2, 8, 8)).transpose(0, 3, 1, 2)
    fg_np, cls_np = decide(probs.astype(np.float32), 0.5)
    fg_t, cls_t = decide(torch.from_numpy(probs.astype(np.float32)), 0.5)
    np.testing.assert_allclose(fg_np, fg_t.numpy())
    np.testing.assert_array_equal(cls_np, cls_t.numpy())
    assert cls_np.dtype == np.uint8 and set(np.unique(cls_np)) <= {0, 1, 2}
