from __future__ import annotations

import gc
import io
import os
import time
import zipfile

import cv2
import numpy as np
import pytest

from colonseg.app import logic, server
from colonseg.data.synthetic import create_disc_image
from colonseg.engine.checkpoint import ModelMeta, save_pretrained
from colonseg.engine.predict import Prediction, Predictor
from colonseg.errors import ColonsegError
from colonseg.models import create_model
from colonseg.postprocess import PostProcess
from tests.conftest import calibrated_attention_unet


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
    assert server.safe_name(name) == safe


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
    from colonseg.app.server import server_options

    options, warning = server_options(["--server.port", "8600"])
    assert "--server.address=127.0.0.1" in options and warning is None
    assert "--client.showErrorDetails=false" in options
    assert options[-2:] == ["--server.port", "8600"]
    for extra in (["--server.address", "0.0.0.0"], ["--server.address=10.1.2.3"]):
        options, warning = server_options(extra)
        assert "--server.address=127.0.0.1" not in options
        assert "other hosts can reach it, and it has no login: add --auth TOKEN" in warning
        warning = server_options(extra, auth=True)[1]
        assert "it asks for the access token" in warning and "no login" not in warning
    assert server_options(["--server.address=localhost"])[1] is None


def test_settings_come_from_the_environment_with_defaults_and_one_line_errors():
    assert server.AppSettings.from_env({}) == server.AppSettings(None, 3000, 300.0, 3)
    env = {"COLONSEG_APP_TOKEN": "s3cret", "COLONSEG_APP_MAX_VIDEO_FRAMES": "10",
           "COLONSEG_APP_MAX_VIDEO_SECONDS": "2.5", "COLONSEG_APP_MAX_MODELS": "1"}  # fmt: skip
    settings = server.AppSettings.from_env(env)
    assert settings == server.AppSettings("s3cret", 10, 2.5, 1)
    assert server.AppSettings.from_env(settings.to_env()) == settings
    assert server.AppSettings.from_env({"COLONSEG_APP_TOKEN": ""}).token is None
    with pytest.raises(ColonsegError, match="^COLONSEG_APP_MAX_MODELS='two': not a whole number"):
        server.AppSettings.from_env({"COLONSEG_APP_MAX_MODELS": "two"})
    with pytest.raises(ColonsegError, match="max_video_frames must be positive"):
        server.AppSettings(max_video_frames=0)
    with pytest.raises(ColonsegError, match="the access token is empty"):
        server.AppSettings(token="  ")


def test_only_the_right_token_passes_compared_in_constant_time(monkeypatch):
    settings = server.AppSettings(token="correct horse")
    assert server.token_matches("correct horse", settings)
    for wrong in ("", "correct", "correct horse ", "Correct horse", "correct horse battery"):
        assert not server.token_matches(wrong, settings)
    assert server.token_matches("anything", server.AppSettings())  # no token set: no login
    calls = []
    monkeypatch.setattr(server.hmac, "compare_digest", lambda a, b: calls.append((a, b)) or True)
    assert server.token_matches("x", settings) and calls == [(b"x", b"correct horse")]


