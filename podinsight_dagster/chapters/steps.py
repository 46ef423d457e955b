"""The chapters step: transcript.json (or the feed's podcast:chapters) -> chapters/chapters.json (Podcasting 2.0, 1.2.0)."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import numpy as np

from podinsight_dagster.chapters.tiling import VERSION, can_split, chapters_from_sentences, sentences_from_segments
from podinsight_dagster.errors import StepError
from podinsight_dagster.store import layout
from podinsight_dagster.store.keys import EpisodeKey
from podinsight_dagster.transcribe.options import Transcript

if TYPE_CHECKING:
    from podinsight_dagster.services import Services

CHAPTERS_VERSION = "1.2.0"
MAX_CHAPTERS_BYTES = 2 * 1024 * 1024


def parse_publisher_chapters(content: bytes) -> dict:
    """A publisher's JSON chapters, checked (chapters with numeric startTime, in order), as version 1.2.0.

    Every field the publisher wrote (img, url, toc, location, ...) is kept. Raises ValueError.
    """
    doc = json.loads(content.decode("utf-8-sig"))
    if not isinstance(doc, dict) or not isinstance(doc.get("chapters"), list):
        raise ValueError("not a JSON chapters document (no chapters list)")
    chapters = []
    for ch in doc["chapters"]:
        if not isinstance(ch, dict) or not isinstance(ch.get("startTime"), (int, float)) \
                or isinstance(ch.get("startTime"), bool):
            raise ValueError(f"a chapter without a numeric startTime: {str(ch)[:80]}")
        chapters.append(ch)
    if not chapters:
        raise ValueError("the chapters list is empty")
    chapters.sort(key=lambda c: c["startTime"])
    return {**doc, "version": CHAPTERS_VERSION, "chapters": chapters}


def generate_chapters(transcript: Transcript, encoder=None, **tiling) -> list[dict]:
    """Chapters from the transcript's text: sentence embeddings, TextTiling boundaries, key-phrase titles."""
    from podinsight_dagster.chapters.embed import encoder as default_encoder

    sentences = sentences_from_segments(transcript.segments)
    if not sentences:
        return []
    limits = {k: v for k, v in tiling.items() if k in ("min_sentences", "min_chapter_sec")}
    if not can_split([s.start for s in sentences], **limits):
        # Too short for two chapters whatever the vectors say: one chapter, without the sentence encoder
        # (loading it is most of what a short episode's chapters cost). The same output as with vectors.
        vectors = np.zeros((len(sentences), 1), dtype=np.float32)
    else:
        texts = [s.text for s in sentences]
        vectors = None
        if encoder is None:
            from podinsight_dagster.transcribe.ahead import AHEAD

            vectors = AHEAD.sentences(texts)  # made while the transcript step went on (start_sentences_ahead)
        if vectors is None:
            vectors = (encoder or default_encoder()).encode(texts)
    return chapters_from_sentences(sentences, vectors, duration=transcript.duration or None, **tiling)


def start_sentences_ahead(transcript: Transcript) -> None:
    """Have the sentence vectors ``generate_chapters`` will need made in the background (transcribe/ahead.py),
    when it will need them: the default encoder and limits, a transcript long enough for two chapters."""
    from podinsight_dagster.chapters.embed import encoder as default_encoder
    from podinsight_dagster.transcribe.ahead import AHEAD

    sentences = sentences_from_segments(transcript.segments)
    if sentences and can_split([s.start for s in sentences]):
        AHEAD.submit_sentences([s.text for s in sentences], lambda texts: default_encoder().encode(texts))


def _write_soundbites(services: Services, ek: EpisodeKey, transcript: Transcript | None = None) -> list[dict]:
    """Up to 3 podcast:soundbite candidates from the transcript (chapters/soundbites.json, podrun publish);
    ``transcript``: the episode's, when the caller has read it already."""
    from podinsight_dagster.chapters.soundbites import soundbites

    if transcript is None:
        try:
            transcript = Transcript.from_dict(services.stage.get_json(layout.transcript_key(ek)))
        except FileNotFoundError:
            return []
    bites = soundbites(transcript.segments)
    services.stage.put_json(layout.soundbites_key(ek), {"soundbites": bites})
    return bites


def chapters_episode(services: Services, pk: str) -> dict:
    """Write the episode's chapters.json: the publisher's when the feed links them and they load, else generated.

    Returns what the asset reports. Raises StepError when there is no transcript to work from.
    """
    ek = EpisodeKey.parse(pk)
    started = time.perf_counter()
    rec = services.checkpoints.get(pk)
    publisher_error = None
    doc = None
    transcript = None
    if rec is not None and rec.chapters_url:
        from podinsight_dagster.fetch.http import FetchError

        try:
            fetched = services.http.fetch_bytes(rec.chapters_url, max_bytes=MAX_CHAPTERS_BYTES,
                                                accept="application/json+chapters, application/json;q=0.9")
            doc = parse_publisher_chapters(fetched.content)
            source = "publisher"
        except (FetchError, ValueError, UnicodeDecodeError) as exc:
            publisher_error = f"{rec.chapters_url}: {type(exc).__name__}: {exc}"
    if doc is None:
        try:
            transcript = Transcript.from_dict(services.stage.get_json(layout.transcript_key(ek)))
        except FileNotFoundError as exc:
            raise StepError(f"{pk}: no transcript yet (materialize transcript first)") from exc
        doc = {"version": CHAPTERS_VERSION,
               "description": f"Generated by Pod-Insight from the transcript ({VERSION})",
               "chapters": generate_chapters(transcript)}
        source = "generated"
    services.stage.put_json(layout.chapters_key(ek), doc)
    bites = _write_soundbites(services, ek, transcript)  # the transcript read once (a long one's JSON takes time)
    return {"source": source, "chapters": len(doc["chapters"]), "soundbites": len(bites),
            "titles": " | ".join(str(c.get("title", "")) for c in doc["chapters"])[:500] or None,
            "publisher_error": publisher_error, "method": VERSION if source == "generated" else None,
            "wall_sec": round(time.perf_counter() - started, 3)}
