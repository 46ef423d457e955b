"""Parse podcast feeds (RSS 2.0 / Atom, iTunes and Podcasting 2.0 tags) into episodes.

The bytes are always fetched by http.py (timeouts, a 20 MB cap) and handed over
here: feedparser's own fetcher has no timeout and happily opens local file paths.

A feed is untrusted XML. feedparser strips entity declarations with a regex
that only looks at line starts, so a one-line ``<!DOCTYPE [...]>`` slips past
it: a billion-laughs feed then costs seconds and tens of MB, and a "quadratic
blowup" (one 100 KB entity referenced 20,000 times) took 76 s and 5.7 GB in a
measurement. So before feedparser sees a document, :func:`defuse` (fetch/feedxml.py) re-encodes it
as UTF-8 and removes the whole DOCTYPE (internal subset included): no entity
is ever declared, nothing external is ever resolved, and undeclared references
stay literal text. Real podcast feeds do not declare entities.
"""

from __future__ import annotations

import calendar
import html
import math
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

import feedparser
from defusedxml import ElementTree as SafeET

from podinsight_dagster import USER_AGENT
from podinsight_dagster.fetch.enclosures import (AlternateEnclosure, _alternates, _Enclosure, choose_enclosure,
                                                 prefer_download)
from podinsight_dagster.fetch.feedxml import (ATOM_NS, ITUNES_NS, MEDIA_NS, PODCAST_NS, FeedParseError, _base_of,
                                              _children, _int, _resolve, declare_missing_namespaces, defuse)
from podinsight_dagster.store.keys import guid_key as make_guid_key

# run-book Appendix C asks for a polite global User-Agent; we never let feedparser fetch,
# but set it anyway so any accidental fetch identifies itself.
feedparser.USER_AGENT = USER_AGENT

@dataclass
class TranscriptLink:
    url: str
    type: str | None = None
    language: str | None = None
    rel: str | None = None


@dataclass
class PersonTag:
    """A ``<podcast:person>``: who takes part (role host by default, as the namespace says)."""

    name: str
    role: str = "host"
    group: str | None = None
    href: str | None = None
    img: str | None = None


def _persons(el, base: str | None) -> list[PersonTag]:
    out = []
    for p in _children(el, PODCAST_NS, "person"):
        name = " ".join((p.text or "").split())
        if name:
            out.append(PersonTag(name=name, role=(p.get("role") or "host").strip().lower(),
                                 group=(p.get("group") or "").strip().lower() or None,
                                 href=_resolve(base, p.get("href")), img=_resolve(base, p.get("img"))))
    return out


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
    season: int | None = None     # itunes:season
    number: int | None = None     # itunes:episode (serial shows are read in this order)
    persons: list[PersonTag] = field(default_factory=list)  # the item's podcast:person, else the channel's
    description: str | None = None  # the show notes as plain text (see show_notes)
    # A smaller podcast:alternateEnclosure to download instead of the enclosure (same episode, same key)
    download: AlternateEnclosure | None = None

    @property
    def guid_derived(self) -> bool:
        """The item has no GUID: its identity (and key) is the enclosure URL, as podcast clients do."""
        return not self.guid

    @property
    def identity(self) -> str | None:
        """What the key is derived from: the GUID, or the enclosure URL when there is none."""
        return self.guid or self.enclosure_url

    def to_dict(self) -> dict:
        return {
            "guid": self.identity,
            "guid_derived": self.guid_derived,
            "guid_key": self.guid_key,
            "title": self.title,
            "season": self.season,
            "episode": self.number,
            "published": self.published,
            "enclosure": {"url": self.enclosure_url, "type": self.enclosure_type, "length": self.enclosure_length},
            "duration_sec": self.duration_sec,
            "transcripts": [{k: v for k, v in asdict(t).items() if k != "rel" or v} for t in self.transcripts],
            "chapters_url": self.chapters_url,
            "persons": [asdict(p) for p in self.persons],
            "description": self.description,
            "download": asdict(self.download) if self.download else None,
        }


# Show notes are kept as plain text, this long at most: the guest's name, what they are read for
# (speakers/names.py), comes early; a checkpoint row stays small (a DynamoDB item holds 400 KB).
SHOW_NOTES_MAX_CHARS = 4000
_BLOCK_TAG = re.compile(r"<\s*/?\s*(?:br|p|div|li|ul|ol|h[1-6]|tr|td|blockquote|hr)\b[^>]*>", re.IGNORECASE)
_ANY_TAG = re.compile(r"<[^>]*>")


