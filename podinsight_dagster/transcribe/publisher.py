"""Publisher transcripts: a feed's ``podcast:transcript`` links, fetched and normalized.

Many shows publish their own transcript (Podcasting 2.0 ``<podcast:transcript>``):
WebVTT, SRT, the Podcasting 2.0 JSON format, plain text or HTML. When one is there
it is usually better than ASR (edited, with speaker names) and costs nothing, so
``prefer_publisher`` (the default transcript source) uses it and skips ASR.

``fetch_publisher_transcript`` tries the links best format first (JSON, VTT, SRT,
text, HTML; a link in another language than the one wanted last), fetching only
through the project's ``HttpClient.fetch_bytes`` (network policy, host limits,
retries, size cap), and turns the first one that parses into the same
``Transcript`` the ASR path gives, with ``source = "publisher"``. Timed formats keep
their timings (clamped to the audio's length); plain text and HTML are spread over
the episode in proportion to sentence length, so subtitles and segments still
exist, with made-up timings (``publisher_format`` says which). Failures of every
link are collected in a ``PublisherTranscriptError`` so the caller can fall back to
ASR and record why.
"""

from __future__ import annotations

import html
import json
import re
import time
import zlib
from dataclasses import dataclass
from urllib.parse import urlsplit

from podinsight_dagster.transcribe.options import Segment, Transcript, Word

FORMATS = ("json", "vtt", "srt", "text", "html")  # best first
MAX_TRANSCRIPT_BYTES = 20 << 20
_TYPE_FORMATS = {
    "application/json": "json", "text/json": "json",
    "text/vtt": "vtt", "text/webvtt": "vtt",
    "application/x-subrip": "srt", "application/srt": "srt", "text/srt": "srt", "text/x-subrip": "srt",
    "text/plain": "text",
    "text/html": "html", "application/xhtml+xml": "html",
}
_EXT_FORMATS = {".json": "json", ".vtt": "vtt", ".srt": "srt", ".txt": "text", ".html": "html", ".htm": "html"}
MAX_SEGMENT_SEC = 15.0


class PublisherTranscriptError(RuntimeError):
    """No publisher transcript could be used; the message says why for each link."""


@dataclass(frozen=True)
class PublisherLink:
    url: str
    type: str | None = None
    language: str | None = None
    rel: str | None = None

    @property
    def format(self) -> str | None:
        media = (self.type or "").split(";")[0].strip().lower()
        if media in _TYPE_FORMATS:
            return _TYPE_FORMATS[media]
        path = urlsplit(self.url).path.lower()
        for ext, fmt in _EXT_FORMATS.items():
            if path.endswith(ext):
                return fmt
        return None


def links_from_json(transcripts_json: str | None) -> list[PublisherLink]:
    """The checkpoint record's ``transcripts_json`` (a JSON list of {url, type, language, rel})."""
    if not transcripts_json:
        return []
    try:
        items = json.loads(transcripts_json)
    except ValueError:
        return []
    links = []
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and isinstance(item.get("url"), str) and item["url"].strip():
            links.append(PublisherLink(item["url"].strip(), item.get("type"), item.get("language"), item.get("rel")))
    return links


def rank_links(links: list[PublisherLink], language: str | None = None) -> list[PublisherLink]:
    """Best first: timed formats before untimed ones; links in another language than ``language`` last."""
    def key(link: PublisherLink):
        fmt = link.format
        other_language = bool(language and link.language and not link.language.lower().startswith(language.lower()))
        return (other_language, FORMATS.index(fmt) if fmt in FORMATS else len(FORMATS))
    return sorted(links, key=key)


# ---------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------
_TIMING = re.compile(
    r"(?:(\d+):)?(\d{1,2}):(\d{2})[.,](\d{1,3})\s*-->\s*(?:(\d+):)?(\d{1,2}):(\d{2})[.,](\d{1,3})")
_VOICE = re.compile(r"<v(?:\.[^\s>]*)?\s+([^>]*)>", re.IGNORECASE)
_TAG = re.compile(r"<[^>]*>")


def _secs(h, m, s, frac) -> float:
    return int(h or 0) * 3600 + int(m) * 60 + int(s) + int(frac.ljust(3, "0")[:3]) / 1000


def _clean(text: str) -> str:
    return " ".join(html.unescape(_TAG.sub("", text)).split())


