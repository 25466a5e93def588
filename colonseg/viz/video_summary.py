"""A video's prediction at a glance: polyp confidence over time and the frames where it is seen.

:class:`VideoSummary` is fed one frame at a time (as a video streams through the Predictor) and
keeps only the per-frame numbers and one small thumbnail per detected span (the span's most
confident frame), so its memory stays flat however long the video is. ``save`` draws one PNG:

- a strip: peak polyp probability per frame against time (seconds), the threshold as a dashed
  line, the spans where a polyp is detected shaded, the thumbnail frames numbered;
- below it, a row of thumbnails (the most confident frame of each of the most confident spans,
  at most six, in time order), each captioned with its number, time and confidence.

Example:
    >>> summary = VideoSummary(fps=25.0, threshold=0.5)
    >>> for i, (frame, row) in enumerate(frames_and_rows): summary.add(i, row["confidence"], row["polyp"], frame)
    >>> summary.save("clip_summary.png", title="clip.mp4")
"""  # noqa: E501

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from colonseg.data.io import write_atomic
from colonseg.viz.overlays import thumbnail

__all__ = ["VideoSummary"]

_SHADE, _LINE, _THRESHOLD = "#f5a623", "#1f4e9c", "#c0392b"
_BADGE = {"boxstyle": "circle,pad=0.2", "fc": "white", "ec": _LINE, "lw": 0.8}


@dataclass
class _Span:
    """A run of consecutive frames with a polyp, and its most confident frame."""

    start: int
    end: int  # last frame of the span
    peak: float
    peak_frame: int
    thumb: np.ndarray


class VideoSummary:
    """Collects a video's per-frame polyp confidence and draws the summary strip.

    Args:
        fps: the video's frame rate (frame ``i`` is at ``i / fps`` seconds).
        threshold: the Predictor's threshold, drawn as a line.
        max_thumbs: how many detected spans get a thumbnail.
        thumb_side: longest side of a stored thumbnail, in pixels.
    """

    def __init__(
        self, fps: float, threshold: float, max_thumbs: int = 6, thumb_side: int = 240
    ) -> None:
        self.fps, self.threshold = float(fps), float(threshold)
        self.max_thumbs, self.thumb_side = max_thumbs, thumb_side
        self.confidence: list[float] = []
        self.polyp: list[bool] = []
        self.spans: list[_Span] = []  # the most confident closed spans, at most max_thumbs
        self.n_spans = 0
        self._open: _Span | None = None

    def add(self, index: int, confidence: float, polyp: bool, frame: np.ndarray) -> None:
        """Record frame ``index`` (frames come in order from 0); ``frame`` is the picture a
        thumbnail would show (the overlay), looked at only when it is its span's best so far."""
        if index != len(self.confidence):
            raise ValueError(f"frame {index} added after {len(self.confidence)} frames")
        confidence, polyp = float(confidence), bool(int(polyp))
        self.confidence.append(confidence)
        self.polyp.append(polyp)
        span = self._open
        if not polyp:
            self._close()
        elif span is None:
            self._open = _Span(index, index, confidence, index, self._thumb(frame))
        else:
            span.end = index
            if confidence > span.peak:
                span.peak, span.peak_frame, span.thumb = confidence, index, self._thumb(frame)

    def _thumb(self, frame: np.ndarray) -> np.ndarray:
        return np.array(thumbnail(frame, self.thumb_side))  # a copy: the frame is reused

    def _close(self) -> None:
        if self._open is None:
            return
        self.n_spans += 1
        self.spans.append(self._open)
        self._open = None
        if len(self.spans) > self.max_thumbs:  # drop the least confident (the later on ties)
            self.spans.remove(min(self.spans, key=lambda s: (s.peak, -s.start)))

    def save(self, path: str | Path, title: str = "") -> Path:
        """Draw the summary PNG to ``path`` (written atomically, with ``publish``'s mode)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self._close()
        spans = sorted(self.spans, key=lambda s: s.start)
        n = len(self.confidence)
        t = np.arange(n) / self.fps
        conf, polyp = np.asarray(self.confidence), np.asarray(self.polyp)
        rows = 2 if spans else 1
        fig = Figure(figsize=(12, 4.5 if spans else 2.9), dpi=100)
        FigureCanvasAgg(fig)
        grid = fig.add_gridspec(rows, self.max_thumbs, height_ratios=[1, 1.1][:rows])
        ax = fig.add_subplot(grid[0, :])
        end = n / self.fps
        if n:
            ax.fill_between(
                np.append(t, end), 0, 1, where=np.append(polyp, polyp[-1:]), step="post",
                transform=ax.get_xaxis_transform(), color=_SHADE, alpha=0.3, lw=0,
                label="polyp detected",
            )  # fmt: skip
            ax.step(np.append(t, end), np.append(conf, conf[-1:]), where="post", color=_LINE,
                    lw=1.0, label="confidence (peak probability)")  # fmt: skip
        ax.axhline(self.threshold, color=_THRESHOLD, ls="--", lw=1,
                   label=f"threshold {self.threshold:g}")  # fmt: skip
        for k, s in enumerate(spans, 1):
            at = ((s.peak_frame + 0.5) / self.fps, s.peak)
            ax.plot(*at, "o", color=_LINE, ms=4)
            ax.annotate(str(k), at, xytext=(0, 7), textcoords="offset points", ha="center",
                        va="bottom", fontsize=8, weight="bold", bbox=_BADGE)  # fmt: skip
        ax.set_xlim(0, max(end, 1e-3))
        ax.set_ylim(0, 1.2)
        ax.set_yticks([0, 0.25, 0.5, 0.75, 1])
        ax.set_xlabel("time (s)")
        ax.set_ylabel("polyp confidence")
        ax.grid(alpha=0.25)
        ax.legend(loc="lower right", bbox_to_anchor=(1, 1), ncol=3, fontsize=8, frameon=False,
                  borderaxespad=0.2)  # fmt: skip
        found = int(polyp.sum())
        share = f"{100 * found / n:.1f} %" if n else "–"
        head = f"{title} — " if title else ""
        spans_said = f"{self.n_spans} span{'s' * (self.n_spans != 1)}"
        ax.set_title(f"{head}{n} frames, {end:.1f} s; polyp in {found} frames ({share}), "
                     f"{spans_said}", fontsize=10, loc="left")  # fmt: skip
        for k, s in enumerate(spans, 1):
            tax = fig.add_subplot(grid[1, k - 1])
            tax.imshow(s.thumb)
            tax.set_axis_off()
            tax.set_title(
                f"{k} · {s.peak_frame / self.fps:.1f} s · confidence {s.peak:.2f}", fontsize=9
            )
        fig.tight_layout()
        write_atomic(path, lambda tmp: fig.savefig(tmp, format="png"))
        return Path(path)
