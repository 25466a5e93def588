"""Masks through COCO and LabelMe JSON and back (Dice >= 0.99), bad files refused by name, and
the ``coco`` / ``labelme`` dataset layouts read like any other."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from colonseg.cli.main import app
from colonseg.data.annotations import (
    class_regions,
    coco_document,
    labelme_document,
    mask_polygons,
    rasterize,
    read_coco,
    read_labelme,
)
from colonseg.data.io import read_mask, write_png
from colonseg.data.labels import SCHEMES, read_label
from colonseg.data.layouts import detect_layout, find_pairs
from colonseg.errors import ColonsegError

NEO = list(SCHEMES["neopolyp"].class_names[1:])  # ["neoplastic", "non-neoplastic"]


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return 2 * (a & b).sum() / (a.sum() + b.sum())


def _binary_mask(h: int = 60, w: int = 80, shift: int = 0) -> np.ndarray:
    """Several regions: a disc, a rotated ellipse, a diagonal line, a single pixel."""
    m = np.zeros((h, w), np.uint8)
    cv2.circle(m, (18 + shift, 18), 10, 1, -1)
    cv2.ellipse(m, (56, 36), (16, 7), 30, 0, 360, 1, -1)
    for i in range(6):
        m[42 + i, 8 + i] = 1
    m[5, 70] = 1
    return m


def _class_map(h: int = 60, w: int = 80) -> np.ndarray:
    """Three classes, one region nested inside another's hole."""
    c = np.zeros((h, w), np.uint8)
    cv2.circle(c, (20, 22), 14, 1, -1)
    cv2.circle(c, (20, 22), 5, 2, -1)  # non-neoplastic inside a neoplastic ring
    cv2.rectangle(c, (48, 8), (72, 50), 2, -1)
    cv2.circle(c, (60, 52), 4, 1, -1)
    cv2.circle(c, (60, 28), 4, 1, -1)  # neoplastic inside the non-neoplastic rectangle
    return c


def _coco_round_trip(tmp_path, classes, names):
    h, w = classes.shape
    doc = coco_document(
        [{"file_name": "a.png", "height": h, "width": w, "regions": class_regions(classes, names)}],
        names,
    )
    (tmp_path / "coco.json").write_text(json.dumps(doc))
    got_h, got_w, regions = read_coco(tmp_path / "coco.json")["a.png"]
    return rasterize(regions, got_h, got_w, names)


def _labelme_round_trip(tmp_path, classes, names):
    h, w = classes.shape
    doc = labelme_document("a.png", h, w, class_regions(classes, names))
    (tmp_path / "a.json").write_text(json.dumps(doc))
    image_path, got_h, got_w, regions = read_labelme(tmp_path / "a.json")
    assert image_path == "a.png"
    return rasterize(regions, got_h, got_w, names)


@pytest.mark.parametrize("round_trip", [_coco_round_trip, _labelme_round_trip])
def test_binary_mask_round_trips_with_one_polygon_per_region(tmp_path, round_trip):
    mask = _binary_mask()
    assert len(mask_polygons(mask)) == 4  # a pixel and a 1-px line still get a polygon each
    assert all(p.shape[1] == 2 and len(p) >= 3 for p in mask_polygons(mask))
    back = round_trip(tmp_path, mask, ["polyp"])
    assert _dice(back, mask) >= 0.99
    assert back[5, 70] == 1 and back[47, 13] == 1  # the single pixel and the line's end


@pytest.mark.parametrize("round_trip", [_coco_round_trip, _labelme_round_trip])
def test_three_class_map_round_trips(tmp_path, round_trip):
    classes = _class_map()
    back = round_trip(tmp_path, classes, NEO)
    for k in (1, 2):
        assert _dice(back == k, classes == k) >= 0.99, k


