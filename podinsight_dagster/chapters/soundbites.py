"""Soundbite candidates (``<podcast:soundbite>``): up to 3 passages of 15-60 s that stand alone.

A candidate is a run of whole sentences inside one speaker's turn (consecutive segments with the same
speaker label, or none when the transcript has no labels yet): it starts at a sentence's beginning (a
capital or a digit) that does not lean on what came before (not "And ...", "But ...", "So ..."), ends at a sentence's end (a complete thought),
and lasts 15 to 60 seconds. When there are more than 3, they are ranked by search-by-meaning centrality:
the cosine similarity of the passage's sentence vectors (the chapters' MiniLM encoder) to the whole
episode's, so a soundbite says what the episode is about; the best ones that do not overlap are kept.
With 3 or fewer, no ranking is needed and the encoder is not loaded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from podinsight_dagster.chapters.tiling import sentences_from_segments

MIN_SEC = 15.0
MAX_SEC = 60.0
MAX_SOUNDBITES = 3
TITLE_CHARS = 80
# A first word that continues an earlier thought: the passage would not stand alone.
_LEANS_ON_BEFORE = re.compile(r"^(and|but|so|or|because|which|also|then|that|this|these|those|it|they|he|she|"
                              r"however|though|although|yet)\b", re.IGNORECASE)
_COMPLETE = (".", "!", "?", '."', '?"', '!"')


@dataclass
class _Turn:
    speaker: str | None
    segments: list


def _turns(segments) -> list[_Turn]:
    turns: list[_Turn] = []
    for seg in segments:
        if not (seg.text or "").strip():
            continue
        if turns and turns[-1].speaker == seg.speaker:
            turns[-1].segments.append(seg)
        else:
            turns.append(_Turn(seg.speaker, [seg]))
    return turns


def candidates(segments) -> list[dict]:
    """Every passage that qualifies (see the module docstring), with its sentences' index range."""
    out = []
    index = 0  # sentence numbers across the episode, for the vectors
    for turn in _turns(segments):
        sentences = sentences_from_segments(turn.segments)
        for i, first in enumerate(sentences):
            if _LEANS_ON_BEFORE.match(first.text) or not first.text[:1].isupper() and not first.text[:1].isdigit():
                continue  # leans on what came before, or starts mid-sentence (a segment cut it there)
            for j in range(i, len(sentences)):
                duration = sentences[j].end - first.start
                if duration > MAX_SEC:
                    break
                if duration >= MIN_SEC and sentences[j].text.rstrip().endswith(_COMPLETE):
                    text = " ".join(s.text for s in sentences[i:j + 1])
                    out.append({"startTime": round(first.start, 1), "duration": round(duration, 1),
                                "speaker": turn.speaker, "text": text, "_range": (index + i, index + j + 1),
                                "_first": first.text})
                    break  # the shortest complete passage from this sentence
        index += len(sentences)
    return out


def soundbites(segments, encoder=None) -> list[dict]:
    """Up to 3 non-overlapping candidates, most central first (``startTime``, ``duration`` in seconds)."""
    found = candidates(segments)
    if len(found) > MAX_SOUNDBITES:
        from podinsight_dagster.chapters.embed import encoder as default_encoder

        texts = [s.text for turn in _turns(segments) for s in sentences_from_segments(turn.segments)]
        vectors = np.asarray((encoder or default_encoder()).encode(texts), dtype=np.float64)
        centre = vectors.mean(axis=0)
        centre /= np.linalg.norm(centre) or 1.0
        for c in found:
            v = vectors[c["_range"][0]:c["_range"][1]].mean(axis=0)
            c["centrality"] = round(float(v @ centre / (np.linalg.norm(v) or 1.0)), 4)
        found.sort(key=lambda c: -c["centrality"])
    chosen: list[dict] = []
    for c in found:
        start, end = c["startTime"], c["startTime"] + c["duration"]
        if all(end <= o["startTime"] or start >= o["startTime"] + o["duration"] for o in chosen):
            chosen.append(c)
        if len(chosen) == MAX_SOUNDBITES:
            break
    for c in found:
        if c not in chosen:
            continue
        del c["_range"]
        first = c.pop("_first")
        c["title"] = first if len(first) <= TITLE_CHARS else first[:TITLE_CHARS - 1].rsplit(" ", 1)[0] + "…"
    return chosen
