"""Parse podcast feeds (RSS 2.0 / Atom, iTunes and Podcasting 2.0 tags) into episodes.

The bytes are always fetched by http.py (timeouts, a 20 MB cap) and handed over
here: feedparser's own fetcher has no timeout and happily opens local file paths.

A feed is untrusted XML. feedparser strips entity declarations with a regex
that only looks at line starts, so a one-line ``<!DOCTYPE [...]>`` slips past
it: a billion-laughs feed then costs seconds and tens of MB, and a "quadratic
blowup" (one 100 KB entity referenced 20,000 times) took 76 s and 5.7 GB in a
measurement. So before feedparser sees a document, :func:`defuse` re-encodes it
as UTF-8 and removes the whole DOCTYPE (internal subset included): no entity
is ever declared, nothing external is ever resolved, and undeclared references
stay literal text. Real podcast feeds do not declare entities.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

import feedparser
from defusedxml import ElementTree as SafeET
from feedparser.encodings import convert_to_utf8

from podinsight_dagster import USER_AGENT
from podinsight_dagster.store.keys import guid_key as make_guid_key

# run-book Appendix C asks for a polite global User-Agent; we never let feedparser fetch,
# but set it anyway so any accidental fetch identifies itself.
feedparser.USER_AGENT = USER_AGENT

PODCAST_NS = "https://podcastindex.org/namespace/1.0"
ITUNES_NS = "http://www.itunes.com/dtds/podcast-1.0.dtd"
ATOM_NS = "http://www.w3.org/2005/Atom"


class FeedParseError(ValueError):
    """A feed that cannot be read as a podcast feed."""


@dataclass
class TranscriptLink:
    url: str
    type: str | None = None
    language: str | None = None
    rel: str | None = None


@dataclass
class Episode:
    guid: str | None
    guid_key: str
    title: str | None
    published: str | None  # ISO 8601, UTC
    enclosure_url: str | None
    enclosure_type: str | None
    enclosure_length: int | None
    duration_sec: float | None
    transcripts: list[TranscriptLink] = field(default_factory=list)
    chapters_url: str | None = None
    link: str | None = None

    def to_dict(self) -> dict:
        return {
            "guid": self.guid,
            "guid_key": self.guid_key,
            "title": self.title,
            "published": self.published,
            "enclosure": {"url": self.enclosure_url, "type": self.enclosure_type, "length": self.enclosure_length},
            "duration_sec": self.duration_sec,
            "transcripts": [{k: v for k, v in asdict(t).items() if k != "rel" or v} for t in self.transcripts],
            "chapters_url": self.chapters_url,
        }


@dataclass
class Feed:
    title: str | None
    link: str | None
    new_feed_url: str | None
    next_page_url: str | None
    episodes: list[Episode]
    skipped: list[str] = field(default_factory=list)  # why items were left out
    podcast_guid: str | None = None  # Podcasting 2.0 <podcast:guid>: the show's stable identity

    def to_dict(self) -> dict:
        return {
            "feed": {"title": self.title, "link": self.link, "new_feed_url": self.new_feed_url,
                     "podcast_guid": self.podcast_guid, "next_page_url": self.next_page_url},
            "episodes": [e.to_dict() for e in self.episodes],
        }


_DURATION_RE = re.compile(r"^\s*(?:(\d+):)?(?:(\d+):)?(\d+(?:\.\d+)?)\s*$")


def parse_duration(value: str | None) -> float | None:
    """``itunes:duration`` in all its forms: ``HH:MM:SS``, ``MM:SS``, ``SSSS``, ``1234.5``."""
    if value is None:
        return None
    value = str(value).strip()
    if not value:
        return None
    m = _DURATION_RE.match(value)
    if not m:
        return None
    parts = [p for p in m.groups() if p is not None]
    secs = 0.0
    for p in parts:
        secs = secs * 60 + float(p)
    return secs


def _iso(struct) -> str | None:
    if not struct:
        return None
    return datetime.fromtimestamp(calendar.timegm(struct), tz=timezone.utc).isoformat().replace("+00:00", "Z")


_ROOT_ELEMENT = re.compile(rb"<[A-Za-z_:]")


_DECL_TOKEN = re.compile(rb"""["'\[\]>]|<!--|<\?""")


