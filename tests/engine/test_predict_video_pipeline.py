"""The threaded video pipeline: same outputs as the serial one, failures in its threads end the
run with one line and no output under a final name, and the summary strip."""

from __future__ import annotations

import csv
import threading
from functools import partial

import cv2
import numpy as np
import pytest

import colonseg.engine.predict_video as pv
from colonseg.cli.main import app
from colonseg.engine.checkpoint import ModelMeta
from colonseg.engine.predict import Predictor
from colonseg.errors import ColonsegError
from colonseg.models import create_model
from colonseg.viz.video_summary import VideoSummary
from tests.engine.test_predict_video import _write_video


@pytest.fixture
def predictor():
    net = create_model("unet", encoder="test_efficientnet", pretrained=False)
    meta = ModelMeta("unet", {"encoder": "test_efficientnet"}, size=(64, 64))
    return Predictor(net, meta, device="cpu", threshold=0.5)


def _within(seconds: float, fn):
    """``fn()``'s result or exception; fails the test instead of hanging past ``seconds``."""
    box = {}

    def call():
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"still running after {seconds} s: a thread hangs"
    if "error" in box:
        raise box["error"]
    return box["value"]


def _masks(folder):
    return {p.name: cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted(folder.glob("*.png"))}


def _finals(out):
    return sorted(p.name for p in out.iterdir() if p.is_file()) if out.exists() else []


def test_threaded_outputs_equal_serial_ones(predictor, tmp_path):
    video = _write_video(tmp_path / "clip.avi", n=21)  # 5 batches of 4 and one of 1
    runs = {}
    for name, pipeline, batch in (("threads", "threads", 4), ("serial", "serial", 4),
                                  ("one", "serial", 1)):  # fmt: skip
        out = tmp_path / name
        run = partial(pv.run_predict_video, predictor, video, out, save_masks=True,
                      batch_size=batch, progress=False, pipeline=pipeline)  # fmt: skip
        result = _within(60, run)
        rows = list(csv.DictReader(result["csv"].open()))
        runs[name] = (result, rows, _masks(out / "clip_masks"))
    result, rows, masks = runs["threads"]
    assert result["frames"] == 21 and [int(r["frame"]) for r in rows] == list(range(21))
    assert result["csv"].read_text() == runs["serial"][0]["csv"].read_text()
    assert list(masks) == [f"{i:06d}.png" for i in range(21)]
    for name, mask in masks.items():
        assert np.array_equal(mask, runs["serial"][2][name]), name
        differ = np.mean(mask != runs["one"][2][name])  # batch 1: equal within bf16 tolerance
        assert differ < 0.01, (name, differ)
    for a, b in zip(rows, runs["one"][1], strict=True):
        assert a["frame"] == b["frame"] and a["time_s"] == b["time_s"]
        assert float(a["confidence"]) == pytest.approx(float(b["confidence"]), abs=0.02)
    assert not [t for t in threading.enumerate() if t.name.startswith("colonseg-")]


def test_summary_strip_is_written_beside_the_csv(predictor, tmp_path):
    video = _write_video(tmp_path / "clip.avi")
    result = pv.run_predict_video(predictor, video, tmp_path / "out", progress=False)
    assert result["summary"] == tmp_path / "out" / "clip_summary.png"
    image = cv2.imread(str(result["summary"]))
    assert image is not None and image.shape[1] >= 1000
    assert result["summary"].stat().st_mode & 0o777 == result["csv"].stat().st_mode & 0o777
    assert not list((tmp_path / "out").glob(".*")), "no temporary files left behind"
    (tmp_path / "out" / "clip_summary.png").unlink()  # a video without its summary is not done
    again = pv.run_predict_video(predictor, video, tmp_path / "out", skip_existing=True,
                                 progress=False)  # fmt: skip
    assert not again["skipped"] and result["summary"].is_file()


def _failing_frames(after: int, exc: BaseException):
    real = pv._frames

    def frames(container, path):
        for i, image in enumerate(real(container, path)):
            if i == after:
                raise exc
            yield image

    return frames