def test_app_command_hands_its_settings_to_the_page_by_environment_not_argv(monkeypatch):
    from typer.testing import CliRunner

    from colonseg.cli.main import app

    started = {}

    def execve(path, argv, env):
        started.update(argv=argv, env=env)
        raise SystemExit(0)

    monkeypatch.setattr(os, "execve", execve)
    monkeypatch.setenv("COLONSEG_APP_MAX_MODELS", "2")
    args = ["app", "--auth", "tok3n", "--max-video-frames", "50", "--server.address", "0.0.0.0"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "tok3n" not in " ".join(started["argv"]) and "--server.address" in started["argv"]
    assert server.AppSettings.from_env(started["env"]) == server.AppSettings("tok3n", 50, 300.0, 2)
    assert "it asks for the access token" in result.output
    result = CliRunner().invoke(app, ["app", "--auth", ""])
    assert result.exit_code == 2 and "the access token is empty" in result.output


def _video(path, colours, fps: float = 10.0, size: tuple[int, int] = (64, 48)):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    for colour in colours:
        writer.write(np.full((size[1], size[0], 3), colour, np.uint8))
    writer.release()
    return path


def test_a_video_longer_than_the_limits_is_refused_from_its_header(tmp_path):
    clip = _video(tmp_path / "clip.mp4", [(0, 0, 0)] * 12, fps=10)
    assert server.video_header(clip) == (12, 10.0)
    server.check_video_header("clip.mp4", 12, 10.0, server.AppSettings())
    message = r"^clip.mp4: video too long \(12 frames, 1 s at 10 fps\); the limit is 10 frames"
    with pytest.raises(ColonsegError, match=message):
        server.check_video_header(
            "clip.mp4", *server.video_header(clip), server.AppSettings(None, 10)
        )
    with pytest.raises(ColonsegError, match="the limit is 3000 frames and 1 s$"):
        server.check_video_header("clip.mp4", 12, 10.0, server.AppSettings(max_video_seconds=1))
    assert server.video_header(tmp_path / "missing.mp4") == (0, 0.0)


def test_decoding_stops_at_the_frame_cap_whatever_the_header_says(tmp_path):
    from colonseg.engine.predict_video import run_predict_video

    clip = _video(tmp_path / "clip.mp4", [(k * 8, 0, 0) for k in range(30)])
    net = create_model("unet", encoder="test_efficientnet", pretrained=False)
    meta = ModelMeta("unet", {"encoder": "test_efficientnet"}, size=(64, 64))
    predictor = Predictor(net, meta, device="cpu", precision="fp32")
    seen = []
    real = predictor.predict_batch
    predictor.predict_batch = lambda images: seen.extend(images) or real(images)
    settings = server.AppSettings(max_video_frames=20)
    capped = server.limit_video_frames(predictor, "clip.mp4", settings, header=(10, 10.0))
    message = "^clip.mp4: video too long: decoding passed 20 frames although its header states 10"
    with pytest.raises(ColonsegError, match=message):
        run_predict_video(capped, clip, tmp_path / "out", progress=False)
    assert len(seen) <= 20, "frames beyond the cap reached the model"
    assert not list((tmp_path / "out").glob("*.mp4"))
    # within the limits (here 4 s at 10 fps = 40 frames) the whole video is segmented
    capped = server.limit_video_frames(
        predictor, "clip.mp4", server.AppSettings(None, 100, 4.0), (30, 10.0)
    )
    assert run_predict_video(capped, clip, tmp_path / "ok", progress=False)["frames"] == 30
    seconds = server.limit_video_frames(
        predictor, "c", server.AppSettings(None, 100, 2.0), (5, 10.0)
    )
    with pytest.raises(ColonsegError, match="decoding passed 20 frames"):
        run_predict_video(seconds, clip, tmp_path / "s", progress=False)
    frame = server.read_video_frame(clip, 5, "clip.mp4")
    assert frame.shape == (48, 64, 3) and abs(int(frame[..., 2].mean()) - 40) < 8  # BGR → RGB
    with pytest.raises(ColonsegError, match="^clip.mp4: frame 99 could not be decoded"):
        server.read_video_frame(clip, 99, "clip.mp4")


def test_the_model_cache_holds_at_most_n_models_and_drops_the_least_recently_used():
    loads = []
    cache = server.ModelCache(
        max_entries=3, load=lambda name: loads.append(name) or f"model {name}"
    )
    for name in ("a", "b", "c"):
        assert cache.get(name) == f"model {name}"
    assert cache.get("a") == "model a" and loads == ["a", "b", "c"]  # a hit: no second load
    cache.get("d")  # the 4th distinct model: b, the least recently used, is dropped
    assert cache.keys() == ["c", "a", "d"] and "b" not in cache
    cache.get("b")
    assert loads == ["a", "b", "c", "d", "b"] and cache.keys() == ["a", "d", "b"]

    def fail(name):
        raise ColonsegError(f"{name}: broken")

    broken = server.ModelCache(max_entries=1, load=fail)
    with pytest.raises(ColonsegError, match="x: broken"):
        broken.get("x")
    assert broken.keys() == []


def test_a_session_upload_folder_goes_when_the_session_does(tmp_path):
    uploads = server.UploadFolder(tmp_path)
    folder = uploads.path
    assert folder.name.startswith("colonseg-app-") and folder.stat().st_mode & 0o777 == 0o700
    saved = uploads.save("../../clip 1.mp4", b"video")
    assert saved.read_bytes() == b"video" and saved.name == "clip_1.mp4"
    assert saved.parent.parent == folder
    inode = saved.stat().st_ino
    assert uploads.save("../../clip 1.mp4", b"video").stat().st_ino == inode  # written once
    del uploads
    gc.collect()
    assert not folder.exists(), "the session's uploads outlived it"
    uploads = server.UploadFolder(tmp_path)
    uploads.remove()
    assert not uploads.path.exists()


def test_start_up_sweep_removes_stale_upload_folders_only(tmp_path):
    old, fresh, active = (tmp_path / f"colonseg-app-{n}" for n in ("old", "fresh", "active"))
    for folder in (old, fresh, active):
        (folder / "sub").mkdir(parents=True)
        (folder / "sub" / "clip.mp4").write_bytes(b"x")
    other = tmp_path / "someone-else"
    other.mkdir()
    outside = tmp_path / "outside"
    (outside / "keep").mkdir(parents=True)
    link = tmp_path / "colonseg-app-link"
    link.symlink_to(outside)
    hours_ago = time.time() - 2 * 3600
    for path in (
        old,
        old / "sub",
        old / "sub" / "clip.mp4",
        other,
        outside,
        active,
        active / "sub",
    ):
        os.utime(path, (hours_ago, hours_ago))
    os.utime(link, (hours_ago, hours_ago), follow_symlinks=False)
    # active: an old folder, but a file in it was written a moment ago
    assert server.sweep_uploads(tmp_path, max_age_s=3600) == [old]
    assert not old.exists() and fresh.exists() and active.exists() and other.exists()
    assert (outside / "keep").exists() and link.is_symlink()


def _attention_predictor() -> Predictor:
    meta = ModelMeta("attention_unet", {"encoder": "test_efficientnet"}, size=(64, 64))
    return Predictor(calibrated_attention_unet(), meta, device="cpu", precision="fp32")


def test_attention_maps_follow_the_image_at_its_size_within_0_1():
    predictor = _attention_predictor()
    disc = cv2.resize(create_disc_image(64)[0], (70, 50))
    noise = np.random.default_rng(0).integers(0, 256, (50, 70, 3), np.uint8)
    a, b = logic.attention_maps(predictor, disc), logic.attention_maps(predictor, noise)
    assert list(a) == list(logic.ATTENTION_LABELS)  # bottleneck, then strides 16 … 2
    for key in a:
        assert a[key].shape == (50, 70) and a[key].dtype == np.float32
        assert 0 <= a[key].min() and a[key].max() <= 1
        assert a[key].std() > 1e-3, f"{key}: a flat map"
        assert np.abs(a[key] - b[key]).max() > 1e-2, f"{key}: the same map for two images"
    picture = logic.attention_heatmap(disc, a["gate_stride8"])
    assert picture.shape == (50, 70, 3) and picture.dtype == np.uint8
    assert not np.array_equal(picture, logic.attention_heatmap(disc, b["gate_stride8"]))
    plain = Predictor(
        create_model("unet", encoder="test_efficientnet", pretrained=False),
        ModelMeta("unet", {"encoder": "test_efficientnet"}, size=(64, 64)),
        device="cpu",
    )
    assert logic.attention_maps(plain, disc) == {}  # no attention: the page shows no panel


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("polyp_general", "recommended for frames from your own hospital"),
        ("neopolyp_pranet_lite0", "three classes"),
        ("mssg_glas", "histology"),
        ("default", "PraNet-protocol"),
        ("polyp_unet_lite0_448", "own hospital: **polyp_general**"),
    ],
)
def test_zoo_caption_fits_the_picked_model(name, says):
    caption = logic.zoo_caption(name)
    assert says in caption
    if name != "polyp_general":  # every other model points to the recommended one, or away
        assert "polyp_general" in caption or "histology" in caption
