from __future__ import annotations

import cv2
import numpy as np
import pytest

from colonseg.errors import ColonsegError
from colonseg.postprocess import PostProcess


def _disc(size=80, center=(40, 40), r=20) -> np.ndarray:
    m = np.zeros((size, size), np.uint8)
    cv2.circle(m, center, r, 1, -1)
    return m


def test_fill_holes_fills_a_ring():
    mask = _disc()
    mask[35:45, 35:45] = 0
    out, _ = PostProcess(fill_holes=True)(mask.astype(np.float32), mask)
    np.testing.assert_array_equal(out, _disc())


def test_min_area_drops_small_regions_and_keep_largest_keeps_one():
    mask = _disc(r=15)
    mask[2:5, 2:5] = 1  # 9 px speck: 0.14 % of the image
    cv2.circle(mask, (70, 70), 6, 1, -1)  # second, smaller polyp
    prob = mask.astype(np.float32)
    out, _ = PostProcess(min_area=0.005)(prob, mask)
    assert out[3, 3] == 0 and out[70, 70] == 1 and out[40, 40] == 1
    out, _ = PostProcess(keep_largest=True)(prob, mask)
    assert out[3, 3] == 0 and out[70, 70] == 0 and out.sum() == _disc(r=15).sum()


def test_adaptive_morphology_removes_a_spur_and_closes_a_crack():
    mask = _disc(r=25)
    mask[40, 65:79] = 1  # one-pixel spur sticking out
    mask[39:42, 20:40] = 0  # thin crack into the region
    out, _ = PostProcess(morphology=True)(mask.astype(np.float32), mask)
    assert out[40, 75] == 0, "spur removed"
    assert out[40, 30] == 1, "crack closed"
    assert abs(int(out.sum()) - int(_disc(r=25).sum())) < 0.05 * _disc(r=25).sum()


def test_otsu_adapts_the_threshold_but_not_on_empty_frames():
    prob = np.full((60, 60), 0.05, np.float32)
    prob[20:40, 20:40] = 0.35  # a confident-but-low region the fixed 0.5 threshold misses
    mask = (prob >= 0.5).astype(np.uint8)
    out, _ = PostProcess.parse("otsu")(prob, mask)
    assert out[30, 30] == 1 and out[5, 5] == 0
    flat = np.random.default_rng(0).uniform(0, 0.1, (60, 60)).astype(np.float32)
    out, _ = PostProcess.parse("otsu")(flat, np.zeros((60, 60), np.uint8))
    assert out.sum() == 0, "noise below the Otsu floor stays background"
    out, _ = PostProcess.parse("otsu=0")(flat, np.zeros((60, 60), np.uint8))
    assert 0 < out.mean() < 1, "plain Otsu (MAPSeg's rule) splits even noise"


def test_close_bridges_a_gap_narrower_than_its_kernel():
    mask = np.zeros((40, 40), np.uint8)
    mask[10:30, 5:18], mask[10:30, 21:35] = 1, 1  # a 3-pixel gap
    out, _ = PostProcess.parse("close=5")(mask.astype(np.float32), mask)
    assert out[20, 19] == 1 and out[5, 5] == 0
    out, _ = PostProcess.parse("close=3")(mask.astype(np.float32), mask)
    assert out[20, 19] == 0


def test_class_vote_makes_each_region_one_class():
    mask = _disc()
    probs = np.zeros((3, 80, 80), np.float32)
    probs[0] = 1 - mask
    probs[1] = mask * 0.7
    probs[2] = mask * 0.3
    probs[1, 20:35, :], probs[2, 20:35, :] = 0.3 * mask[20:35], 0.7 * mask[20:35]  # a green top
    plain, classes = PostProcess()(mask.astype(np.float32), mask, probs)
    assert set(np.unique(classes[mask > 0])) == {1, 2}, "without the vote the region is mixed"
    _, voted = PostProcess(class_vote=True)(mask.astype(np.float32), mask, probs)
    assert set(np.unique(voted[mask > 0])) == {1}
    assert (voted[mask == 0] == 0).all()


