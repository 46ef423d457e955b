"""OPML subscription lists (what podcast apps export) as feeds to add to the catalog.

An OPML file is ``<opml><body><outline .../></body></opml>``; a podcast is an outline with an
``xmlUrl`` (``type="rss"`` usually, though some apps leave ``type`` out), titled by ``text``
or ``title``; outlines nest (folders). The file is untrusted XML: it is parsed with defusedxml,
which refuses entity declarations and external references.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.etree.ElementTree import ParseError

from defusedxml import DefusedXmlException
from defusedxml import ElementTree as SafeET


class OPMLError(ValueError):
    """A file that is not a readable OPML subscription list (the message is one sentence)."""


@dataclass(frozen=True)
class Subscription:
    url: str
    title: str | None


def _local(tag) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def parse_opml(content: bytes, source: str = "OPML file") -> list[Subscription]:
    """The feeds an OPML file lists, in document order (nested outlines included).

    Outlines without an ``xmlUrl`` are folders or links and are not feeds; a URL that is not
    http(s) is refused in the same sentence as the rest, since the catalog could not poll it.
    """
    try:
        root = SafeET.fromstring(content)
    except DefusedXmlException as exc:
        raise OPMLError(f"{source} is not a usable OPML file: it declares entities or external references "
                        f"({type(exc).__name__})") from None
    except ParseError as exc:
        raise OPMLError(f"{source} is not valid XML ({exc})") from None
    if _local(root.tag).lower() != "opml":
        raise OPMLError(f"{source} is not an OPML file (its root element is <{_local(root.tag)}>, not <opml>)")
    body = next((el for el in root if _local(el.tag).lower() == "body"), None)
    if body is None:
        raise OPMLError(f"{source} is not a usable OPML file: it has no <body>")
    subs: list[Subscription] = []
    for outline in body.iter():
        if _local(outline.tag).lower() != "outline":
            continue
        url = (outline.get("xmlUrl") or outline.get("xmlurl") or "").strip()
        if not url:
            continue
        if not url.lower().startswith(("http://", "https://")):
            raise OPMLError(f"{source}: feed {url!r} is not an http(s) URL")
        title = " ".join((outline.get("text") or outline.get("title") or "").split()) or None
        subs.append(Subscription(url=url, title=title))
    if not subs:
        raise OPMLError(f"{source} lists no feeds (no <outline> with an xmlUrl)")
    return subs