def _markup_decl_end(data: bytes, pos: int) -> int | None:
    """Index just after the ``>`` closing the markup declaration whose body starts at ``pos``.

    Skips quoted strings, and the internal subset ``[...]`` with the comments,
    processing instructions and declarations inside it. Jumps from token to token
    with a regex, so even a 20 MB DOCTYPE is scanned in milliseconds.
    """
    in_subset = False
    while True:
        m = _DECL_TOKEN.search(data, pos)
        if m is None:
            return None
        tok, pos = m.group(), m.end()
        if tok in (b'"', b"'"):
            close = data.find(tok, pos)
            if close < 0:
                return None
            pos = close + 1
        elif tok in (b"<!--", b"<?"):
            if not in_subset:
                continue  # only meaningful inside the subset; outside it is just text
            close = data.find(b"-->" if tok == b"<!--" else b"?>", pos)
            if close < 0:
                return None
            pos = close + (3 if tok == b"<!--" else 2)
        elif tok == b"[":
            in_subset = True
        elif tok == b"]":
            in_subset = False
        elif not in_subset:  # ">"
            return pos


def defuse(content: bytes, source: str = "feed") -> bytes:
    """The document as UTF-8 with its DOCTYPE removed (see the module docstring).

    Only the prolog (before the root element) can hold a DOCTYPE; the rest is untouched.
    """
    data = convert_to_utf8({}, content, {})
    i, n = 0, len(data)
    while i < n:
        if data.startswith(b"\xef\xbb\xbf", i) or data[i] in b" \t\r\n":
            i += 3 if data[i] == 0xEF else 1
        elif data.startswith(b"<?", i):
            k = data.find(b"?>", i + 2)
            if k < 0:
                break
            i = k + 2
        elif data.startswith(b"<!--", i):
            k = data.find(b"-->", i + 4)
            if k < 0:
                break
            i = k + 3
        elif data[i:i + 9].upper() == b"<!DOCTYPE":
            end = _markup_decl_end(data, i + 9)
            if end is None:
                raise FeedParseError(f"{source}: unterminated DOCTYPE declaration")
            data = data[:i] + data[end:]
            n = len(data)
        else:
            break
    root = _ROOT_ELEMENT.search(data)
    prolog = data[: root.start() if root else len(data)].upper()
    if b"<!ENTITY" in prolog or b"<!DOCTYPE" in prolog:
        raise FeedParseError(f"{source}: refusing a document with XML entity or DTD declarations")
    return data


def _podcast_extras(content: bytes) -> tuple[dict, list[dict]]:
    """Podcasting 2.0 tags feedparser flattens: every podcast:transcript, podcast:chapters.

    Returns (channel extras, per-item extras in document order). Best effort: a
    feed that defusedxml refuses (malformed, entity tricks) keeps feedparser's view only.
    """
    try:
        root = SafeET.fromstring(content)
    except Exception:  # noqa: BLE001 - malformed or hostile XML: feedparser's result stands
        return {}, []
    channel = root.find("channel")
    is_atom = root.tag == f"{{{ATOM_NS}}}feed"
    items_parent = channel if channel is not None else root
    extras = []
    tag_item = f"{{{ATOM_NS}}}entry" if is_atom else "item"
    for item in items_parent.findall(tag_item):
        transcripts = [
            TranscriptLink(url=t.get("url", ""), type=t.get("type"), language=t.get("language"), rel=t.get("rel"))
            for t in item.findall(f"{{{PODCAST_NS}}}transcript") if t.get("url")
        ]
        chapters = item.find(f"{{{PODCAST_NS}}}chapters")
        extras.append({"transcripts": transcripts, "chapters_url": chapters.get("url") if chapters is not None else None})
    chan = {}
    head = channel if channel is not None else root
    pguid = head.find(f"{{{PODCAST_NS}}}guid")
    if pguid is not None and (pguid.text or "").strip():
        chan["podcast_guid"] = pguid.text.strip()
    nfu = head.find(f"{{{ITUNES_NS}}}new-feed-url")
    if nfu is not None and (nfu.text or "").strip():
        chan["new_feed_url"] = nfu.text.strip()
    # Paged feeds: <atom:link rel="next"> in an RSS channel, <link rel="next"> in an Atom feed.
    for link in head.findall(f"{{{ATOM_NS}}}link"):
        if link.get("rel") == "next" and link.get("href"):
            chan["next_page_url"] = link.get("href").strip()
            break
    return chan, extras


