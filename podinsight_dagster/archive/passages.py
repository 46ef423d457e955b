"""What the search index holds and answers: episodes as passages, search words as FTS5 queries, hits with deep links.

The index itself (one SQLite FTS5 file) is archive/index.py; search by meaning, archive/meaning.py.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass

PASSAGE_CHARS = 500
ROWID_SHIFT = 20          # up to 1,048,576 passages per episode
MARK_START, MARK_END = "\x02", "\x03"


class SearchError(ValueError):
    """A search that cannot run (no index yet, an empty phrase, an unknown feed); one sentence."""


@dataclass
class EpisodeDoc:
    """What the index keeps of one episode: where it is, and its segments (text, start_sec, end_sec)."""

    partition_key: str
    feed_slug: str
    guid_key: str
    title: str | None
    published: str | None
    enclosure_url: str | None
    audio_uri: str | None
    duration_sec: float | None
    segments: list[dict]


@dataclass
class Hit:
    feed_slug: str
    partition_key: str
    title: str | None
    start_sec: float
    snippet: str
    link: str | None        # the enclosure URL with #t=<seconds>
    audio: str | None       # the stored audio (a local path as file://, or s3://) with #t=<seconds>
    score: float
    similarity: float | None = None  # search by meaning: the passage's cosine similarity to the question

    def to_dict(self) -> dict:
        return asdict(self)


def passages_of(segments: list[dict], size: int = PASSAGE_CHARS) -> list[tuple[str, float, list]]:
    """Whole segments grouped into passages of about ``size`` characters: (text, start_sec, [[offset, start]])."""
    out, parts, segs, length = [], [], [], 0
    for seg in segments:
        text = (seg.get("text") or "").strip()
        if not text:
            continue
        segs.append([length, float(seg.get("start_sec") or 0.0)])
        parts.append(text)
        length += len(text) + 1
        if length >= size:
            out.append((" ".join(parts), segs[0][1], segs))
            parts, segs, length = [], [], 0
    if parts:
        out.append((" ".join(parts), segs[0][1], segs))
    return out


def fts_phrase(phrase: str) -> str:
    """The words of ``phrase`` as one FTS5 phrase query (so no user input is read as FTS5 syntax)."""
    words = re.findall(r"\w+", phrase)
    if not words:
        raise SearchError(f"nothing to search for in {phrase!r}: give at least one word")
    return '"' + " ".join(words) + '"'


def fts_query(text: str) -> str:
    """A search as an FTS5 query: every word a BM25 term a passage must hold, ``"quoted words"`` a phrase.

    ``brain sleep`` finds a passage holding both words anywhere in it (stemmed: "sleeping" too);
    ``"brain sleep"`` only the two words side by side. Common words (the, of, how, ...) are left out
    of an unquoted search unless it has no other word, so a question's words still find a passage.
    Each term is quoted, so no user input is read as FTS5 syntax (AND, NEAR, *, column filters).
    """
    from podinsight_dagster.chapters.tiling import STOPWORDS

    phrases = [words for p in re.findall(r'"([^"]*)"', text) if (words := re.findall(r"\w+", p))]
    loose = re.findall(r"\w+", re.sub(r'"[^"]*"', " ", text))
    content = [w for w in loose if w.lower() not in STOPWORDS]
    if content or phrases:
        loose = content
    terms = ['"' + " ".join(p) + '"' for p in phrases] + [f'"{w}"' for w in dict.fromkeys(w.lower() for w in loose)]
    if not terms:
        raise SearchError(f"nothing to search for in {text!r}: give at least one word")
    return " AND ".join(terms)


def with_offset(uri: str | None, seconds: float) -> str | None:
    if not uri:
        return None
    if uri.startswith("/"):
        uri = "file://" + uri
    return f"{uri.split('#', 1)[0]}#t={int(seconds)}"


def _match_start(marked: str, segs: list, default: float) -> float:
    """The start time of the segment holding the first highlighted word of a passage."""
    at = marked.find(MARK_START)
    if at < 0:
        return default
    start = default
    for offset, seg_start in segs:
        if offset > at:
            break
        start = seg_start
    return float(start)


def episode_doc(services, partition_key: str) -> EpisodeDoc:
    """An episode as the index takes it: raw meta.json (title, enclosure) and its stage segments.json."""
    from podinsight_dagster.errors import StepError
    from podinsight_dagster.store import layout
    from podinsight_dagster.store.keys import EpisodeKey

    ek = EpisodeKey.parse(partition_key)
    try:
        lines = services.stage.get_bytes(layout.segments_key(ek)).decode().splitlines()
    except FileNotFoundError as exc:
        raise StepError(f"{partition_key}: no segments yet (materialize segments first)") from exc
    try:
        meta = services.raw.get_json(layout.meta_key(ek))
    except FileNotFoundError:
        meta = {}
    audio_key = meta.get("audio_key")
    return EpisodeDoc(partition_key=partition_key, feed_slug=ek.feed_slug, guid_key=ek.guid_key,
                      title=meta.get("title"), published=meta.get("published"),
                      enclosure_url=meta.get("enclosure_url"),
                      audio_uri=services.raw.uri(audio_key) if audio_key else None,
                      duration_sec=meta.get("duration_sec"),
                      segments=[json.loads(line) for line in lines if line.strip()])
