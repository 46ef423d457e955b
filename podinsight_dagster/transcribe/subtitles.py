"""WebVTT and SRT subtitles from timed words or segments.

Cues hold at most two lines of at most 65 characters and last at most 7 seconds,
the usual broadcast limits, so players never show a wall of text. A cue never spans two
segments, so it has one speaker: WebVTT names it in a voice span (``<v Name>``), SRT
(which has no voice markup) as a ``[Name]`` prefix on the cue's first line.

Overlapped speech (speakers/overlap.py): cues of overlapped segments may overlap each other in time
(WebVTT shows simultaneous cues together), so the words a second hearing found for the other voice
come in their own voice's cue beside the first; where no words of the other voice were heard, the cue
adds a line for it, ``<v Other>[crosstalk]`` (``[Other] [crosstalk]`` in SRT), the captioning
convention for speech talked over.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
    overlap: bool = False
    others: list[str] = field(default_factory=list)     # other voices heard, without words of theirs here


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
    cues = _cues(segments)
    if not any(c.overlap for c in cues):
        return _untangled(cues)
    cues.sort(key=lambda c: c.start)
    cues = _untangled(cues)
    for c in cues:
        if c.overlap:
            # A voice with a cue of its own at the same time needs no [crosstalk] line here.
            spoken = {o.speaker for o in cues if o is not c and o.overlap and o.start < c.end and o.end > c.start}
            c.others = [v for v in c.others if v not in spoken]
    return cues


def _cues(segments: list[Segment]) -> list[Cue]:
    cues: list[Cue] = []
    for seg in segments:
        before = len(cues)
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
            _mark(seg, cues[before:])
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
        _mark(seg, cues[before:])
    return cues


def _mark(seg: Segment, cues: list[Cue]) -> None:
    if seg.overlap:
        for cue in cues:
            cue.overlap = True
            cue.others = [v for v in seg.speakers or [] if v != seg.speaker]


def _untangled(cues: list[Cue]) -> list[Cue]:
    # Cues must not overlap or run backwards, whatever the aligner said; overlapped speech's cues may overlap.
    for i, cue in enumerate(cues):
        if i and cue.start < cues[i - 1].end and not (cue.overlap and cues[i - 1].overlap):
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
    for other in c.others:
        lines.append(f"<v {_voice(other)}>[crosstalk]" if vtt else f"[{other}] [crosstalk]")
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