def _cues(text: str) -> list[Segment]:
    """VTT and SRT cues: blocks with a ``start --> end`` line; VTT voice tags give the speaker."""
    segments = []
    for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n").replace("\r", "\n")):
        lines = block.strip("\n").split("\n")
        for i, line in enumerate(lines):
            m = _TIMING.search(line)
            if m:
                start, end = _secs(*m.groups()[:4]), _secs(*m.groups()[4:])
                body = "\n".join(lines[i + 1:])
                voice = _VOICE.search(body)
                speaker = _clean(voice.group(1)) if voice else None
                cleaned = _clean(body)
                if cleaned:
                    segments.append(_segment(start, end, cleaned, speaker))
                break
    return segments


def parse_vtt(text: str) -> list[Segment]:
    body = text.lstrip("\ufeff")
    if not body.lstrip().startswith("WEBVTT"):
        raise ValueError("not WebVTT: no WEBVTT header")
    return _cues(body)


def parse_srt(text: str) -> list[Segment]:
    return _cues(text.lstrip("\ufeff"))


def parse_json(data: str) -> list[Segment]:
    """Podcasting 2.0 JSON: {"version", "segments": [{"startTime", "endTime", "body", "speaker"}]}.

    Some publishers write one segment per word; those are regrouped into sentences.
    """
    doc = json.loads(data)
    items = doc.get("segments") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise ValueError("not a Podcasting 2.0 JSON transcript: no segments list")
    rows = []
    for item in items:
        if not isinstance(item, dict):
            continue
        body = _clean(str(item.get("body") or ""))
        if not body:
            continue
        start = float(item.get("startTime") or 0.0)
        end = float(item.get("endTime") if item.get("endTime") is not None else start)
        speaker = item.get("speaker")
        rows.append((start, max(end, start), body, str(speaker) if speaker not in (None, "") else None))
    if not rows:
        return []
    words_per_row = sorted(len(r[2].split()) for r in rows)
    if words_per_row[len(words_per_row) // 2] > 1:
        return [_segment(*r) for r in rows]
    # Word-level segments: group into sentences (and on speaker changes, and at 15 s).
    segments, current, speaker = [], [], rows[0][3]
    for start, end, body, spk in rows:
        if current and spk != speaker:
            segments.append(_from_words(current, speaker))
            current = []
        speaker = spk
        current.append(Word(round(start, 3), round(end, 3), " " + body, 1.0))
        if body.endswith((".", "?", "!")) or current[-1].end - current[0].start >= MAX_SEGMENT_SEC:
            segments.append(_from_words(current, speaker))
            current = []
    if current:
        segments.append(_from_words(current, speaker))
    return segments


def _from_words(words: list[Word], speaker: str | None) -> Segment:
    seg = _segment(words[0].start, words[-1].end, "".join(w.word for w in words).strip(), speaker)
    seg.words = list(words)
    return seg


_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def parse_text(text: str, duration: float | None) -> list[Segment]:
    """Plain text: sentences spread over the episode in proportion to their length (timings are estimates)."""
    paragraphs = [p for p in re.split(r"\n\s*\n", text.replace("\r\n", "\n")) if p.strip()]
    sentences = []
    for p in paragraphs:
        speaker = None
        m = re.match(r"^\s*([A-Z][\w.'-]*(?: [A-Z][\w.'-]*){0,2}):\s+", p)
        if m:  # "Jane Doe: ..." speaker prefixes
            speaker, p = m.group(1).strip(), p[m.end():]
        sentences += [(s, speaker) for s in (" ".join(x.split()) for x in _SENTENCE.split(p)) if s]
    if not sentences:
        return []
    total = sum(len(s) for s, _ in sentences)
    span = duration if duration and duration > 0 else total / 15.0  # ~15 characters a second
    t, segments = 0.0, []
    for s, speaker in sentences:
        d = span * len(s) / total
        segments.append(_segment(round(t, 3), round(t + d, 3), s, speaker))
        t += d
    return segments


def parse_html(text: str, duration: float | None) -> list[Segment]:
    text = re.sub(r"(?is)<(script|style)\b.*?</\1>", " ", text)
    text = re.sub(r"(?i)<br\s*/?>|</p>|</div>|</h\d>|</li>", "\n\n", text)
    return parse_text(html.unescape(_TAG.sub(" ", text)), duration)


def _segment(start: float, end: float, text: str, speaker: str | None = None) -> Segment:
    data = text.encode("utf-8")
    ratio = len(data) / len(zlib.compress(data)) if data else 0.0
    return Segment(start=round(start, 3), end=round(max(end, start), 3), text=text, avg_logprob=None,
                   no_speech_prob=None, compression_ratio=round(ratio, 3), words=[], speaker=speaker)


def sniff_format(content: bytes, declared: str | None) -> str | None:
    """The format the bytes show (they win over a declared type that disagrees)."""
    head = content[:512].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"WEBVTT"):
        return "vtt"
    if head.startswith((b"{", b"[")):
        return "json"
    if head[:15].lower().startswith((b"<!doctype html", b"<html", b"<body", b"<p", b"<div")):
        return "html"
    if re.match(rb"\d+\s*\r?\n\s*\d{1,2}:\d{2}:\d{2}[,.]\d{1,3}\s*-->", head):
        return "srt"
    return declared


