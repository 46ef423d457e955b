"""A feed's XML made safe and readable before parsing: the DOCTYPE removed, undeclared prefixes declared,
and the namespace-tolerant element helpers feeds.py and enclosures.py read Podcasting 2.0 tags with.

Why defuse: see fetch/feeds.py (a feed is untrusted XML; feedparser's own entity stripping misses a one-line
DOCTYPE).
"""

from __future__ import annotations

import re
from urllib.parse import urljoin

from feedparser.encodings import convert_to_utf8


class FeedParseError(ValueError):
    """A feed that cannot be read as a podcast feed."""


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
