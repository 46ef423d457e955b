"""Model windows from queued chunks: one chunk each, or several one-chunk episodes packed into one 30-s window.

Packing (``pack_gap_sec`` > 0, which needs word timings) puts short episodes side by side
in one window with a gap of silence between them: one encoder pass and one beam search for
all of them. Their words are split back per episode by timing afterwards; a part that got
clearly fewer words than its share of the window is decoded again in a window of its own.
How often each happened is counted in ``PackStats``, which a run returns to its caller.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from podinsight_dagster.transcribe import whisper_internals as wi
from podinsight_dagster.transcribe.engine import Engine
from podinsight_dagster.transcribe.prepare import Episode

# A packed episode with fewer words than this share of its part of the window's words is decoded again alone.
PACK_MIN_WORD_SHARE = 0.5

Window = list[tuple[Episode, int]]   # (episode, chunk index) parts of one model window


@dataclass
class PackStats:
    """Windows decoded, episodes decoded packed, and packed results decoded again alone (for the benchmarks)."""

    windows: int = 0
    packed: int = 0
    again_alone: int = 0

    def add(self, other: "PackStats") -> None:
        self.windows += other.windows
        self.packed += other.packed
        self.again_alone += other.again_alone


def gap_frames(engine: Engine) -> int:
    """Frames of silence between packed episodes; 0 when packing is off (it needs word timings to split)."""
    if not engine.options.word_timestamps:
        return 0
    return int(round(engine.options.pack_gap_sec * wi.frames_per_second(engine.model)))


def packable(ep: Episode) -> bool:
    """Only one-chunk episodes share a window: their word placement needs no state from an earlier chunk."""
    return len(ep.features) == 1 and not ep.alone


def take_windows(q: deque, n: int, limit: int, gap: int) -> list[Window]:
    """Up to ``n`` model windows from the queue's head, each one chunk or several packed one-chunk episodes.

    Windows start from the queue's head, in order (so every chunk waits at most a few batches); with
    ``gap`` > 0 a packable one's free space is then filled, best fit first, with the longest queued
    one-chunk episodes that still fit with ``gap`` frames before each.
    """
    windows: list[Window] = []
    while q and len(windows) < n:
        ep, ci = q.popleft()
        if ep.error is not None:
            continue
        window = [(ep, ci)]
        if gap and packable(ep):
            used = ep.features[ci].shape[-1]
            while True:
                best, best_frames = -1, 0
                for j, (other, oci) in enumerate(q):
                    if other.error is None and packable(other):
                        frames = other.features[oci].shape[-1]
                        if used + gap + frames <= limit and frames > best_frames:
                            best, best_frames = j, frames
                if best < 0:
                    break
                window.append(q[best])
                del q[best]
                used += gap + best_frames
        windows.append(window)
    return windows


def window_features(window: Window, gap: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """A window's features (parts joined by ``gap`` frames of padding) and each part's frame span in it."""
    if len(window) == 1:
        ep, ci = window[0]
        return wi.pad_or_trim(ep.features[ci]), [(0, ep.features[ci].shape[-1])]
    parts, spans, at = [], [], 0
    # The gap is the features' floor (silence, as Whisper's log-Mel clamps it), not the 0 that
    # pad_or_trim pads a window's end with: after a gap of padding the decoder often takes the
    # window to be over and drops the next episode's words (one clip in 80 lost all its words).
    floor = min(float(ep.features[ci].min()) for ep, ci in window)
    for k, (ep, ci) in enumerate(window):
        f = ep.features[ci]
        if k:
            parts.append(np.full((f.shape[0], gap), floor, dtype=f.dtype))
            at += gap
        parts.append(f)
        spans.append((at, at + f.shape[-1]))
        at += f.shape[-1]
    return wi.pad_or_trim(np.concatenate(parts, axis=1)), spans


def split_packed(words: list[dict], spans: list[tuple[int, int]], fps: int, segs: list[dict]) -> list[list[dict]]:
    """A packed window's words back per part: each word goes to the part its middle falls in (the cut is
    the middle of each gap), its times moved to the part's own clock and kept inside its speech."""
    cuts = [(spans[k][1] + spans[k + 1][0]) / 2 / fps for k in range(len(spans) - 1)]
    per_part: list[list[dict]] = [[] for _ in spans]
    for w in words:
        middle = (w["start"] + w["end"]) / 2
        k = sum(middle >= c for c in cuts)
        start, stop = spans[k][0] / fps, spans[k][1] / fps
        per_part[k].append(dict(w, start=round(min(max(w["start"], start), stop) - start, 3),
                                end=round(min(max(w["end"], start), stop) - start, 3)))
    out = []
    for part in per_part:
        if not part:
            out.append([])
            continue
        text = "".join(w["word"] for w in part)
        out.append([dict(text=text, avg_logprob=segs[0]["avg_logprob"], no_speech_prob=segs[0]["no_speech_prob"],
                         tokens=[], start=part[0]["start"], end=part[-1]["end"],
                         compression_ratio=wi.compression_ratio(text), seek=0, words=part)])
    return out


def unpack_window(window: Window, spans: list[tuple[int, int]], fps: int,
                  segs: list[dict]) -> list[tuple[Episode, int, list[dict] | None]]:
    """A decoded packed window's subsegments (words placed) as ``(episode, chunk, its segments)`` per part.

    A part with fewer words than ``PACK_MIN_WORD_SHARE`` of its share of the window's gets None: the
    decoder may have stopped at the gap or run two episodes together, so it is to be decoded again alone.
    """
    words = [w for s in segs for w in s["words"]]
    split = split_packed(words, spans, fps, segs)
    density = len(words) / max(sum(b - a for a, b in spans) / fps, 1e-3)
    out = []
    for (ep, ci), part, (a, b) in zip(window, split, spans):
        got = len(part[0]["words"]) if part else 0
        doubtful = got < PACK_MIN_WORD_SHARE * density * (b - a) / fps
        out.append((ep, ci, None if doubtful else part))
    return out