def test_coco_document_is_complete():
    classes = _class_map()
    doc = coco_document(
        [{"file_name": "a.png", "height": 60, "width": 80,
          "regions": class_regions(classes, NEO)}], NEO
    )  # fmt: skip
    assert [c["name"] for c in doc["categories"]] == NEO
    assert doc["images"] == [{"id": 1, "file_name": "a.png", "height": 60, "width": 80}]
    ann = doc["annotations"]
    assert len(ann) == 5 and {a["category_id"] for a in ann} == {1, 2}
    assert all(a["iscrowd"] == 0 and len(a["segmentation"][0]) % 2 == 0 for a in ann)
    assert sum(a["area"] for a in ann if a["category_id"] == 2) >= (classes == 2).sum()
    x, y, w, h = ann[0]["bbox"]
    assert w > 0 and h > 0


def test_holes_are_filled():
    ring = np.zeros((40, 40), np.uint8)
    cv2.circle(ring, (20, 20), 12, 1, -1)
    cv2.circle(ring, (20, 20), 5, 0, -1)
    back = rasterize([("polyp", p) for p in mask_polygons(ring)], 40, 40, ["polyp"])
    assert back[20, 20] == 1 and (back >= ring).all()  # documented: outer contours only


# pycocotools' compressed RLE of a 25x25 mask with [a:b, a:b] set (pytorchcocotools' test cases)
@pytest.mark.parametrize(
    "counts, a, b", [("05d00000000d?", 0, 5), ("R45d00000000b;", 5, 10), ("X`05d00000000", 20, 25)]
)
def test_coco_rle_is_decoded(tmp_path, counts, a, b):
    expected = np.zeros((25, 25), np.uint8)
    expected[a:b, a:b] = 1
    runs, value = [0], 0  # uncompressed RLE: column-major runs, starting with zeros
    for v in expected.T.reshape(-1):
        if v != value:
            runs.append(0)
            value = v
        runs[-1] += 1
    for i, seg in enumerate([{"size": [25, 25], "counts": counts},
                             {"size": [25, 25], "counts": runs}]):  # fmt: skip
        doc = {"images": [{"id": 1, "file_name": "a.png", "height": 25, "width": 25}],
               "categories": [{"id": 1, "name": "polyp"}],
               "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 1,
                                "segmentation": seg}]}  # fmt: skip
        (tmp_path / f"{i}.json").write_text(json.dumps(doc))
        _, _, regions = read_coco(tmp_path / f"{i}.json")["a.png"]
        assert (rasterize(regions, 25, 25, ["polyp"]) == expected).all(), seg


def test_coco_rle_is_column_major(tmp_path):
    expected = np.array([[0, 1, 1, 0], [0, 1, 1, 1], [0, 0, 0, 1]], np.uint8)
    rle = {"size": [3, 4], "counts": [3, 2, 1, 2, 2, 2]}  # runs counted down the columns
    doc = {"images": [{"id": 1, "file_name": "a.png", "height": 3, "width": 4}],
           "categories": [{"id": 1, "name": "polyp"}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 1,
                            "segmentation": rle}]}  # fmt: skip
    (tmp_path / "a.json").write_text(json.dumps(doc))
    _, _, regions = read_coco(tmp_path / "a.json")["a.png"]
    assert (rasterize(regions, 3, 4, ["polyp"]) == expected).all()


def _coco(**ann):
    base = {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0,
            "segmentation": [[2, 2, 20, 2, 20, 20]]}  # fmt: skip
    return {"images": [{"id": 1, "file_name": "a.png", "height": 30, "width": 40}],
            "categories": [{"id": 1, "name": "polyp"}],
            "annotations": [{**base, **ann}]}  # fmt: skip


def _labelme(points, shape_type="polygon"):
    return {"shapes": [{"label": "polyp", "points": points, "shape_type": shape_type}],
            "imagePath": "a.png", "imageHeight": 30, "imageWidth": 40}  # fmt: skip


