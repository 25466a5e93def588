from __future__ import annotations

import csv
import os

import av
import pytest

from colonseg.data.synthetic import create_disc_image
from colonseg.engine.checkpoint import ModelMeta
from colonseg.engine.predict import Predictor
from colonseg.engine.predict_video import run_predict_video
from colonseg.errors import ColonsegError
from colonseg.models import create_model


def _write_video(path, n=12, size=(80, 64)):
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for i in range(n):
            image = create_disc_image(80, seed=i)[0][: size[1], : size[0]]
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


@pytest.fixture
def predictor():
    net = create_model("unet", encoder="test_efficientnet", pretrained=False)
    meta = ModelMeta("unet", {"encoder": "test_efficientnet"}, size=(64, 64))
    return Predictor(net, meta, device="cpu", threshold=0.5)


def test_video_gives_overlay_video_csv_and_frame_masks(predictor, tmp_path):
    video = _write_video(tmp_path / "clip.avi")
    result = run_predict_video(predictor, video, tmp_path / "out", save_masks=True, batch_size=5)
    assert result["frames"] == 12
    rows = list(csv.DictReader(result["csv"].open()))
    assert [int(r["frame"]) for r in rows] == list(range(12))
    assert float(rows[3]["time_s"]) == pytest.approx(3 / 25)
    for r in rows:
        assert 0 <= float(r["area_fraction"]) <= 1 and 0 <= float(r["confidence"]) <= 1
        assert int(r["polyp"]) == (float(r["area_fraction"]) > 0)
    with av.open(str(result["video"])) as back:
        frames = [f.to_ndarray(format="rgb24") for f in back.decode(video=0)]
    assert len(frames) == 12 and frames[0].shape == (64, 80, 3)
    assert len(list((tmp_path / "out" / "clip_masks").glob("*.png"))) == 12
    assert not list((tmp_path / "out").glob(".*")), "no temporary files left behind"
    mask = next((tmp_path / "out" / "clip_masks").glob("*.png"))
    for output in (result["video"], result["csv"]):  # as every other output, not mkstemp's 0600
        assert output.stat().st_mode & 0o777 == mask.stat().st_mode & 0o777
        assert output.stat().st_mode & 0o044 or os.umask(os.umask(0)) & 0o044


def test_unreadable_video_fails_in_one_line_and_writes_nothing(predictor, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00" * 1000)
    with pytest.raises(ColonsegError, match="broken.mp4: not a readable video"):
        run_predict_video(predictor, bad, tmp_path / "out")
    with pytest.raises(ColonsegError, match="missing.mp4: no such video file"):
        run_predict_video(predictor, tmp_path / "missing.mp4", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_truncated_video_leaves_no_output_under_its_final_name(predictor, tmp_path):
    video = _write_video(tmp_path / "clip.mp4", n=30)
    data = video.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 3])  # the moov atom of an mp4 is at its end
    with pytest.raises(ColonsegError, match="cut.mp4"):
        run_predict_video(predictor, cut, tmp_path / "out")
    left = list((tmp_path / "out").iterdir()) if (tmp_path / "out").exists() else []
    assert left == [], f"a failed video leaves nothing behind, found {left}"


class StopAfter:
    """Counts the frames a Predictor is asked for; raises KeyboardInterrupt (Ctrl-C) at the
    batch after ``stop`` frames."""

    def __init__(self, predictor, stop: int | None = None) -> None:
        self.predictor, self.stop, self.frames = predictor, stop, 0

    def __call__(self, images):
        if self.stop is not None and self.frames >= self.stop:
            raise KeyboardInterrupt
        self.frames += len(images)
        return type(self.predictor).predict_batch(self.predictor, images)


def test_a_stopped_frame_export_resumes_at_its_first_missing_frame(
    predictor, tmp_path, monkeypatch
):
    video = _write_video(tmp_path / "clip.avi")
    clean = run_predict_video(predictor, video, tmp_path / "clean", save_masks=True, batch_size=5)
    out = tmp_path / "out"
    stopped = StopAfter(predictor, stop=10)
    monkeypatch.setattr(predictor, "predict_batch", stopped)
    with pytest.raises(KeyboardInterrupt):
        run_predict_video(predictor, video, out, save_masks=True, batch_size=5)
    assert not (out / "clip_frames.csv").exists() and not (out / "clip_overlay.mp4").exists()
    assert len(list((out / "clip_masks").glob("*.png"))) == 10
    stale = out / ".clip_overlay.x1y2z3w4.mp4"  # what kill -9 leaves instead of Ctrl-C
    user = out / ".clip_overlay.mine.mp4"
    stale.write_bytes(b"half a video")
    user.write_bytes(b"a user's file")

    counted = StopAfter(predictor)
    monkeypatch.setattr(predictor, "predict_batch", counted)
    result = run_predict_video(predictor, video, out, save_masks=True, batch_size=5,
                               skip_existing=True)  # fmt: skip
    assert counted.frames == 2 and result["resumed_at"] == 10 and result["frames"] == 12
    assert result["csv"].read_text() == clean["csv"].read_text()
    with av.open(str(result["video"])) as back:
        assert sum(1 for _ in back.decode(video=0)) == 12
    assert len(list((out / "clip_masks").glob("*.png"))) == 12
    assert not (out / "clip_masks" / "frames.partial.csv").exists()
    assert not stale.exists() and user.exists()

    written = result["csv"].stat().st_mtime_ns
    again = run_predict_video(predictor, video, out, save_masks=True, skip_existing=True)
    assert again["skipped"] and again["frames"] == 12 and counted.frames == 2  # done: not read
    assert result["csv"].stat().st_mtime_ns == written
    (out / "clip_masks" / "000011.png").unlink()  # complete means: every frame has its mask
    run_predict_video(predictor, video, out, save_masks=True, batch_size=5, skip_existing=True)
    assert counted.frames == 3 and (out / "clip_masks" / "000011.png").is_file()
