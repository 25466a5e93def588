from __future__ import annotations

import numpy as np
import pytest
import tifffile

from colonseg.data.io import write_png
from colonseg.data.layouts import detect_layout, find_pairs
from colonseg.errors import ColonsegError

IMG = np.full((8, 10, 3), 120, np.uint8)
MASK = np.zeros((8, 10), np.uint8)


def _png(path):
    write_png(
        path, IMG if "mask" not in str(path).lower() and "gt" not in str(path).lower() else MASK
    )


def _make(root, files):
    for f in files:
        p = root / f
        p.parent.mkdir(parents=True, exist_ok=True)
        if p.suffix in (".tif", ".tiff"):
            tifffile.imwrite(p, IMG)
        else:
            write_png(p, IMG)
    return root


@pytest.mark.parametrize(
    "layout, files, ids",
    [
        ("kvasir_seg", ["images/a.png", "masks/a.png", "kavsir_bboxes.json"], ["a"]),
        ("cvc_clinicdb", ["Original/1.tif", "Ground Truth/1.tif"], ["1"]),
        ("cvc_colondb", ["1.tiff", "p1.tiff", "2.tiff", "p2.tiff"], ["1", "2"]),
        ("etis", ["ETIS-LaribPolypDB/1.tif", "Ground Truth/p1.tif"], ["1"]),
        ("bkai", ["train/train/x.png", "train_gt/train_gt/x.png"], ["x"]),
        (
            "glas",
            ["train_1.png", "train_1_anno.png", "testA_2.png", "testA_2_anno.png"],
            ["testA_2", "train_1"],
        ),
        ("folder", ["image/b.png", "mask/b.png"], ["b"]),  # PraNet TrainDataset
        (
            "mvtec",  # MAPSeg's layout: test/good is normal and left out
            [
                "train/good/0.png",
                "test/good/0.png",
                "test/anomaly/000.png",
                "ground_truth/anomaly/000_mask.png",
            ],
            ["anomaly_000"],
        ),  # fmt: skip
    ],
)
def test_official_layouts_detected_and_paired(tmp_path, layout, files, ids):
    for f in files:
        if f.endswith(".json"):
            (tmp_path / f).write_text("{}")
    root = _make(tmp_path, [f for f in files if not f.endswith(".json")])
    expected = layout
    assert detect_layout(root) == expected
    pairs = find_pairs(root)
    assert sorted(p.id for p in pairs) == ids
    assert all(p.mask is not None and p.mask.is_file() for p in pairs)


def test_split_file_and_errors(tmp_path):
    root = _make(
        tmp_path / "d",
        ["images/a.png", "masks/a.png", "images/b.png", "masks/b.png", "images/c.png"],
    )
    (root / "splits").mkdir()
    (root / "splits" / "test.txt").write_text("b\na.jpg\n")
    assert [p.id for p in find_pairs(root, split="test")] == ["b", "a"]
    with pytest.raises(ColonsegError, match=r"c\.png: no matching mask"):
        find_pairs(root)
    (root / "splits" / "bad.txt").write_text("zzz\n")
    with pytest.raises(ColonsegError, match="1 stems have no image"):
        find_pairs(root, split="bad")
    with pytest.raises(ColonsegError, match="split file not found"):
        find_pairs(root, split="nosuch")


def test_duplicate_stems_and_unknown_layout(tmp_path):
    root = _make(tmp_path / "d", ["images/a.png", "images/a.jpg", "masks/a.png"])
    with pytest.raises(ColonsegError, match="duplicate image stem 'a'"):
        find_pairs(root)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ColonsegError, match="unknown dataset layout"):
        detect_layout(tmp_path / "empty")
    with pytest.raises(ValueError, match="Did you mean 'glas'"):
        find_pairs(root, layout="glass")


def test_negatives_pair_every_frame_with_an_empty_mask_of_its_size(tmp_path):
    from colonseg.data.io import read_mask

    root = tmp_path / "normal"
    write_png(root / "images" / "a.png", IMG)
    write_png(root / "images" / "b.png", np.full((5, 7, 3), 60, np.uint8))
    write_png(root / "images" / "c.png", IMG)
    (root / "images" / "notes.txt").write_text("not an image")
    with pytest.raises(ColonsegError, match="unknown dataset layout"):
        detect_layout(root / "images")  # images alone are never taken for "no polyp anywhere"
    pairs = find_pairs(root, "negatives")
    assert [p.id for p in pairs] == ["a", "b", "c"]
    for p, shape in zip(pairs, [(8, 10), (5, 7), (8, 10)], strict=True):
        mask = read_mask(p.mask)
        assert mask.shape == shape and not mask.any()
    assert pairs[0].mask == pairs[2].mask != pairs[1].mask  # one file per size
    assert [p.id for p in find_pairs(root / "images", "negatives")] == ["a", "b", "c"]
    (root / "splits").mkdir()
    (root / "splits" / "some.txt").write_text("c\n")
    assert [p.id for p in find_pairs(root, "negatives", split="some")] == ["c"]
    (root / "images" / "d.png").write_bytes(b"not a png")
    with pytest.raises(ColonsegError, match=r"d\.png: unreadable image"):
        find_pairs(root, "negatives")


def test_a_split_shipped_for_a_public_dataset_is_read_by_its_folder_name(tmp_path):
    # colonseg/data/splits/polypgen-normal/centres_AB.txt lists PolypGen centres A and B (500)
    stems = ["centre_A__negative__seq1_neg__seq1_img1", "centre_C__negative__seq1_neg__seq1_img1"]
    root = _make(tmp_path / "polypgen-normal", [f"images/{s}.png" for s in stems])
    with pytest.raises(ColonsegError, match="499 stems have no image"):  # the shipped file
        find_pairs(root, "negatives", split="centres_AB")
    (root / "splits").mkdir()
    (root / "splits" / "centres_AB.txt").write_text(f"{stems[1]}\n")  # the dataset's own wins
    assert [p.id for p in find_pairs(root, "negatives", split="centres_AB")] == [stems[1]]
    (root / "splits" / "centres_AB.txt").unlink()
    renamed = root.rename(tmp_path / "my-normal-frames")  # shipped splits go by folder name
    with pytest.raises(ColonsegError, match="split file not found"):
        find_pairs(renamed, "negatives", split="centres_AB")