def _next_link(parsed) -> str | None:
    """feedparser's view of rel="next" (used when the strict parse of the extras failed)."""
    for link in parsed.feed.get("links", []) or []:
        if link.get("rel") == "next" and link.get("href"):
            return link["href"]
    return None


def parse_feed(content: bytes, source: str = "feed") -> Feed:
    """Parse feed bytes. Items without audio are skipped (and said why), not fatal."""
    if not content or not content.strip():
        raise FeedParseError(f"{source}: empty document")
    content = defuse(content, source)
    parsed = feedparser.parse(content)
    if parsed.bozo and not parsed.entries and not parsed.feed.get("title"):
        reason = getattr(parsed, "bozo_exception", None)
        raise FeedParseError(f"{source}: not a valid RSS/Atom feed ({reason})")
    if not parsed.get("version") and not parsed.entries:
        raise FeedParseError(f"{source}: not an RSS or Atom feed")
    chan_extra, item_extras = _podcast_extras(content)
    episodes: list[Episode] = []
    skipped: list[str] = []
    seen_keys: set[str] = set()
    for idx, entry in enumerate(parsed.entries):
        enclosure = next((l for l in entry.get("links", []) if l.get("rel") == "enclosure" and l.get("href")), None)
        title = entry.get("title")
        if enclosure is None:
            skipped.append(f"item {idx} ({title!r}): no enclosure")
            continue
        guid = entry.get("id") or None
        try:
            gkey = make_guid_key(guid, enclosure.get("href"))
        except ValueError as exc:
            skipped.append(f"item {idx} ({title!r}): {exc}")
            continue
        if gkey in seen_keys:
            skipped.append(f"item {idx} ({title!r}): duplicate guid {guid!r}")
            continue
        seen_keys.add(gkey)
        length = enclosure.get("length")
        try:
            length_int = int(length) if length not in (None, "") else None
        except (TypeError, ValueError):
            length_int = None
        extra = item_extras[idx] if idx < len(item_extras) and len(item_extras) == len(parsed.entries) else {}
        episodes.append(Episode(
            guid=guid,
            guid_key=gkey,
            title=title,
            published=_iso(entry.get("published_parsed") or entry.get("updated_parsed")),
            enclosure_url=enclosure.get("href"),
            enclosure_type=enclosure.get("type"),
            enclosure_length=length_int,
            duration_sec=parse_duration(entry.get("itunes_duration")),
            transcripts=extra.get("transcripts", []),
            chapters_url=extra.get("chapters_url"),
            link=entry.get("link"),
        ))
    return Feed(
        title=parsed.feed.get("title"),
        link=parsed.feed.get("link"),
        new_feed_url=chan_extra.get("new_feed_url") or parsed.feed.get("itunes_new-feed-url"),
        next_page_url=chan_extra.get("next_page_url") or _next_link(parsed),
        podcast_guid=chan_extra.get("podcast_guid") or parsed.feed.get("podcast_guid"),
        episodes=episodes,
        skipped=skipped,
    )
