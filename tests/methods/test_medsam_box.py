import json

import numpy as np
import pytest
import torch

from colonseg.data.boxes import mask_boxes
from colonseg.data.io import write_png
from colonseg.data.sources import DataSource
from colonseg.errors import ColonsegError
from colonseg.methods.medsam_box.cache import EmbeddingCache
from colonseg.methods.medsam_box.data import (
    collect_samples,
    jitter_boxes,
    read_sample,
)
from colonseg.methods.medsam_box.module import to_grid
from colonseg.models import create_model
from colonseg.models.medsam import build_sam


@pytest.fixture(scope="module")
def untrained():
    return create_model("automedsam", pretrained=False)


def test_boxes_from_mask_one_per_region():
    mask = np.zeros((50, 60), np.uint8)
    mask[5:10, 7:20] = 1
    mask[30:45, 40:58] = 1
    boxes = mask_boxes(mask)
    assert sorted(map(tuple, boxes.tolist())) == [(7, 5, 19, 9), (40, 30, 57, 44)]
    assert mask_boxes(np.zeros((8, 8), np.uint8)).shape == (0, 4)


def test_jitter_is_seeded_and_stays_in_the_image():
    boxes = np.array([[10, 10, 30, 40]], np.float32)
    a = jitter_boxes(boxes, 0.2, (50, 50), np.random.default_rng(1))
    b = jitter_boxes(boxes, 0.2, (50, 50), np.random.default_rng(1))
    assert np.array_equal(a, b) and not np.array_equal(a, boxes)
    assert np.abs(a - boxes).max() <= 0.2 * 31 + 1e-4
    assert a.min() >= 0 and a[:, [0, 2]].max() <= 49


def test_to_grid_maps_the_full_image_onto_the_grid():
    assert to_grid(np.array([[0, 0, 99, 49]], np.float32), (50, 100)).tolist() == [
        [0.0, 0.0, 255.0, 255.0]
    ]


def test_kvasir_box_json_is_read(tmp_path):
    root = tmp_path / "kv"
    image = np.zeros((40, 50, 3), np.uint8)
    write_png(root / "images" / "a.png", image)
    write_png(root / "masks" / "a.png", np.zeros((40, 50), np.uint8))
    box = {"label": "polyp", "xmin": 3, "ymin": 4, "xmax": 20, "ymax": 30}
    entry = {"a": {"height": 40, "width": 50, "bbox": [box]}}
    (root / "kavsir_bboxes.json").write_text(json.dumps(entry))
    (sample,) = collect_samples(DataSource(str(root)), boxes="json")
    assert sample.boxes.tolist() == [[3, 4, 20, 30]]
    (from_mask,) = collect_samples(DataSource(str(root)), boxes="mask")
    assert from_mask.boxes.shape == (0, 4)  # the empty mask gives no box
    with pytest.raises(ColonsegError, match="no kavsir_bboxes.json"):
        (root / "kavsir_bboxes.json").unlink()
        collect_samples(DataSource(str(root)), boxes="json")


def test_nifti_volumes_give_one_sample_per_labelled_slice(tmp_path):
    nib = pytest.importorskip("nibabel")
    vol = np.random.default_rng(0).normal(100, 30, (32, 40, 5)).astype(np.float32)
    lab = np.zeros((32, 40, 5), np.uint8)
    lab[4:10, 6:20, 1] = 1
    lab[20:30, 10:15, 3] = 1
    for folder, arr in (("imagesTr", vol), ("labelsTr", lab)):
        (tmp_path / folder).mkdir()
        nib.save(nib.Nifti1Image(arr, np.eye(4)), str(tmp_path / folder / "case.nii.gz"))
    samples = collect_samples(DataSource(str(tmp_path)))
    assert [s.slice for s in samples] == [1, 3]
    # NIfTI axis 0 is the image row (y), axis 1 the column (x)
    assert samples[0].boxes.tolist() == [[6, 4, 19, 9]]
    image, mask = read_sample(samples[0])
    assert image.shape == (32, 40, 3) and image.dtype == np.uint8
    assert mask.sum() == 6 * 14


