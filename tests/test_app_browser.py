"""End to end: start `colonseg app`, upload a real frame in headless Chromium, see the overlay;
log in to a token-protected app, upload an attention_unet checkpoint, see its attention."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

from colonseg.engine.demo import SAMPLES_DIR
from tests.conftest import calibrated_attention_unet

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHARED_FRAME = (
    Path(__file__).resolve().parents[2]
    / "shared/datasets/kvasir-seg/images/cju0qkwl35piu0993l0dewei2.jpg"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _serve(tmp_path: Path, env: dict[str, str] | None = None):
    """Run `colonseg app` on a free port until the block ends; yield its URL."""
    pytest.importorskip("streamlit")
    port = _free_port()
    log = (tmp_path / "app.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "colonseg", "app", "--server.port", str(port),
         "--server.address", "127.0.0.1"],
        stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        # a deadline, not a count of tries: on a loaded 2-core machine imports alone take a minute
        deadline = time.monotonic() + 240
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.5)
            if proc.poll() is not None or time.monotonic() > deadline:
                status = "exited" if proc.poll() is not None else "did not answer in 240 s"
                log.flush()
                pytest.fail(f"the app {status}: {(tmp_path / 'app.log').read_text()[-500:]}")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture
def app_url(tmp_path):
    with _serve(tmp_path) as url:
        yield url


def _require_browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).is_file():
        pytest.skip("Debian's chromium is not installed")
    return sync_api


@contextlib.contextmanager
def _browser(tmp_path: Path):
    with _require_browser().sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, args=FLAGS, headless=True,
            viewport={"width": 1500, "height": 1100},
        )  # fmt: skip
        try:
            yield browser.new_page()
        finally:
            browser.close()


def test_upload_a_frame_and_see_the_overlay(app_url, tmp_path):
    frame = SHARED_FRAME if SHARED_FRAME.is_file() else next((SAMPLES_DIR / "images").iterdir())
    bad = tmp_path / "notes.txt"
    bad.write_text("not a picture")
    with _browser(tmp_path) as page:
        page.goto(app_url, timeout=60_000)
        page.get_by_text("Colonoscopy frames").wait_for(timeout=90_000)
        page.locator("input[type=file]").first.set_input_files([str(frame), str(bad)])
        page.get_by_text("polyp region(s)").wait_for(timeout=120_000)
        # the widget refuses a non-image itself (the server would refuse it again)
        refused = "[data-testid='stFileChip'][aria-invalid='true'][aria-label^='notes.txt']"
        page.locator(refused).wait_for(timeout=30_000)
        images = page.locator("[data-testid='stImage'] img")
        images.nth(4).wait_for(timeout=30_000)
        assert images.count() == 5  # original, overlay, heat map, probability, contours
        assert page.get_by_text("Overlay", exact=True).is_visible()
        assert page.get_by_text("Attention map").count() == 0  # this model has no attention
        assert images.nth(1).evaluate("img => img.naturalWidth > 0 && img.complete")
        page.screenshot(path=str(tmp_path / "app.png"), full_page=True)
        if os.environ.get("COLONSEG_SCREENSHOT"):
            page.screenshot(path=os.environ["COLONSEG_SCREENSHOT"], full_page=True)
    assert (tmp_path / "app.png").stat().st_size > 10_000


def _attention_checkpoint(tmp_path: Path) -> Path:
    """A zip of an attention_unet checkpoint: COLONSEG_ATTENTION_CHECKPOINT (a checkpoint
    folder, for a screenshot of a trained model) or a tiny untrained one whose batch-norm
    statistics are calibrated on noise, so that its maps are not flat."""
    from colonseg.engine.checkpoint import ModelMeta, save_pretrained

    folder = os.environ.get("COLONSEG_ATTENTION_CHECKPOINT")
    if not folder:
        meta = ModelMeta("attention_unet", {"encoder": "test_efficientnet"}, size=(64, 64))
        folder = save_pretrained(calibrated_attention_unet(), meta, tmp_path / "attention_unet")
    archive = tmp_path / "attention_unet.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for name in ("config.json", "weights.safetensors"):
            z.write(Path(folder) / name, f"attention_unet/{name}")
    return archive


def _clip(path: Path, frames: int) -> Path:
    import cv2
    import numpy as np

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (96, 64))
    rng = np.random.default_rng(frames)
    for _ in range(frames):
        writer.write(rng.integers(0, 256, (64, 96, 3), np.uint8))
    writer.release()
    return path


def test_log_in_then_see_the_attention_of_an_image_and_of_a_video_frame(tmp_path):
    """Token login, the start-up sweep, the video frame cap and the attention panel, in one
    app start (each start costs a minute on a loaded 2-core machine)."""
    _require_browser()  # before the app starts
    temp = tmp_path / "tmp"
    stale = temp / "colonseg-app-stale"
    (stale / "old").mkdir(parents=True)
    hours_ago = time.time() - 2 * 3600
    for path in (stale / "old", stale):
        os.utime(path, (hours_ago, hours_ago))
    checkpoint = _attention_checkpoint(tmp_path)
    frame = SHARED_FRAME if SHARED_FRAME.is_file() else next((SAMPLES_DIR / "images").iterdir())
    clip, long = _clip(tmp_path / "clip.mp4", 4), _clip(tmp_path / "long.mp4", 12)
    env = {"COLONSEG_APP_TOKEN": "s3cret-token", "COLONSEG_APP_MAX_VIDEO_FRAMES": "8",
           "TMPDIR": str(temp)}  # fmt: skip
    with _serve(tmp_path, env) as url, _browser(tmp_path) as page:
        from playwright.sync_api import expect

        page.goto(url, timeout=60_000)
        token = page.get_by_label("Access token", exact=True)
        token.wait_for(timeout=90_000)
        assert page.get_by_text("Colonoscopy frames").count() == 0
        assert page.get_by_text("Upload a checkpoint").count() == 0
        assert not stale.exists(), "the start-up sweep left a stale upload folder"
        token.fill("wrong")
        token.press("Enter")
        page.get_by_text("Wrong access token.").wait_for(timeout=30_000)
        assert page.get_by_text("Colonoscopy frames").count() == 0
        token.fill("s3cret-token")
        token.press("Enter")
        page.get_by_text("Upload a checkpoint").click(timeout=60_000)
        sidebar = page.locator("[data-testid='stSidebar'] input[type=file]")
        sidebar.set_input_files(str(checkpoint), timeout=30_000)
        page.get_by_text("Colonoscopy frames").wait_for(timeout=120_000)
        main = page.locator("[data-testid='stMain'] input[type=file]")
        main.set_input_files([str(frame), str(long), str(clip)])
        page.get_by_text("polyp region(s)").wait_for(timeout=120_000)
        page.get_by_text("long.mp4: video too long (12 frames").wait_for(timeout=60_000)
        page.get_by_text("Frame to inspect").wait_for(timeout=180_000)
        attention = page.locator("[data-testid='stImage']").filter(has_text="Attention")
        expect(attention).to_have_count(2, timeout=60_000)  # the image's and the frame's
        first = attention.first.locator("img")
        assert first.evaluate("img => img.naturalWidth > 0 && img.complete")
        before = first.get_attribute("src")
        page.locator("[data-testid='stSelectbox']").filter(has_text="Attention map").first.click()
        page.get_by_role("option", name="Skip gate, stride 4").click()
        expect(first).not_to_have_attribute("src", before, timeout=60_000)
        if os.environ.get("COLONSEG_ATTENTION_SCREENSHOT"):  # the image's row, for the docs
            page.get_by_text("polyp region(s)").first.scroll_into_view_if_needed()
            page.screenshot(path=os.environ["COLONSEG_ATTENTION_SCREENSHOT"])
        frames = page.locator("[data-testid='stSlider']").filter(has_text="Frame to inspect")
        frames.get_by_role("slider").focus()
        page.keyboard.press("ArrowRight")
        page.get_by_text("Frame 1", exact=True).wait_for(timeout=60_000)
        sessions = list(temp.glob("colonseg-app-*/*/attention_unet/config.json"))
        assert len(sessions) == 1, "the uploaded checkpoint is not in the session's folder"
        page.get_by_text("polyp region(s)").scroll_into_view_if_needed()  # the frame's row
        page.screenshot(path=str(tmp_path / "attention.png"))
    assert (tmp_path / "attention.png").stat().st_size > 10_000
