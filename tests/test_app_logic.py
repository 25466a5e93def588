from __future__ import annotations

import io
import zipfile

import cv2
import numpy as np
import pytest

from colonseg.app import logic
from colonseg.data.synthetic import create_disc_image
from colonseg.engine.checkpoint import ModelMeta, save_pretrained
from colonseg.engine.predict import Prediction, Predictor
from colonseg.errors import ColonsegError
from colonseg.models import create_model
from colonseg.postprocess import PostProcess


def _jpeg(image: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", image)[1].tobytes()


def test_uploads_decode_or_fail_with_the_file_name(monkeypatch):
    image = create_disc_image(64)[0]
    assert logic.decode_upload("frame.jpg", _jpeg(image)).shape == (64, 64, 3)
    with pytest.raises(ColonsegError, match="^notes.txt: not an accepted file type"):
        logic.decode_upload("notes.txt", b"hello")
    with pytest.raises(ColonsegError, match="^broken.jpg: not a readable image"):
        logic.decode_upload("broken.jpg", b"\xff\xd8garbage")
    monkeypatch.setattr(logic, "MAX_UPLOAD_MB", 0.001)
    with pytest.raises(ColonsegError, match="^frame.jpg: file too large"):
        logic.decode_upload("frame.jpg", _jpeg(image) + bytes(2000))


def test_uploaded_checkpoint_zip_loads_and_nothing_else_is_extracted(tmp_path):
    net = create_model("unet", encoder="test_efficientnet", pretrained=False)
    folder = save_pretrained(
        net, ModelMeta("unet", {"encoder": "test_efficientnet"}), tmp_path / "m"
    )
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for name in ("config.json", "weights.safetensors"):
            archive.write(folder / name, f"m/{name}")
        archive.writestr("../../evil.sh", "rm -rf /")
    target = logic.load_uploaded_checkpoint("m.zip", buf.getvalue(), tmp_path / "up")
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "weights.safetensors"]
    assert not (tmp_path / "evil.sh").exists()
    Predictor.from_pretrained(target, device="cpu")
    with pytest.raises(ColonsegError, match="must hold config.json"):
        logic.load_uploaded_checkpoint("x.zip", _zip({"a.txt": b"1"}), tmp_path / "up")
    with pytest.raises(ColonsegError, match="not a valid zip"):
        logic.load_uploaded_checkpoint("x.zip", b"junk", tmp_path / "up")
    with pytest.raises(ColonsegError, match="not an accepted file type .accepted: onnx, zip"):
        logic.load_uploaded_checkpoint("x.pth", b"junk", tmp_path / "up")


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buf.getvalue()


def test_summary_counts_regions_above_a_speck_and_zip_holds_every_file():
    mask = np.zeros((100, 100), np.uint8)
    mask[10:30, 10:30] = 1  # 4 % of the frame
    mask[60:70, 60:70] = 1  # 1 %
    mask[90, 90] = 1  # a one-pixel speck: not a polyp
    out = Prediction(mask.astype(np.float32), mask)
    summary = logic.regions_summary(out, ["polyp"])
    assert summary == {"polyps": 2, "area_percent": 5.01}
    net = create_model("unet", encoder="test_efficientnet", pretrained=False)
    predictor = Predictor(net, ModelMeta("unet", {"encoder": "test_efficientnet"}), device="cpu")
    panels = logic.panels(predictor, np.zeros((100, 100, 3), np.uint8), out)
    data = logic.zip_results({"a.jpg": panels, "b.png": panels})
    names = sorted(zipfile.ZipFile(io.BytesIO(data)).namelist())
    assert names == ["masks/a.png", "masks/b.png", "overlays/a.png", "overlays/b.png"]


def test_heat_map_of_an_anomaly_map_is_scaled_to_its_peak_when_the_mask_is_relative():
    prob = np.zeros((40, 40), np.float32)
    prob[10:20, 10:20] = 0.04  # MAPSeg-like: a clear spot at a small absolute value
    out = Prediction(prob, (prob > 0.02).astype(np.uint8))
    net = create_model("unet", encoder="test_efficientnet", pretrained=False)
    predictor = Predictor(net, ModelMeta("unet", {"encoder": "test_efficientnet"}), device="cpu")
    image = np.full((40, 40, 3), 128, np.uint8)
    fixed = logic.panels(predictor, image, out)
    assert fixed.heat_top == 1.0 and fixed.probability.max() == 10  # 0.04 of 255
    predictor.post = PostProcess.parse("otsu=0")
    relative = logic.panels(predictor, image, out)
    assert relative.heat_top == pytest.approx(0.04) and relative.probability.max() == 255
    red = relative.heatmap[15, 15].astype(int)
    assert red[0] > red[2] + 40, "the spot is drawn hot, not the blue of the background"
    assert fixed.heatmap[15, 15].astype(int)[2] > fixed.heatmap[15, 15].astype(int)[0]


