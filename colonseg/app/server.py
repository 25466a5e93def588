"""What keeps one ``colonseg app`` server, shared by many browser sessions, within its limits:
the settings it was started with and its access token, Streamlit's options, the length of the
videos it accepts, the models it holds in memory and the uploaded files it keeps on disk; also
the file names uploads are saved under and offered for download as (:func:`safe_name`).

Every function takes and returns plain values so that it is tested without a browser;
:mod:`colonseg.app.logic` (what the page does with images and predictions) builds on this module,
never the other way round.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import hmac
import math
import os
import re
import shutil
import tempfile
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from colonseg.data.io import write_atomic
from colonseg.engine.predict import Predictor
from colonseg.errors import ColonsegError

__all__ = [
    "ENV_PREFIX",
    "MAX_UPLOAD_MB",
    "UPLOAD_PREFIX",
    "AppSettings",
    "ModelCache",
    "UploadFolder",
    "check_video_header",
    "limit_video_frames",
    "read_video_frame",
    "safe_name",
    "server_options",
    "sweep_uploads",
    "token_matches",
    "video_header",
]

MAX_UPLOAD_MB = 50  # per file; Streamlit's own limit (server.maxUploadSize) is set to match
UPLOAD_PREFIX = "colonseg-app-"  # every folder the app writes uploads to in the temp dir
ENV_PREFIX = "COLONSEG_APP_"  # COLONSEG_APP_TOKEN, COLONSEG_APP_MAX_VIDEO_FRAMES, ...


@dataclass(frozen=True)
class AppSettings:
    """What ``colonseg app`` was started with; the CLI hands it to the page in environment
    variables (``COLONSEG_APP_<FIELD>``), so the token never appears on Streamlit's command line.

    Args:
        token: the access token the page asks for before it shows anything (None: no login).
        max_video_frames: a video with more frames is refused.
        max_video_seconds: a video lasting longer is refused.
        max_models: models held in memory at once, uploaded ones included; the least recently
            used is dropped first.

    Example:
        >>> settings = AppSettings.from_env(os.environ)
        >>> settings.max_video_frames
        3000
    """

    token: str | None = None
    max_video_frames: int = 3000
    max_video_seconds: float = 300.0
    max_models: int = 3

    def __post_init__(self) -> None:
        if self.token is not None and not self.token.strip():
            raise ColonsegError("the access token is empty")
        for name in ("max_video_frames", "max_video_seconds", "max_models"):
            if not getattr(self, name) > 0:
                raise ColonsegError(f"{name} must be positive, got {getattr(self, name)}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> AppSettings:
        """Settings from ``COLONSEG_APP_*`` variables; unset (or empty) ones keep the default."""
        values: dict = {}
        for f in dataclasses.fields(cls):
            variable = ENV_PREFIX + f.name.upper()
            if raw := environ.get(variable, ""):
                kind = type(f.default) if f.default is not None else str
                try:
                    values[f.name] = kind(raw)
                except ValueError:
                    what = "whole number" if kind is int else "number"
                    raise ColonsegError(f"{variable}={raw!r}: not a {what}") from None
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The ``COLONSEG_APP_*`` variables that :meth:`from_env` reads back."""
        return {
            ENV_PREFIX + f.name.upper(): str(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if getattr(self, f.name) is not None
        }


def token_matches(given: str, settings: AppSettings) -> bool:
    """Whether ``given`` is the access token (always True when none is set); compared in
    constant time (:func:`hmac.compare_digest`), so timing tells nothing of the token."""
    if settings.token is None:
        return True
    return hmac.compare_digest(given.encode(), settings.token.encode())


def server_options(extra: list[str], auth: bool = False) -> tuple[list[str], str | None]:
    """Streamlit's options for ``colonseg app`` plus the user's ``extra`` ones, and a warning to
    print when the app will be reachable from other hosts (``auth``: it asks for a token).

    The app listens on 127.0.0.1 unless ``--server.address`` is given; errors that are not a
    one-line :class:`ColonsegError` reach the browser without their details (traceback and
    server paths stay in the server's log).
    """
    options = [
        "--server.headless=true",
        f"--server.maxUploadSize={MAX_UPLOAD_MB}",
        "--browser.gatherUsageStats=false",
        "--client.toolbarMode=minimal",
        "--client.showErrorDetails=false",
    ]
    address = None
    for i, arg in enumerate(extra):
        if arg.startswith("--server.address"):
            address = arg.split("=", 1)[1] if "=" in arg else (extra[i + 1 : i + 2] or [""])[0]
    if address is None:
        options.append("--server.address=127.0.0.1")
    warning = None
    if address not in (None, "127.0.0.1", "localhost", "::1"):
        where = address or "every interface"
        warning = f"warning: the app listens on {where}: other hosts can reach it"
        if auth:
            warning += "; it asks for the access token, which plain HTTP does not encrypt"
        else:
            warning += (
                ", and it has no login: add --auth TOKEN (or set COLONSEG_APP_TOKEN) to ask for "
                "a token"
            )
    return options + list(extra), warning


def safe_name(name: str, fallback: str = "upload") -> str:
    """A file name safe to write or offer for download: the last path component of ``name``
    (``/`` or ``\\``), characters other than letters, digits, ``._-`` replaced by ``_``, no
    leading dots (no hidden files, no ``..``), at most 120 characters."""
    base = re.split(r"[/\\]", name)[-1]
    base = re.sub(r"[^\w.\-]", "_", base, flags=re.ASCII).lstrip(".")
    return base[-120:] or fallback


def video_header(path: Path) -> tuple[int, float]:
    """Frame count and frame rate as the container's header states them (0 where it states
    none, or where OpenCV cannot open the file: the decoder then has the last word)."""
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            return 0, 0.0
        frames = capture.get(cv2.CAP_PROP_FRAME_COUNT)
        fps = capture.get(cv2.CAP_PROP_FPS)
    finally:
        capture.release()
    frames = int(frames) if math.isfinite(frames) and frames > 0 else 0
    return frames, float(fps) if math.isfinite(fps) and fps > 0 else 0.0


def _limits(settings: AppSettings) -> str:
    return f"the limit is {settings.max_video_frames} frames and {settings.max_video_seconds:g} s"


def check_video_header(name: str, frames: int, fps: float, settings: AppSettings) -> None:
    """Refuse, before any decoding, a video whose header states more frames or seconds than
    the settings allow."""
    seconds = frames / fps if fps else 0.0
    if frames > settings.max_video_frames or seconds > settings.max_video_seconds:
        raise ColonsegError(
            f"{name}: video too long ({frames} frames, {seconds:.0f} s at {fps:g} fps); "
            f"{_limits(settings)}"
        )


def limit_video_frames(
    predictor: Predictor, name: str, settings: AppSettings, header: tuple[int, float]
) -> Predictor:
    """A copy of the Predictor that segments at most the settings' frames of video ``name``,
    counted as they are decoded (a header can understate the length): the batch that would
    pass the cap raises a one-line :class:`ColonsegError` instead of reaching the model.
    Seconds are counted at the header's frame rate (25 when it states none)."""
    frames, fps = header
    cap = min(settings.max_video_frames, math.floor(settings.max_video_seconds * (fps or 25.0)))
    capped = copy.copy(predictor)
    seen = 0

    def predict_batch(images):
        nonlocal seen
        seen += len(images)
        if seen > cap:
            said = f"states {frames}" if frames else "states no length"
            raise ColonsegError(
                f"{name}: video too long: decoding passed {cap} frames although its header "
                f"{said}; {_limits(settings)}"
            )
        return predictor.predict_batch(images)

    capped.predict_batch = predict_batch
    return capped


def read_video_frame(path: Path, index: int, name: str) -> np.ndarray:
    """Frame ``index`` (from 0, in decoding order) of a video as an RGB image."""
    capture = cv2.VideoCapture(str(path))
    try:
        ok = capture.isOpened() and all(capture.grab() for _ in range(index))
        ok, frame = capture.read() if ok else (False, None)
    finally:
        capture.release()
    if not ok:
        raise ColonsegError(f"{name}: frame {index} could not be decoded")
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


class ModelCache:
    """At most ``max_entries`` loaded models, the least recently used dropped first (a dropped
    model lives on only while a running page still holds it). Shared by the sessions' threads:
    one model loads at a time, so the same model is never loaded twice.

    Example:
        >>> cache = ModelCache(max_entries=3)
        >>> predictor = cache.get("default")  # loaded once, then reused
        >>> "default" in cache
        True
    """

    def __init__(
        self, max_entries: int = 3, load: Callable[[str], Predictor] = Predictor.from_pretrained
    ) -> None:
        self.max_entries = max_entries
        self.load = load
        self._items: OrderedDict[str, Predictor] = OrderedDict()
        self._lock = threading.Lock()

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def keys(self) -> list[str]:
        """Cached model names, least recently used first."""
        return list(self._items)

    def get(self, key: str) -> Predictor:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            while len(self._items) >= self.max_entries:  # drop before loading: never N + 1
                self._items.popitem(last=False)
            self._items[key] = self.load(key)
            return self._items[key]


class UploadFolder:
    """One browser session's folder for uploaded files: ``colonseg-app-`` and a random suffix in
    the temp dir, mode 0700. It is removed when the object is garbage-collected (Streamlit drops
    a session's state once its tab has gone), or at interpreter exit; :func:`sweep_uploads`
    removes what a crash left behind.

    Example:
        >>> uploads = UploadFolder()
        >>> path = uploads.save("clip.mp4", data)  # <folder>/<sha1[:16]>/clip.mp4
        >>> uploads.remove()
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.path = Path(tempfile.mkdtemp(prefix=UPLOAD_PREFIX, dir=root))
        self._finalizer = weakref.finalize(self, shutil.rmtree, self.path, ignore_errors=True)

    def folder_for(self, data: bytes) -> Path:
        """The sub-folder for one upload, named by its content."""
        return self.path / hashlib.sha1(data).hexdigest()[:16]

    def save(self, name: str, data: bytes) -> Path:
        """Write an upload under its safe name, once (the page reruns on every click); the
        folder is made again if a sweep took it."""
        target = self.folder_for(data) / safe_name(name)
        if target.is_file() and target.stat().st_size == len(data):  # same content digest
            return target
        return write_atomic(target, lambda tmp: tmp.write_bytes(data))

    def remove(self) -> None:
        self._finalizer()


def _newest_mtime(folder: Path) -> float:
    newest = folder.lstat().st_mtime
    for parent, dirs, files in os.walk(folder):
        for entry in (*dirs, *files):
            try:
                newest = max(newest, (Path(parent) / entry).lstat().st_mtime)
            except OSError:
                continue
    return newest


def sweep_uploads(
    root: str | Path | None = None, max_age_s: float = 3600.0, now: float | None = None
) -> list[Path]:
    """Remove this user's ``colonseg-app-*`` folders in the temp dir (``root``) in which nothing
    changed for ``max_age_s``: what sessions left when the server was killed. Links and other
    users' folders are left alone. Returns the folders removed."""
    root = Path(root if root is not None else tempfile.gettempdir())
    cutoff = (time.time() if now is None else now) - max_age_s
    removed = []
    for folder in sorted(root.glob(f"{UPLOAD_PREFIX}*")):
        try:
            info = folder.lstat()
            if not folder.is_dir() or folder.is_symlink() or info.st_uid != os.getuid():
                continue
            if _newest_mtime(folder) < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
        except OSError:
            continue
    return removed