@pytest.mark.parametrize(
    ("pipeline", "exc", "match"),
    [
        ("threads", ColonsegError("clip.mp4: video decoding failed (InvalidDataError: bad)"),
         "^clip.mp4: video decoding failed \\(InvalidDataError: bad\\)$"),
        ("serial", ColonsegError("clip.mp4: video decoding failed (InvalidDataError: bad)"),
         "^clip.mp4: video decoding failed \\(InvalidDataError: bad\\)$"),
        ("threads", RuntimeError("corrupt\nframe"),  # what _frames does not foresee
         "clip.mp4: video decoding failed \\(RuntimeError: corrupt frame\\)$"),
    ],
    ids=["threads", "serial", "threads-unforeseen"],
)  # fmt: skip
def test_a_decoding_error_midway_ends_the_run_in_one_line(
    predictor, tmp_path, monkeypatch, pipeline, exc, match
):
    video = _write_video(tmp_path / "clip.mp4", n=30)
    monkeypatch.setattr(pv, "_frames", _failing_frames(13, exc))
    out = tmp_path / "out"
    with pytest.raises(ColonsegError, match=match):
        _within(60, lambda: pv.run_predict_video(predictor, video, out, save_masks=True,
                                                 batch_size=4, progress=False,
                                                 pipeline=pipeline))  # fmt: skip
    assert _finals(out) == [], "nothing under a final name, no temporary file"
    assert len(list((out / "clip_masks").glob("*.png"))) == 12, "frames predicted keep a mask"
    assert not [t for t in threading.enumerate() if t.name.startswith("colonseg-")]


class FailingEncoder:
    """The real encoder stream, failing at its ``fail_at``-th frame."""

    def __init__(self, stream, fail_at: int) -> None:
        self.stream, self.fail_at, self.frames = stream, fail_at, 0

    def encode(self, frame=None):
        if frame is not None:
            self.frames += 1
            if self.frames > self.fail_at:
                raise OSError(28, "No space left on device")
        return self.stream.encode(frame)


def test_an_encoder_error_ends_the_run_in_one_line(predictor, tmp_path, monkeypatch):
    video = _write_video(tmp_path / "clip.mp4", n=40)
    real = pv._encoder
    monkeypatch.setattr(pv, "_encoder", lambda *a: FailingEncoder(real(*a), fail_at=6))
    out = tmp_path / "out"
    with pytest.raises(ColonsegError, match="^clip_overlay.mp4: video encoding failed \\(OSError"):
        _within(60, lambda: pv.run_predict_video(predictor, video, out, batch_size=4,
                                                 progress=False))  # fmt: skip
    assert _finals(out) == [], "nothing under a final name, no temporary file"
    assert not [t for t in threading.enumerate() if t.name.startswith("colonseg-")]


def test_cli_says_a_thread_failure_in_one_line(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import colonseg.cli.predict as cli_predict

    video = _write_video(tmp_path / "clip.mp4", n=20)
    net = create_model("unet", encoder="test_efficientnet", pretrained=False)
    meta = ModelMeta("unet", {"encoder": "test_efficientnet"}, size=(64, 64))
    monkeypatch.setattr(cli_predict, "create_predictor",
                        lambda *a, **k: Predictor(net, meta, device="cpu"))  # fmt: skip
    monkeypatch.setattr(pv, "_frames", _failing_frames(9, ValueError("bad frame")))
    monkeypatch.setattr(pv.os, "cpu_count", lambda: 4)  # "auto" takes the threads on > 2 CPUs
    result = CliRunner().invoke(app, ["predict", str(video), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1].endswith("video decoding failed (ValueError: bad frame)"), result.output
    assert "Traceback" not in result.output


def test_summary_keeps_the_most_confident_spans_in_time_order(tmp_path):
    summary = VideoSummary(fps=10, threshold=0.5, max_thumbs=3)
    peaks = [0.6, 0.9, 0.7, 0.95, 0.55, 0.8]  # spans of 2 frames, a frame without polyp between
    index = 0
    for peak in peaks:
        for conf in (peak - 0.05, peak):
            frame = np.full((40, 50, 3), int(conf * 255), np.uint8)
            summary.add(index, conf, 1, frame)
            index += 1
        summary.add(index, 0.1, 0, np.zeros((40, 50, 3), np.uint8))
        index += 1
    path = summary.save(tmp_path / "s.png", title="clip.mp4")
    assert summary.n_spans == 6
    kept = sorted(summary.spans, key=lambda s: s.start)
    assert [s.peak for s in kept] == [0.9, 0.95, 0.8]
    assert [s.peak_frame for s in kept] == [4, 10, 16]
    assert int(kept[0].thumb[0, 0, 0]) == int(0.9 * 255), "the thumbnail is of the peak frame"
    assert cv2.imread(str(path)) is not None
    empty = VideoSummary(fps=25, threshold=0.5)
    empty.add(0, 0.2, 0, np.zeros((8, 8, 3), np.uint8))
    assert cv2.imread(str(empty.save(tmp_path / "e.png"))) is not None
    with pytest.raises(ValueError, match="frame 5 added after 1 frames"):
        empty.add(5, 0.2, 0, np.zeros((8, 8, 3), np.uint8))