def show_notes(entry) -> str | None:
    """An item's show notes as plain text: its description (or itunes:summary), else content:encoded.

    Block-level HTML (paragraphs, line breaks, list items) becomes line breaks, so that text
    from two paragraphs never reads as one phrase; other tags are dropped, entities decoded.
    """
    raw = entry.get("summary") or ""
    if not raw.strip():
        raw = next((c.get("value") for c in entry.get("content") or [] if (c.get("value") or "").strip()), "")
    text = html.unescape(_ANY_TAG.sub("", _BLOCK_TAG.sub("\n", raw)))
    lines = (" ".join(line.split()) for line in text.splitlines())
    return "\n".join(line for line in lines if line)[:SHOW_NOTES_MAX_CHARS] or None


@dataclass
class SkippedItem:
    """An item left out of the episodes, and why."""

    index: int              # position in the feed (0-based)
    title: str | None
    guid: str | None
    reason: str

    def __str__(self) -> str:
        return f"item {self.index} ({self.title!r}): {self.reason}"


@dataclass
class Feed:
    title: str | None
    link: str | None
    new_feed_url: str | None
    next_page_url: str | None
    episodes: list[Episode]  # in the feed's order
    skipped: list[str] = field(default_factory=list)  # why items were left out (str of skipped_items)
    podcast_guid: str | None = None  # Podcasting 2.0 <podcast:guid>: the show's stable identity
    # <podcast:locked>yes</podcast:locked>: the owner (an email) does not allow the feed to be copied elsewhere
    locked: bool = False
    locked_owner: str | None = None
    itunes_type: str | None = None   # "episodic" (newest first) or "serial" (read in order)
    skipped_items: list[SkippedItem] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "feed": {"title": self.title, "link": self.link, "new_feed_url": self.new_feed_url,
                     "podcast_guid": self.podcast_guid, "next_page_url": self.next_page_url,
                     "locked": self.locked, "locked_owner": self.locked_owner,
                     "itunes_type": self.itunes_type},
            "episodes": [e.to_dict() for e in self.episodes],
            "skipped": [asdict(s) for s in self.skipped_items],
        }


_DURATION_RE = re.compile(r"^(?:(\d+):)?(?:(\d+):)?(\d+(?:\.\d+)?)$")
_ISO_DURATION_RE = re.compile(r"^P(?:(\d+(?:\.\d+)?)D)?T?(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?"
                              r"(?:(\d+(?:\.\d+)?)S)?$", re.IGNORECASE)


def parse_duration(value: str | None) -> float | None:
    """``itunes:duration`` in the forms seen in the wild, in seconds; anything else is None.

    ``HH:MM:SS``, ``MM:SS``, ``SSSS``, ``1234.5``, ``1:02:03.500`` (a comma works as the
    decimal mark too) and ISO 8601 ``PT1H2M3S``. Garbage, negative or non-finite values
    give None, never an exception.
    """
    if value is None:
        return None
    value = str(value).strip().replace(",", ".")
    if not value:
        return None
    m = _DURATION_RE.match(value)
    if m:
        secs = 0.0
        for p in (p for p in m.groups() if p is not None):
            secs = secs * 60 + float(p)
    else:
        m = _ISO_DURATION_RE.match(value)
        if not m or not any(m.groups()) or value.upper().endswith("T"):
            return None
        d, h, mi, se = (float(g) if g else 0.0 for g in m.groups())
        secs = ((d * 24 + h) * 60 + mi) * 60 + se
    return secs if math.isfinite(secs) else None


def _iso(struct) -> str | None:
    if not struct:
        return None
    return datetime.fromtimestamp(calendar.timegm(struct), tz=timezone.utc).isoformat().replace("+00:00", "Z")