def test_cache_recomputes_only_a_changed_file(tmp_path, untrained):
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    for i in range(2):
        write_png(root / "images" / f"{i}.png", rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
        mask = np.zeros((32, 32), np.uint8)
        mask[8:20, 8:20] = 255
        write_png(root / "masks" / f"{i}.png", mask)
    samples = collect_samples(DataSource(str(root)))
    cache = EmbeddingCache(tmp_path / "cache", untrained)
    assert cache.fill(samples, progress=False) == 2
    assert cache.fill(samples, progress=False) == 0
    before = cache.load(samples[0])
    assert before.shape == (256, 64, 64) and before.dtype == torch.float16
    write_png(samples[0].image, rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    assert cache.fill(samples, progress=False) == 1
    assert not torch.equal(cache.load(samples[0]), before)


def test_decode_with_and_without_box(untrained):
    emb = torch.randn(2, 256, 64, 64)
    with torch.no_grad():
        assert untrained.decode(emb).shape == (2, 1, 256, 256)
        boxes = torch.tensor([[10.0, 10.0, 100.0, 120.0], [0, 0, 255, 255]])
        assert untrained.decode(emb, boxes=boxes).shape == (2, 1, 256, 256)
    trainable = [n for n, p in untrained.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("prompt.") for n in trainable)


def test_user_medsam_vit_b_checkpoint_loads(tmp_path):
    from segment_anything import sam_model_registry

    reference = sam_model_registry["vit_b"](checkpoint=None)
    path = tmp_path / "medsam_vit_b.pth"
    torch.save(reference.state_dict(), path)
    loaded = build_sam("medsam_vit_b", str(path))
    key = "image_encoder.blocks.0.attn.qkv.weight"
    assert torch.equal(loaded.state_dict()[key], reference.state_dict()[key])
    torch.save({"image_encoder.wrong": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ColonsegError, match="bad.pth: not a MedSAM ViT-B"):
        build_sam("medsam_vit_b", str(tmp_path / "bad.pth"))
    with pytest.raises(ColonsegError, match="needs its weights"):
        build_sam("medsam_vit_b")


def test_predictor_segments_what_a_box_prompts():
    from colonseg.data.synthetic import create_disc_image
    from colonseg.engine.checkpoint import ModelMeta
    from colonseg.engine.predict import Predictor

    meta = ModelMeta(arch="automedsam", init_kwargs={}, mean=(0, 0, 0), std=(1, 1, 1))
    predictor = Predictor(create_model("automedsam"), meta, device="cpu", precision="fp32")
    assert predictor.takes_box
    image, mask = create_disc_image(160, seed=3)
    x0, y0, x1, y1 = mask_boxes(mask)[0]
    out = predictor.finish(predictor.box_probs(image, (x0, y0, x1 + 1, y1 + 1)), image)
    dice = 2 * (out.mask & mask).sum() / (out.mask.sum() + mask.sum())
    assert dice > 0.85
    with pytest.raises(ColonsegError, match="empty or outside"):
        predictor.box_probs(image, (500, 500, 600, 600))


def test_box_prompt_module_predicts_a_box_that_sam_decodes():
    net = create_model("automedsam", pretrained=False, sparse="box")
    emb = torch.randn(2, 256, 64, 64)
    box = net.predict_box(emb)
    assert box.shape == (2, 4) and (box[:, 2:] >= box[:, :2]).all()
    assert 0 <= float(box.min()) and float(box.max()) <= net.input_size
    logits = net.decode(emb)
    assert logits.shape == (2, 1, 256, 256)
    logits.mean().backward()
    assert net.prompt.sparse_fc[0].weight.grad.abs().sum() > 0  # the box is in the graph
    with pytest.raises(ColonsegError, match="not a box"):
        create_model("automedsam", pretrained=False).predict_box(emb)


def test_box_loss_zero_for_the_true_box():
    from colonseg.losses.box_prior import box_loss

    boxes = [torch.tensor([[64.0, 32.0, 128.0, 96.0]]), torch.zeros(0, 4)]
    exact = torch.tensor([[0.25, 0.125, 0.5, 0.375], [0.1, 0.1, 0.2, 0.2]])
    assert float(box_loss(exact, boxes, 256)) < 1e-5  # the box-less image is left out
    assert float(box_loss(exact.flip(0), boxes, 256)) > 0.5


def test_region_boxes_from_a_coarse_map():
    from colonseg.models.medsam import region_boxes

    logits = torch.full((2, 1, 64, 64), -8.0)
    logits[0, 0, 8:24, 16:48] = 8.0  # a large region: 32×16 cells → 128×64 pixels
    logits[0, 0, 40:44, 4:8] = 8.0  # 16×16 pixels: 0.4 % of the image, under min_area
    logits[0, 0, 50:60, 50:60] = 8.0  # 40×40 pixels: 2.4 %
    logits[1, 0, 30, 30] = -1.0  # nothing over 0.5: the best cells still give a box
    boxes, keep = region_boxes(logits, 256, k=3, min_area=0.01)
    assert keep.tolist() == [[True, True, False], [True, False, False]]
    assert torch.allclose(boxes[0, 0] * 256, torch.tensor([64.0, 32.0, 192.0, 96.0]), atol=2.5)
    assert torch.allclose(boxes[0, 1] * 256, torch.tensor([200.0, 200.0, 240.0, 240.0]), atol=2.5)
    x0, y0, x1, y1 = (boxes[1, 0] * 256).tolist()
    assert x0 <= 122 <= x1 and y0 <= 122 <= y1 and x1 - x0 < 20


def test_region_prompt_module_unites_the_masks_of_its_boxes():
    from colonseg.models.medsam import region_boxes

    net = create_model("automedsam", pretrained=False, sparse="region", min_area=0.0).eval()
    emb = torch.randn(2, 256, 64, 64)
    with torch.no_grad():
        logits = net.decode(emb)
        boxes, keep = region_boxes(net.prompt.region(emb), 256, 3, 0.0)
        each = [net.decode(emb, boxes=boxes[:, i] * net.input_size) for i in range(3)]
    assert logits.shape == (2, 1, 256, 256)
    united = torch.stack(each).masked_fill(~keep.T[..., None, None, None], -1e9).amax(0)
    assert torch.allclose(logits, united, atol=1e-5)
    assert net.predict_box(emb).shape == (2, 4)
    with pytest.raises(ColonsegError, match="find_boxes"):
        net.prompt.sparse(emb)


def test_flips_move_embeddings_boxes_and_targets_together():
    from colonseg.losses.box_prior import BoxPriorLoss, box_region
    from colonseg.methods.medsam_box.module import MedsamBoxModule

    module = MedsamBoxModule(
        create_model("automedsam", pretrained=False, sparse="region"), BoxPriorLoss(), flip=True
    )
    boxes = [torch.tensor([[8.0, 40.0, 71.0, 135.0]])]  # on the 256 grid, 4-pixel aligned
    target = box_region(boxes, 256, 256)
    emb = torch.nn.functional.avg_pool2d(target, 4).expand(1, 256, 64, 64)
    seen = set()
    for seed in range(8):
        torch.manual_seed(seed)
        e, b, t = module._flip(emb, boxes, target)
        assert torch.equal(box_region(b, 256, 256), t)  # the box follows the target
        assert torch.equal(torch.nn.functional.avg_pool2d(t, 4)[0, 0], e[0, 0])  # and the map
        seen.add(tuple(b[0][0].tolist()))
    assert len(seen) == 4  # all four flips happen
