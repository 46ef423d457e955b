"""WebVTT and SRT subtitles from timed words or segments.

Cues hold at most two lines of at most 65 characters and last at most 7 seconds,
the usual broadcast limits, so players never show a wall of text. A cue never spans two
segments, so it has one speaker: WebVTT names it in a voice span (``<v Name>``), SRT
(which has no voice markup) as a ``[Name]`` prefix on the cue's first line.
"""

from __future__ import annotations

from dataclasses import dataclass

from podinsight_dagster.transcribe.options import Segment

MAX_LINE = 65
MAX_LINES = 2
MAX_CUE_SEC = 7.0


@dataclass
class Cue:
    start: float
    end: float
    lines: list[str]
    speaker: str | None = None


def _wrap(text: str, width: int = MAX_LINE) -> list[str]:
    lines: list[str] = []
    line = ""
    for word in text.split():
        while len(word) > width:  # a "word" longer than a line (URLs): hard-break it
            if line:
                lines.append(line)
                line = ""
            lines.append(word[:width])
            word = word[width:]
        if not line:
            line = word
        elif len(line) + 1 + len(word) <= width:
            line += " " + word
        else:
            lines.append(line)
            line = word
    if line:
        lines.append(line)
    return lines


def build_cues(segments: list[Segment]) -> list[Cue]:
    cues: list[Cue] = []
    for seg in segments:
        words = seg.words or []
        if not words:
            # No word timings: spread the segment's lines over its span.
            lines = _wrap(seg.text)
            groups = [lines[i:i + MAX_LINES] for i in range(0, len(lines), MAX_LINES)] or [[]]
            span = max(seg.end - seg.start, 0.001)
            total = sum(len(" ".join(g)) for g in groups) or 1
            t = seg.start
            for g in groups:
                d = span * len(" ".join(g)) / total
                cues.append(Cue(t, t + d, g, seg.speaker))
                t += d
            continue
        current: list = []
        for w in words:
            candidate = "".join(x.word for x in current + [w]).strip()
            too_long = len(_wrap(candidate)) > MAX_LINES
            too_slow = current and (w.end - current[0].start) > MAX_CUE_SEC
            if current and (too_long or too_slow):
                cues.append(Cue(current[0].start, current[-1].end, _wrap("".join(x.word for x in current).strip()),
                                seg.speaker))
                current = []
            current.append(w)
        if current:
            cues.append(Cue(current[0].start, current[-1].end, _wrap("".join(x.word for x in current).strip()),
                            seg.speaker))
    # Cues must not overlap or run backwards, whatever the aligner said.
    for i, cue in enumerate(cues):
        if i and cue.start < cues[i - 1].end:
            cue.start = cues[i - 1].end
        if cue.end <= cue.start:
            cue.end = cue.start + 0.001
    return [c for c in cues if c.lines]


def _ts(seconds: float, sep: str) -> str:
    ms = int(round(max(seconds, 0.0) * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _vtt_text(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _voice(name: str) -> str:
    # A voice annotation ends at ">" and cannot hold a line break.
    return " ".join(name.replace(">", " ").replace("<", " ").replace("&", "and").split())


def _labelled(c: Cue, vtt: bool) -> list[str]:
    lines = [_vtt_text(line) for line in c.lines] if vtt else list(c.lines)
    if c.speaker and lines:
        lines[0] = f"<v {_voice(c.speaker)}>{lines[0]}" if vtt else f"[{c.speaker}] {lines[0]}"
    return lines


def to_vtt(cues: list[Cue]) -> str:
    out = ["WEBVTT", ""]
    for i, c in enumerate(cues, 1):
        out += [str(i), f"{_ts(c.start, '.')} --> {_ts(c.end, '.')}", *_labelled(c, True), ""]
    return "\n".join(out)


def to_srt(cues: list[Cue]) -> str:
    out = []
    for i, c in enumerate(cues, 1):
        out += [str(i), f"{_ts(c.start, ',')} --> {_ts(c.end, ',')}", *_labelled(c, False), ""]
    return "\n".join(out)