def parse_transcript(content: bytes, fmt: str | None, duration: float | None) -> tuple[str, list[Segment]]:
    """(format, segments) of a publisher transcript; ValueError when it cannot be read.

    An HTML page where another format was declared is an error page, not a transcript.
    """
    sniffed = sniff_format(content, fmt)
    if sniffed == "html" and fmt not in (None, "html"):
        raise ValueError(f"an HTML page where a {fmt} transcript was expected")
    fmt = sniffed
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = content.decode("latin-1")
    if fmt == "json":
        segments = parse_json(text)
    elif fmt == "vtt":
        segments = parse_vtt(text)
    elif fmt == "srt":
        segments = parse_srt(text)
    elif fmt == "html":
        segments = parse_html(text, duration)
    elif fmt == "text":
        segments = parse_text(text, duration)
    else:
        raise ValueError(f"unknown transcript format (type {fmt!r})")
    if not segments:
        raise ValueError(f"{fmt} transcript has no text")
    return fmt, segments


def normalize(segments: list[Segment], duration: float | None) -> list[Segment]:
    """Sorted, clamped into [0, duration], without backwards spans."""
    out = []
    for s in sorted(segments, key=lambda s: (s.start, s.end)):
        if duration:
            s.start = round(min(max(0.0, s.start), duration), 3)
            s.end = round(min(max(s.start, s.end), duration), 3)
            for w in s.words:
                w.start = round(min(max(0.0, w.start), duration), 3)
                w.end = round(min(max(w.start, w.end), duration), 3)
        out.append(s)
    return out


def _speech_seconds(segments: list[Segment]) -> float:
    """Time covered by at least one segment (overlaps counted once)."""
    total, cur_start, cur_end = 0.0, None, None
    for s in sorted(segments, key=lambda s: s.start):
        if cur_end is None or s.start > cur_end:
            if cur_end is not None:
                total += cur_end - cur_start
            cur_start, cur_end = s.start, s.end
        else:
            cur_end = max(cur_end, s.end)
    if cur_end is not None:
        total += cur_end - cur_start
    return total


def fetch_publisher_transcript(http, links: list[PublisherLink], *, duration: float | None,
                               language: str | None = None) -> Transcript:
    """The first usable publisher transcript among ``links`` as a Transcript (source "publisher").

    ``http`` is the project's HttpClient (only ``fetch_bytes`` is used). ``duration`` is the
    audio's length when known (timings are clamped to it; untimed text is spread over it).
    Raises PublisherTranscriptError listing why each link failed.
    """
    from podinsight_dagster.fetch.http import FetchError

    if not links:
        raise PublisherTranscriptError("the episode has no podcast:transcript links")
    started = time.perf_counter()
    reasons = []
    for link in rank_links(links, language):
        try:
            fetched = http.fetch_bytes(link.url, max_bytes=MAX_TRANSCRIPT_BYTES,
                                       accept=link.type or "text/vtt, application/json, application/x-subrip, "
                                                           "text/plain;q=0.8, text/html;q=0.5")
            content_type = (fetched.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            declared = link.format or _TYPE_FORMATS.get(content_type)
            fmt, segments = parse_transcript(fetched.content, declared, duration)
        except FetchError as exc:
            reasons.append(f"{link.url}: fetch failed: {exc}")
            continue
        except (ValueError, TypeError, KeyError) as exc:
            reasons.append(f"{link.url}: cannot parse: {type(exc).__name__}: {exc}")
            continue
        segments = normalize(segments, duration)
        length = duration or max((s.end for s in segments), default=0.0)
        return Transcript(
            text=" ".join(s.text for s in segments), language=(link.language or language or "und"),
            language_probability=1.0 if link.language else 0.0, duration=round(length, 3),
            speech_duration=round(_speech_seconds(segments), 3), segments=segments, model=None, device="cpu",
            compute_type=None, wall_sec=round(time.perf_counter() - started, 3), source="publisher",
            publisher_url=link.url, publisher_format=fmt,
        )
    raise PublisherTranscriptError("no usable publisher transcript: " + "; ".join(reasons))