def test_spec_parses_round_trips_and_rejects_nonsense():
    pp = PostProcess.parse("fill_holes, min_area=0.002,class_vote")
    assert pp == PostProcess(fill_holes=True, min_area=0.002, class_vote=True)
    assert PostProcess.parse(pp.spec()) == pp
    assert not PostProcess.parse("none") and not PostProcess.parse("")
    with pytest.raises(ColonsegError, match="unknown step 'fill'"):
        PostProcess.parse("fill")
    with pytest.raises(ColonsegError, match="min_area takes a fraction"):
        PostProcess.parse("min_area=big")
    with pytest.raises(ColonsegError, match="takes no value"):
        PostProcess.parse("fill_holes=1")
    with pytest.raises(ColonsegError, match="otsu takes a floor"):
        PostProcess.parse("otsu=1")
    with pytest.raises(ColonsegError, match="close takes a kernel size"):
        PostProcess.parse("close=2.5")
    mapseg = PostProcess.parse("fov,otsu=0,close=5,fill_holes,keep_largest")
    assert mapseg.otsu == 0 and mapseg.close == 5
    assert PostProcess.parse(mapseg.spec()) == mapseg
    assert mapseg.spec() == "fov,otsu=0,close=5,fill_holes,keep_largest"
    assert PostProcess.parse("otsu").spec() == "otsu"


def test_a_bad_post_processing_spec_fails_when_the_config_loads():
    from colonseg.engine.config import load_config

    with pytest.raises(ColonsegError, match="unknown step 'holes'"):
        load_config("polyp_unet_lite0", ["postprocess=holes"])


def test_fov_makes_the_black_border_and_burnt_in_text_background():
    image = np.zeros((80, 80, 3), np.uint8)
    cv2.circle(image, (40, 40), 36, (190, 100, 80), -1)  # the endoscope's round view
    cv2.rectangle(image, (2, 2), (14, 8), (255, 255, 255), -1)  # text in the dark corner
    probs = np.full((1, 80, 80), 0.9, np.float32)
    binary = PostProcess.parse("fov").restrict(probs, image)
    assert binary[0, 40, 40] == pytest.approx(0.9)
    assert binary[0, 1, 1] == 0 and binary[0, 5, 8] == 0 and binary[0, 78, 40] == 0
    assert PostProcess().restrict(probs, image) is probs  # off: untouched
    three = np.stack([np.full((80, 80), 0.2), np.full((80, 80), 0.5), np.full((80, 80), 0.3)])
    out = PostProcess.parse("fov").restrict(three, image)
    assert out[:, 1, 1].tolist() == [1.0, 0.0, 0.0] and out[:, 40, 40].tolist() == [0.2, 0.5, 0.3]


def test_smooth_blurs_each_map_at_model_resolution_and_keeps_class_sums():
    pp = PostProcess.parse("smooth")
    assert pp.smooth == 4 and pp.spec() == "smooth=4"
    assert PostProcess.parse("smooth=2.5,fov").spec() == "smooth=2.5,fov"
    with pytest.raises(ColonsegError, match="smooth takes a Gaussian sigma"):
        PostProcess.parse("smooth=wide")
    spike = np.zeros((1, 33, 33), np.float32)
    spike[0, 16, 16] = 1.0
    out = pp.smooth_probs(spike)
    assert out.shape == spike.shape and out.sum() == pytest.approx(1.0, abs=1e-3)
    assert out[0, 16, 16] == pytest.approx(1 / (2 * np.pi * 16), rel=0.05)  # a σ = 4 Gaussian
    assert out[0, 16, 20] < out[0, 16, 18] < out[0, 16, 16]
    assert PostProcess().smooth_probs(spike) is spike  # off: untouched
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), (24, 24)).transpose(2, 0, 1).astype(np.float32)
    np.testing.assert_allclose(pp.smooth_probs(probs).sum(0), 1.0, atol=1e-5)
