"""Sanity of a finished transcript, recorded per episode for the ``transcript_sanity`` check."""

from __future__ import annotations

from podinsight_dagster.transcribe.options import Transcript

# Voice activity covering at least this much audio should produce some words.
MIN_SPEECH_SEC_FOR_TEXT = 5.0


def transcript_issues(t: Transcript, vad_speech_sec: float | None = None) -> list[str]:
    issues = []
    prev_start = -1.0
    for i, s in enumerate(t.segments):
        if s.start < prev_start:
            issues.append(f"segment {i} starts at {s.start}s, before the previous one ({prev_start}s)")
            break
        if s.end < s.start or s.start < 0 or (t.duration and s.end > t.duration + 0.5):
            issues.append(f"segment {i} [{s.start}, {s.end}] lies outside the audio (0..{t.duration}s)")
            break
        prev_start = s.start
    speech = vad_speech_sec if vad_speech_sec is not None else getattr(t, "vad_speech_sec", None)
    if speech is not None and speech >= MIN_SPEECH_SEC_FOR_TEXT and not t.text.strip():
        issues.append(f"no text although {speech:.0f}s of the audio is speech")
    return issues
