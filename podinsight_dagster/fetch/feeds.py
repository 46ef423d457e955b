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
import html
import math
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from urllib.parse import urljoin

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
MEDIA_NS = "http://search.yahoo.com/mrss/"
XML_BASE = "{http://www.w3.org/XML/1998/namespace}base"

# Prefixes publishers use without declaring them (feedparser then drops to its loose parser and
# a strict XML parser refuses the document): declared on the root element before parsing.
KNOWN_PREFIXES = {
    "itunes": ITUNES_NS,
    "podcast": PODCAST_NS,
    "media": MEDIA_NS,
    "atom": ATOM_NS,
    "content": "http://purl.org/rss/1.0/modules/content/",
    "googleplay": "http://www.google.com/schemas/play-podcasts/1.0",
}
# Namespace URIs seen in the wild for the same vocabularies (compared lower-cased).
_NS_ALIASES = {
    PODCAST_NS: {PODCAST_NS, "https://github.com/podcastindex-org/podcast-namespace/blob/main/docs/1.0.md"},
    ITUNES_NS: {ITUNES_NS, "http://www.itunes.com/dtds/podcast-1.0.dtd/", "https://www.itunes.com/dtds/podcast-1.0.dtd"},
    MEDIA_NS: {MEDIA_NS, "http://search.yahoo.com/mrss", "https://search.yahoo.com/mrss/"},
}


class FeedParseError(ValueError):
    """A feed that cannot be read as a podcast feed."""


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


_ROOT_START = re.compile(rb"<([A-Za-z_][\w.-]*(?::[\w.-]+)?)")


def declare_missing_namespaces(data: bytes) -> bytes:
    """Declare on the root element the well-known prefixes a feed uses without declaring them.

    ``<podcast:transcript>`` or ``<itunes:duration>`` in a feed that forgot
    ``xmlns:podcast``/``xmlns:itunes`` is not namespace-well-formed XML: a strict parser refuses
    it and feedparser falls back to a loose parser. Declaring the prefix is what the publisher meant.
    """
    root = _ROOT_ELEMENT.search(data)
    if root is None:
        return data
    m = _ROOT_START.match(data, root.start())
    if m is None:
        return data
    missing = [
        prefix for prefix in KNOWN_PREFIXES
        if re.search(rb"[<\s/]" + prefix.encode() + rb":[A-Za-z_]", data)
        and not re.search(rb"xmlns:" + prefix.encode() + rb"\s*=", data)
    ]
    if not missing:
        return data
    decls = b"".join(b' xmlns:%s="%s"' % (p.encode(), KNOWN_PREFIXES[p].encode()) for p in missing)
    return data[: m.end()] + decls + data[m.end():]


def _ns_matches(tag: str, ns: str, local: str) -> bool:
    """``tag`` (``{uri}local``) is ``local`` in ``ns`` or in one of its variants seen in the wild."""
    if not tag.startswith("{"):
        return False
    uri, _, name = tag[1:].partition("}")
    return name == local and uri.lower() in {a.lower() for a in _NS_ALIASES.get(ns, {ns})}


def _children(el, ns: str, local: str) -> list:
    return [c for c in el if isinstance(c.tag, str) and _ns_matches(c.tag, ns, local)]


def _resolve(base: str | None, url: str | None) -> str | None:
    """``url`` trimmed and resolved against ``base`` (the feed's URL or file path, then any xml:base)."""
    url = (url or "").strip()
    if not url:
        return None
    return urljoin(base, url) if base else url


def _base_of(el, base: str | None) -> str | None:
    xb = el.get(XML_BASE)
    return _resolve(base, xb) if xb and xb.strip() else base


def _int(value) -> int | None:
    """A positive whole number from a publisher's attribute or text, else None (0 means unknown)."""
    try:
        n = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return n if n > 0 else None


@dataclass
class _Enclosure:
    url: str
    type: str | None
    length: int | None
    medium: str | None = None  # media:content's medium="audio"


_AUDIO_EXTENSIONS = (".mp3", ".m4a", ".m4b", ".aac", ".ogg", ".oga", ".opus", ".wav", ".flac", ".mpga")
_VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".webm")
_UNTYPED = ("", "application/octet-stream", "binary/octet-stream")