def _item_extras(item, base: str | None, is_atom: bool) -> dict:
    """What feedparser gets wrong or leaves out of one item, read from the strict parse."""
    base = _base_of(item, base)
    if is_atom:
        gid = item.find(f"{{{ATOM_NS}}}id")
        encs = [_Enclosure(url, link.get("type"), _int(link.get("length")))
                for link in item.findall(f"{{{ATOM_NS}}}link") if link.get("rel") == "enclosure"
                and (url := _resolve(_base_of(link, base), link.get("href")))]
    else:
        gid = item.find("guid")
        encs = [_Enclosure(url, (e.get("type") or "").strip() or None, _int(e.get("length")))
                for e in item.findall("enclosure") if (url := _resolve(_base_of(e, base), e.get("url")))]
    if not encs:  # Media RSS: media:content, directly or inside media:group
        contents = _children(item, MEDIA_NS, "content")
        for group in _children(item, MEDIA_NS, "group"):
            contents += _children(group, MEDIA_NS, "content")
        encs = [_Enclosure(url, (c.get("type") or "").strip() or None, _int(c.get("fileSize")), c.get("medium"))
                for c in contents if (url := _resolve(_base_of(c, base), c.get("url")))]
    transcripts = [
        TranscriptLink(url=url, type=t.get("type"), language=t.get("language"), rel=t.get("rel"))
        for t in _children(item, PODCAST_NS, "transcript") if (url := _resolve(_base_of(t, base), t.get("url")))
    ]
    chapters = _children(item, PODCAST_NS, "chapters")
    itunes = {k: _int(c[0].text) if (c := _children(item, ITUNES_NS, k)) else None for k in ("season", "episode")}
    return {
        "guid": (gid.text or "").strip() or None if gid is not None else None,
        "enclosures": encs,
        "transcripts": transcripts,
        "chapters_url": _resolve(_base_of(chapters[0], base), chapters[0].get("url")) if chapters else None,
        "season": itunes["season"], "episode": itunes["episode"],
        "persons": _persons(item, base),
        "alternates": _alternates(item, base),
    }


def _podcast_extras(content: bytes, base_url: str | None = None) -> tuple[dict, list[dict]] | None:
    """The strict parse: channel extras and per-item extras in document order.

    GUIDs, enclosures (with Media RSS), Podcasting 2.0 transcripts and chapters, all URLs
    trimmed and resolved against ``base_url`` and ``xml:base``. feedparser is not used for
    these: it resolves GUIDs as if they were URLs and keeps whitespace in attributes. None
    when defusedxml refuses the document (malformed, entity tricks): feedparser's view stands.
    """
    try:
        root = SafeET.fromstring(content)
    except Exception:  # noqa: BLE001 - malformed or hostile XML: feedparser's result stands
        return None
    channel = root.find("channel")
    is_atom = root.tag == f"{{{ATOM_NS}}}feed"
    base = _base_of(root, base_url)
    head = channel if channel is not None else root
    base = _base_of(head, base) if channel is not None else base
    tag_item = f"{{{ATOM_NS}}}entry" if is_atom else "item"
    extras = [_item_extras(item, base, is_atom) for item in head.findall(tag_item)]
    chan: dict = {"persons": _persons(head, base)}
    pguid = _children(head, PODCAST_NS, "guid")
    if pguid and (pguid[0].text or "").strip():
        chan["podcast_guid"] = pguid[0].text.strip()
    locked = _children(head, PODCAST_NS, "locked")
    if locked:
        chan["locked"] = (locked[0].text or "").strip().lower() == "yes"
        chan["locked_owner"] = (locked[0].get("owner") or "").strip() or None
    nfu = _children(head, ITUNES_NS, "new-feed-url")
    if nfu and (nfu[0].text or "").strip():
        chan["new_feed_url"] = _resolve(base, nfu[0].text)
    itype = _children(head, ITUNES_NS, "type")
    if itype and (itype[0].text or "").strip():
        chan["itunes_type"] = itype[0].text.strip().lower()
    # Paged feeds: <atom:link rel="next"> in an RSS channel, <link rel="next"> in an Atom feed.
    for link in head.findall(f"{{{ATOM_NS}}}link"):
        if link.get("rel") == "next" and (link.get("href") or "").strip():
            chan["next_page_url"] = _resolve(_base_of(link, base), link.get("href"))
            break
    return chan, extras


def _next_link(parsed) -> str | None:
    """feedparser's view of rel="next" (used when the strict parse of the extras failed)."""
    for link in parsed.feed.get("links", []) or []:
        if link.get("rel") == "next" and link.get("href"):
            return link["href"].strip()
    return None