def test_selected_box_reads_a_plotly_box_selection():
    event = {"selection": {"box": [{"x": [50.2, 10.0], "y": [5.0, 40.5]}], "points": []}}
    assert logic.selected_box(event) == (10.0, 5.0, 50.2, 40.5)
    assert logic.selected_box({"selection": {"box": [], "points": []}}) is None
    assert logic.selected_box(None) is None


@pytest.mark.parametrize(
    "name, safe",
    [
        ("frame 1.jpg", "frame_1.jpg"),
        ("../../etc/passwd", "passwd"),
        ("..\\..\\Windows\\evil.png", "evil.png"),
        ("..", "upload"),
        (".hidden.png", "hidden.png"),
        ('a"; rm -rf ~;.png', "a___rm_-rf___.png"),
        ("caf\u00e9\n.png", "caf__.png"),
    ],
)
def test_download_and_upload_names_are_made_safe(name, safe):
    assert logic.safe_name(name) == safe


def test_zip_names_are_safe_and_unique_and_bombs_are_refused(tmp_path, monkeypatch):
    mask = np.zeros((8, 8), np.uint8)
    out = Prediction(mask.astype(np.float32), mask)
    net = create_model("unet", encoder="test_efficientnet", pretrained=False)
    predictor = Predictor(net, ModelMeta("unet", {"encoder": "test_efficientnet"}), device="cpu")
    panels = logic.panels(predictor, np.zeros((8, 8, 3), np.uint8), out)
    data = logic.zip_results({"a.jpg": panels, "a.png": panels, "../../x.png": panels})
    names = sorted(zipfile.ZipFile(io.BytesIO(data)).namelist())
    assert names == [f"{d}/{s}.png" for d in ("masks", "overlays") for s in ("a", "a_2", "x")]

    monkeypatch.setattr(logic, "MAX_UNZIPPED_MB", 1)
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("config.json", b"{}")
        archive.writestr("weights.safetensors", bytes(logic.MAX_UNZIPPED_MB * 2**20 + 1))
    with pytest.raises(ColonsegError, match="expands beyond"):
        logic.load_uploaded_checkpoint("m.zip", bomb.getvalue(), tmp_path / "up")
    assert not (tmp_path / "up").exists()
    onnx = logic.load_uploaded_checkpoint("../../model.onnx", b"onnx", tmp_path / "up")
    assert onnx == tmp_path / "up" / "model.onnx"


def test_app_refuses_images_over_its_pixel_limit_before_decoding(monkeypatch):
    monkeypatch.setattr(logic, "MAX_APP_PIXELS", 100)
    with pytest.raises(ColonsegError, match="^big.png: image too large .*limit"):
        logic.decode_upload("big.png", _png(np.zeros((20, 20), np.uint8)))


def _png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image)[1].tobytes()


def test_page_settings_reach_a_copy_of_the_cached_predictor_and_tta_changes_the_probabilities():
    net = create_model("unet", encoder="test_efficientnet", pretrained=False)
    predictor = Predictor(
        net, ModelMeta("unet", {"encoder": "test_efficientnet"}, size=(64, 64)), device="cpu"
    )
    image = np.random.default_rng(2).integers(0, 256, (48, 40, 3), np.uint8)
    mine = logic.configure(predictor, 0.3, "fill_holes", "none")
    assert mine.threshold == 0.3 and mine.post.spec() == "fill_holes" and mine.model is net
    # the cached Predictor other browser sessions share keeps its own settings
    assert predictor.threshold == 0.5 and not predictor.post and predictor.tta == "none"
    plain = logic.predict_probs(mine, image)
    flipped = logic.predict_probs(logic.configure(predictor, 0.3, "none", "flip"), image)
    assert not np.allclose(plain, flipped)
    turned = logic.predict_probs(predictor, image, "d4")
    assert predictor.tta == "none" and not np.allclose(turned, flipped)
    np.testing.assert_allclose(logic.predict_probs(predictor, image), plain)
    out = logic.configure(predictor, 0.9, "none", "flip").finish(flipped, image)
    assert out.mask.shape == (48, 40) and predictor.threshold == 0.5


def test_the_app_listens_on_this_machine_unless_told_and_hides_error_details():
    from colonseg.app.logic import server_options

    options, warning = server_options(["--server.port", "8600"])
    assert "--server.address=127.0.0.1" in options and warning is None
    assert "--client.showErrorDetails=false" in options
    assert options[-2:] == ["--server.port", "8600"]
    for extra in (["--server.address", "0.0.0.0"], ["--server.address=10.1.2.3"]):
        options, warning = server_options(extra)
        assert "--server.address=127.0.0.1" not in options
        assert "other hosts can reach it, and it has no login" in warning
    assert server_options(["--server.address=localhost"])[1] is None
