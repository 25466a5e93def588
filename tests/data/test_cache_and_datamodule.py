from __future__ import annotations

import numpy as np
import pytest

import colonseg.data.cache as cache
from colonseg.data.datamodule import EpochShuffle, SegmentationDataModule
from colonseg.data.io import write_png
from colonseg.data.layouts import find_pairs
from colonseg.data.sources import DataSource
from colonseg.data.transforms import augment, create_augmentation
from colonseg.errors import ColonsegError


def test_cache_decodes_once(tiny_dataset_dir, tmp_path, monkeypatch):
    pairs = find_pairs(tiny_dataset_dir)
    images, masks = cache.load_resized_pairs(pairs, 32, tmp_path)
    assert images.shape == (8, 32, 32, 3) and masks.shape == (8, 32, 32)
    assert set(np.unique(masks)) == {0, 1}

    def no_decode(*a, **k):
        raise AssertionError("decoded again")

    monkeypatch.setattr(cache, "read_image", no_decode)
    images2, _ = cache.load_resized_pairs(pairs, 32, tmp_path)
    np.testing.assert_array_equal(images, images2)


def test_size_mismatch_names_the_mask(tiny_dataset_dir, tmp_path):
    write_png(tiny_dataset_dir / "masks" / "case_3.png", np.zeros((10, 10), np.uint8))
    with pytest.raises(ColonsegError, match=r"case_3\.png: mask size 10x10 differs"):
        cache.load_resized_pairs(find_pairs(tiny_dataset_dir), 32, tmp_path)


def test_datamodule_batches(tiny_dataset_dir):
    dm = SegmentationDataModule(
        [DataSource(str(tiny_dataset_dir))],
        [DataSource(str(tiny_dataset_dir))],
        image_size=32,
        batch_size=4,
        augment="polyp",
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["mask"].shape == (4, 1, 32, 32)
    assert -1.01 <= batch["image"].min() and batch["image"].max() <= 1.01  # mean = std = 0.5
    assert set(batch["mask"].unique().tolist()) <= {0.0, 1.0}


def test_epoch_shuffle_depends_on_seed_and_epoch_only():
    a, b = EpochShuffle(20, seed=1), EpochShuffle(20, seed=1)
    b.set_epoch(3)
    list(a)  # an earlier pass changes nothing
    a.set_epoch(3)
    assert list(a) == list(b)
    order = [i for i, _ in a]
    assert sorted(order) == list(range(20)) and len({s for _, s in a}) == 20
    a.set_epoch(4)
    assert [i for i, _ in a] != order


def test_augmentation_replays_from_its_seed():
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    mask = np.zeros((32, 32), np.uint8)
    mask[4:12, 6:20] = 1
    aug = create_augmentation("polyp")
    first = augment(aug, 7, image=image, mask=mask)
    augment(aug, 8, image=image, mask=mask)
    again = augment(create_augmentation("polyp"), 7, image=image, mask=mask)
    np.testing.assert_array_equal(first["image"], again["image"])
    np.testing.assert_array_equal(first["mask"], again["mask"])


def test_negative_frames_train_beside_polyp_frames_with_empty_masks(tiny_dataset_dir, tmp_path):
    normal = tmp_path / "normal"
    for i in range(3):  # another size than the polyp frames: resized like them
        write_png(normal / "images" / f"n{i}.jpg.png", np.full((40, 50, 3), 90 + i, np.uint8))
    dm = SegmentationDataModule(
        [DataSource(str(tiny_dataset_dir)), DataSource(str(normal), layout="negatives")],
        image_size=32,
        batch_size=4,
    )
    dm.setup("fit")
    ids, masks = dm.train_set.ids, dm.train_set.masks
    assert len(ids) == 8 + 3 and ids[-3:] == ["n0.jpg", "n1.jpg", "n2.jpg"]
    assert masks[:8].any() and not masks[8:].any() and masks.shape[1:3] == (32, 32)
