"""Transcripts in the Podcasting 2.0 formats a publisher links with ``<podcast:transcript>``.

* JSON (podcast-namespace ``transcripts/transcripts.md``): ``{"version": "1.0.0", "segments": [{"speaker",
  "startTime", "endTime", "body"}]}``, times in seconds; one segment per transcript segment (a phrase),
  ``speaker`` left out where nobody is named.
* SRT as that spec asks of podcast transcripts: at most 2 lines of at most 32 characters a card, a new
  card when the speaker changes, whose first line starts with the speaker's name and a colon. (Today's
  ``transcript.srt`` keeps broadcast limits, 65 characters, and ``[Name]`` on every cue.)
"""

from __future__ import annotations

from podinsight_dagster.transcribe.options import Segment
from podinsight_dagster.transcribe.subtitles import MAX_CUE_SEC, Cue, _ts, _wrap

JSON_VERSION = "1.0.0"
SRT_MAX_LINE = 32
SRT_MAX_LINES = 2
JSON_TYPE = "application/json"
SRT_TYPE = "application/x-subrip"


def to_transcript_json(segments: list[Segment]) -> dict:
    """The podcast:transcript JSON document of ``segments`` (empty text left out)."""
    out = []
    for seg in segments:
        body = " ".join(seg.text.split())
        if not body:
            continue
        item = {"speaker": seg.speaker} if seg.speaker else {}
        item.update({"startTime": round(seg.start, 3), "endTime": round(max(seg.end, seg.start), 3), "body": body})
        out.append(item)
    return {"version": JSON_VERSION, "segments": out}


def _fits(text: str) -> bool:
    return len(_wrap(text, SRT_MAX_LINE)) <= SRT_MAX_LINES


def build_podcast_cues(segments: list[Segment]) -> list[Cue]:
    """Cards of at most 2 x 32 characters; the first card after a speaker change starts with ``Name: ``."""
    cues: list[Cue] = []
    previous_speaker: str | None = None
    for seg in segments:
        speaker = seg.speaker
        prefix = f"{' '.join(speaker.split())}: " if speaker and speaker != previous_speaker else ""
        if seg.text.strip():
            previous_speaker = speaker or previous_speaker
        words = [w for w in (seg.words or []) if w.word.strip()]
        if not words:
            lines = _wrap(prefix + seg.text, SRT_MAX_LINE)
            groups = [lines[i:i + SRT_MAX_LINES] for i in range(0, len(lines), SRT_MAX_LINES)]
            span = max(seg.end - seg.start, 0.001)
            total = sum(len(" ".join(g)) for g in groups) or 1
            t = seg.start
            for g in groups:
                d = span * len(" ".join(g)) / total
                cues.append(Cue(t, t + d, g))
                t += d
            continue
        current: list = []
        for w in words:
            candidate = prefix + "".join(x.word for x in current + [w]).strip()
            if current and (not _fits(candidate) or w.end - current[0].start > MAX_CUE_SEC):
                cues.append(Cue(current[0].start, current[-1].end,
                                _wrap(prefix + "".join(x.word for x in current).strip(), SRT_MAX_LINE)))
                current, prefix = [], ""
            current.append(w)
        if current:
            cues.append(Cue(current[0].start, current[-1].end,
                            _wrap(prefix + "".join(x.word for x in current).strip(), SRT_MAX_LINE)))
    # A card of one over-long word (or name) is split, never over the limits.
    fitted: list[Cue] = []
    for c in cues:
        for i in range(0, len(c.lines), SRT_MAX_LINES):
            part = c.lines[i:i + SRT_MAX_LINES]
            share = (c.end - c.start) * len(part) / max(len(c.lines), 1)
            start = c.start + (c.end - c.start) * i / max(len(c.lines), 1)
            fitted.append(Cue(start, start + share, part))
    for i, cue in enumerate(fitted):  # never overlapping or running backwards
        if i and cue.start < fitted[i - 1].end:
            cue.start = fitted[i - 1].end
        if cue.end <= cue.start:
            cue.end = cue.start + 0.001
    return [c for c in fitted if c.lines]


def to_podcast_srt(segments: list[Segment]) -> str:
    out = []
    for i, c in enumerate(build_podcast_cues(segments), 1):
        out += [str(i), f"{_ts(c.start, ',')} --> {_ts(c.end, ',')}", *c.lines, ""]
    return "\n".join(out)
