"""End to end: start `colonseg app`, upload a real frame in headless Chromium, see the overlay."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from colonseg.engine.demo import SAMPLES_DIR

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


@pytest.fixture
def app_url(tmp_path):
    pytest.importorskip("streamlit")
    port = _free_port()
    log = (tmp_path / "app.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "colonseg", "app", "--server.port", str(port),
         "--server.address", "127.0.0.1"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"},
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


def test_upload_a_frame_and_see_the_overlay(app_url, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).is_file():
        pytest.skip("Debian's chromium is not installed")
    frame = SHARED_FRAME if SHARED_FRAME.is_file() else next((SAMPLES_DIR / "images").iterdir())
    bad = tmp_path / "notes.txt"
    bad.write_text("not a picture")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, args=FLAGS, headless=True,
            viewport={"width": 1500, "height": 1100},
        )  # fmt: skip
        try:
            page = browser.new_page()
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
            assert images.nth(1).evaluate("img => img.naturalWidth > 0 && img.complete")
            page.screenshot(path=str(tmp_path / "app.png"), full_page=True)
            if os.environ.get("COLONSEG_SCREENSHOT"):
                page.screenshot(path=os.environ["COLONSEG_SCREENSHOT"], full_page=True)
        finally:
            browser.close()
    assert (tmp_path / "app.png").stat().st_size > 10_000