def _fallback_extras(entry, base_url: str | None) -> dict:
    """feedparser's view of an item, when the strict parse failed (malformed XML)."""
    encs = [_Enclosure(url, (link.get("type") or "").strip() or None, _int(link.get("length")))
            for link in entry.get("links", []) or []
            if link.get("rel") == "enclosure" and (url := _resolve(base_url, link.get("href")))]
    if not encs:
        encs = [_Enclosure(url, (c.get("type") or "").strip() or None, _int(c.get("filesize")), c.get("medium"))
                for c in entry.get("media_content", []) or [] if (url := _resolve(base_url, c.get("url")))]
    return {"guid": (entry.get("id") or "").strip() or None, "enclosures": encs, "transcripts": [],
            "chapters_url": None, "season": _int(entry.get("itunes_season")),
            "episode": _int(entry.get("itunes_episode"))}


def parse_feed(content: bytes, source: str = "feed", base_url: str | None = None) -> Feed:
    """Parse feed bytes. Items without audio are skipped (and said why), not fatal.

    ``base_url`` is where the feed was read from (the URL after redirects, or a file path):
    relative enclosure, transcript and chapters URLs are resolved against it and ``xml:base``.
    Episodes keep the feed's order.
    """
    if not content or not content.strip():
        raise FeedParseError(f"{source}: empty document")
    content = declare_missing_namespaces(defuse(content, source))
    parsed = feedparser.parse(content)  # no Content-Location: feedparser would "resolve" GUIDs too
    if parsed.bozo and not parsed.entries and not parsed.feed.get("title"):
        reason = getattr(parsed, "bozo_exception", None)
        raise FeedParseError(f"{source}: not a valid RSS/Atom feed ({reason})")
    if not parsed.get("version") and not parsed.entries:
        raise FeedParseError(f"{source}: not an RSS or Atom feed")
    strict = _podcast_extras(content, base_url)
    chan_extra, item_extras = strict if strict is not None else ({}, [])
    aligned = len(item_extras) == len(parsed.entries)
    episodes: list[Episode] = []
    skipped: list[SkippedItem] = []
    seen_keys: set[str] = set()
    for idx, entry in enumerate(parsed.entries):
        extra = item_extras[idx] if aligned else _fallback_extras(entry, base_url)
        title = entry.get("title")
        guid = extra["guid"]
        enclosure, why = choose_enclosure(extra["enclosures"])
        if enclosure is None:
            skipped.append(SkippedItem(idx, title, guid, why))
            continue
        try:
            gkey = make_guid_key(guid, enclosure.url)
        except ValueError as exc:
            skipped.append(SkippedItem(idx, title, guid, str(exc)))
            continue
        if gkey in seen_keys:
            skipped.append(SkippedItem(idx, title, guid, f"duplicate guid {guid or enclosure.url!r}"))
            continue
        seen_keys.add(gkey)
        episodes.append(Episode(
            guid=guid,
            guid_key=gkey,
            title=title,
            published=_iso(entry.get("published_parsed") or entry.get("updated_parsed")),
            enclosure_url=enclosure.url,
            enclosure_type=enclosure.type,
            enclosure_length=enclosure.length,
            duration_sec=parse_duration(entry.get("itunes_duration")),
            transcripts=extra["transcripts"],
            chapters_url=extra["chapters_url"],
            link=entry.get("link"),
            season=extra["season"],
            number=extra["episode"],
            persons=extra.get("persons") or list(chan_extra.get("persons") or []),
            description=show_notes(entry),
            download=prefer_download(enclosure, extra.get("alternates") or [],
                                     parse_duration(entry.get("itunes_duration"))),
        ))
    new_feed_url = chan_extra.get("new_feed_url") or (parsed.feed.get("itunes_new-feed-url") or "").strip() or None
    itunes_type = chan_extra.get("itunes_type") or (parsed.feed.get("itunes_type") or "").strip().lower() or None
    return Feed(
        title=parsed.feed.get("title"),
        link=parsed.feed.get("link"),
        new_feed_url=new_feed_url,
        next_page_url=chan_extra.get("next_page_url") or _resolve(base_url, _next_link(parsed)),
        podcast_guid=chan_extra.get("podcast_guid") or parsed.feed.get("podcast_guid"),
        locked=bool(chan_extra.get("locked")),
        locked_owner=chan_extra.get("locked_owner"),
        itunes_type=itunes_type,
        episodes=episodes,
        skipped=[str(s) for s in skipped],
        skipped_items=skipped,
    )