def _audio_rank(enc: _Enclosure) -> int | None:
    """3 audio, 2 unknown (may be audio), 1 video (its audio track); None: not audio at all."""
    kind = (enc.type or "").split(";")[0].strip().lower()
    medium = (enc.medium or "").strip().lower()
    path = enc.url.split("?")[0].split("#")[0].lower()
    if kind.startswith("audio/") or medium == "audio":
        return 3
    if kind in _UNTYPED and not medium:
        if path.endswith(_AUDIO_EXTENSIONS):
            return 3
        return 1 if path.endswith(_VIDEO_EXTENSIONS) else 2
    if kind.startswith("video/") or medium == "video":
        return 1
    return None


def choose_enclosure(enclosures: list[_Enclosure]) -> tuple[_Enclosure | None, str | None]:
    """The audio among an item's enclosures: by type (audio, then untyped, then video), then by size.

    The largest of equals wins (a short one is often a trailer or a low-bitrate copy); document
    order breaks ties. Returns (enclosure, None) or (None, why none fits).
    """
    if not enclosures:
        return None, "no enclosure"
    ranked = [(r, e) for e in enclosures if (r := _audio_rank(e)) is not None]
    if not ranked:
        kinds = ", ".join(sorted({e.type or e.medium or "no type" for e in enclosures}))
        return None, f"no audio enclosure ({kinds})"
    best = max(ranked, key=lambda re_: (re_[0], re_[1].length or 0))  # max() keeps the first of equals
    return best[1], None


@dataclass
class AlternateEnclosure:
    """A ``<podcast:alternateEnclosure>``: another rendition of the episode's media, from its http(s) sources."""

    url: str                       # the first http(s) <podcast:source> (torrents and IPFS are not fetched)
    type: str | None
    length: int | None
    bitrate: float | None          # bits per second, as the feed says
    default: bool = False          # describes the main enclosure itself
    integrity: str | None = None   # <podcast:integrity type="sri">: "sha256-<base64>" (or sha384/sha512)
    title: str | None = None


def _alternates(item, base: str | None) -> list[AlternateEnclosure]:
    out = []
    for ae in _children(item, PODCAST_NS, "alternateEnclosure"):
        sources = [url for src in _children(ae, PODCAST_NS, "source")
                   if (url := _resolve(_base_of(src, base), src.get("uri"))) and url.startswith(("http://", "https://"))]
        if not sources:
            continue
        sri = next(((i.get("value") or "").strip() for i in _children(ae, PODCAST_NS, "integrity")
                    if (i.get("type") or "").strip().lower() == "sri" and (i.get("value") or "").strip()), None)
        try:
            bitrate = float(ae.get("bitrate")) if ae.get("bitrate") else None
        except ValueError:
            bitrate = None
        out.append(AlternateEnclosure(url=sources[0], type=(ae.get("type") or "").strip() or None,
                                      length=_int(ae.get("length")),
                                      bitrate=bitrate if bitrate and math.isfinite(bitrate) and bitrate > 0 else None,
                                      default=(ae.get("default") or "").strip().lower() == "true", integrity=sri,
                                      title=(ae.get("title") or "").strip() or None))
    return out


def prefer_download(enclosure: _Enclosure, alternates: list[AlternateEnclosure],
                    duration_sec: float | None) -> AlternateEnclosure | None:
    """The audio alternate to download instead of ``enclosure``, when it is smaller; else None.

    Less transfer for the same words: among the audio alternates that are not the enclosure itself, the
    lowest bitrate wins when it is below the enclosure's (the ``default="true"`` alternate's bitrate,
    else length x 8 / duration); without bitrates, the smaller length when both are known. Nothing
    known to compare: the enclosure stays.
    """
    main_bitrate = next((a.bitrate for a in alternates if a.default and a.bitrate), None)
    if main_bitrate is None and enclosure.length and duration_sec:
        main_bitrate = enclosure.length * 8 / duration_sec
    best, best_size = None, None
    for alt in alternates:
        if alt.default or alt.url == enclosure.url or not (alt.type or "").lower().startswith("audio/"):
            continue
        if alt.bitrate and main_bitrate:
            smaller = alt.bitrate < main_bitrate
            size = alt.bitrate
        elif alt.length and enclosure.length:
            smaller = alt.length < enclosure.length
            size = alt.length * 8 / duration_sec if duration_sec else alt.length
        else:
            continue
        if smaller and (best_size is None or size < best_size):
            best, best_size = alt, size
    return best


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