@pytest.mark.parametrize(
    "reader, doc, message",
    [
        (read_coco, "{not json", "not valid JSON"),
        (read_coco, _coco(segmentation=[[2, 2, 20, 2]]), "2 points"),
        (read_coco, _coco(segmentation=[[2, 2, 20, 2, 20]]), "flat list"),
        (read_coco, _coco(segmentation=[[0.1, 0.1, 0.9, 0.1, 0.9, 0.9, 99, 500]]), "outside"),
        (read_coco, _coco(segmentation=[]), "box only"),
        (read_coco, _coco(category_id=7), "category id 7"),
        (read_coco, _coco(image_id=3), "image id 3"),
        (read_coco, _coco(segmentation={"size": [30, 40], "counts": [5, 3]}), "RLE counts"),
        (read_coco, {"images": [], "annotations": []}, "missing key 'categories'"),
        (read_labelme, _labelme([[1, 1], [5, 5]]), "2 points"),
        (read_labelme, _labelme([[1, 1], [5, 5], [-40, 3]]), "outside"),
        (read_labelme, _labelme([[1, 1], [5, 5], ["x", 3]]), "not numbers"),
        (read_labelme, _labelme([[1, 1], [5, 5]], "line"), "is a line"),
        (read_labelme, {"shapes": []}, "missing key 'imageHeight'"),
    ],
)
def test_bad_files_are_refused_naming_the_file(tmp_path, reader, doc, message):
    path = tmp_path / "bad_annotations.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    with pytest.raises(ColonsegError, match=message) as info:
        reader(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_unknown_label_is_refused_naming_the_source():
    square = np.array([[1, 1], [5, 1], [5, 5]], float)
    with pytest.raises(ColonsegError, match="x.json: unknown label 'tumour'"):
        rasterize([("tumour", square)], 10, 10, ["polyp"], source="x.json")


def test_labelme_rectangles_and_circles_become_polygons(tmp_path):
    doc = {"shapes": [{"label": "polyp", "points": [[2, 3], [10, 8]], "shape_type": "rectangle"},
                      {"label": "polyp", "points": [[25, 15], [30, 15]], "shape_type": "circle"}],
           "imagePath": "a.png", "imageHeight": 30, "imageWidth": 40}  # fmt: skip
    (tmp_path / "a.json").write_text(json.dumps(doc))
    _, h, w, regions = read_labelme(tmp_path / "a.json")
    back = rasterize(regions, h, w, ["polyp"])
    assert back[3:9, 2:11].all() and back[15, 25] and back[15, 29] and not back[15, 32]


# --- the coco and labelme layouts ----------------------------------------------------------


def _image(i: int) -> np.ndarray:
    return np.full((60, 80, 3), 60 + 20 * i, np.uint8)


def _write_coco_dataset(root, masks, names):
    """CVAT's COCO 1.0 export: annotations/instances_default.json + images/."""
    images = []
    for i, m in enumerate(masks):
        write_png(root / "images" / f"frame_{i}.png", _image(i))
        images.append({"file_name": f"frame_{i}.png", "height": 60, "width": 80,
                       "regions": class_regions(m, names)})  # fmt: skip
    (root / "annotations").mkdir(parents=True)
    doc = coco_document(images, names)
    (root / "annotations" / "instances_default.json").write_text(json.dumps(doc))
    return root


def _write_labelme_dataset(root, masks, names):
    """LabelMe: <stem>.json beside each image."""
    for i, m in enumerate(masks):
        write_png(root / f"frame_{i}.png", _image(i))
        doc = labelme_document(f"frame_{i}.png", 60, 80, class_regions(m, names))
        (root / f"frame_{i}.json").write_text(json.dumps(doc))
    return root


@pytest.mark.parametrize(
    "layout, write", [("coco", _write_coco_dataset), ("labelme", _write_labelme_dataset)]
)
def test_polygon_datasets_are_found_and_pass_the_check(tmp_path, layout, write):
    masks = [_binary_mask(shift=s) for s in (0, 4, 8)]
    root = write(tmp_path / layout, masks, ["polyp"])
    assert detect_layout(root) == layout
    pairs = find_pairs(root)
    assert [p.id for p in pairs] == ["frame_0", "frame_1", "frame_2"]
    for p, m in zip(pairs, masks, strict=True):
        assert _dice(read_mask(p.mask), m) >= 0.99
        assert p.image.parent.name in ("images", layout)
    result = CliRunner().invoke(app, ["datasets", "check", str(root)])
    assert result.exit_code == 0, result.output
    assert f"layout {layout}, 3 pairs" in result.output and "problem" not in result.output


@pytest.mark.parametrize("labels, names", [("binary", ["polyp"]), ("neopolyp", NEO)])
def test_polygon_datasets_open_as_training_data(tmp_path, labels, names):
    from colonseg.data.datamodule import SegmentationDataModule
    from colonseg.data.sources import DataSource

    maps = [_class_map(), _class_map()[:, ::-1].copy()]
    maps = maps if labels == "neopolyp" else [(m > 0).astype(np.uint8) for m in maps]
    coco = _write_coco_dataset(tmp_path / "coco", maps, names)
    labelme = _write_labelme_dataset(tmp_path / "labelme", maps, names)
    dm = SegmentationDataModule(train=[DataSource(str(coco))], val=[DataSource(str(labelme))],
                                image_size=32, batch_size=2, labels=labels,
                                cache_dir=str(tmp_path / "cache"))  # fmt: skip
    dm.setup("fit")
    assert len(dm.train_set) == 2 and dm.val_names == ["labelme"]
    train = dm.train_set.masks
    assert sorted(np.unique(train).tolist()) == list(range(len(names) + 1))
    assert (dm.val_sets[0].masks == train).all()  # the same maps through either format


@pytest.mark.parametrize("write", [_write_coco_dataset, _write_labelme_dataset])
def test_three_class_polygons_open_as_neopolyp_masks(tmp_path, write):
    root = write(tmp_path / "d", [_class_map(), _class_map()[::-1].copy()], NEO)
    for p, c in zip(find_pairs(root), [_class_map(), _class_map()[::-1]], strict=True):
        back = read_label(p.mask, SCHEMES["neopolyp"])
        assert all(_dice(back == k, c == k) >= 0.99 for k in (1, 2))
        assert _dice(read_mask(p.mask), c > 0) >= 0.99  # binary readers see polyp vs background


def test_an_edited_annotation_gets_new_masks(tmp_path):
    root = _write_labelme_dataset(tmp_path / "d", [_binary_mask()], ["polyp"])
    before = find_pairs(root)[0].mask
    (root / "frame_0.json").write_text(
        json.dumps(labelme_document("frame_0.png", 60, 80, class_regions(_class_map() > 0,
                                                                         ["polyp"])))
    )  # fmt: skip
    after = find_pairs(root)[0].mask
    assert after != before
    assert _dice(read_mask(after), _class_map() > 0) >= 0.99


def test_bad_polygon_in_a_dataset_names_its_json(tmp_path):
    root = _write_labelme_dataset(tmp_path / "d", [_binary_mask()] * 2, ["polyp"])
    doc = json.loads((root / "frame_1.json").read_text())
    doc["shapes"][0]["points"] = doc["shapes"][0]["points"][:2]
    (root / "frame_1.json").write_text(json.dumps(doc))
    with pytest.raises(ColonsegError, match=r"frame_1\.json: shape 0 .*2 points"):
        find_pairs(root)


def test_unrelated_label_sets_are_refused(tmp_path):
    root = _write_labelme_dataset(tmp_path / "d", [_binary_mask()], ["polyp"])
    doc = json.loads((root / "frame_0.json").read_text())
    doc["shapes"][0]["label"] = "instrument"
    (root / "frame_0.json").write_text(json.dumps(doc))
    with pytest.raises(ColonsegError, match="labels instrument, polyp"):
        find_pairs(root)


@pytest.mark.parametrize("write", [_write_coco_dataset, _write_labelme_dataset])
def test_an_image_resized_after_annotating_is_refused(tmp_path, write):
    root = write(tmp_path / "d", [_binary_mask()] * 2, ["polyp"])
    image = next(root.rglob("frame_1.png"))
    write_png(image, np.zeros((30, 40, 3), np.uint8))
    with pytest.raises(ColonsegError, match=r"\.json: frame_1.png is 40x30 but its annotation"):
        find_pairs(root)


def test_coco_image_not_found_is_named(tmp_path):
    root = _write_coco_dataset(tmp_path / "d", [_binary_mask()], ["polyp"])
    (root / "images" / "frame_0.png").unlink()
    with pytest.raises(ColonsegError, match="instances_default.json: image 'frame_0.png' not"):
        find_pairs(root)
