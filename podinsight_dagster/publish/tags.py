"""The item-level Podcasting 2.0 tags a publisher pastes into a feed, and an enriched copy of the feed.

For each episode of a feed, the files the pipeline made (stage layout) are linked from a public base URL
(``PODINSIGHT_PUBLISH_BASE_URL``: where the stage bucket is served):

* ``<podcast:transcript>``: the JSON transcript (``application/json``), and as captions (``rel="captions"``)
  the WebVTT and the SRT made by the namespace's rules;
* ``<podcast:chapters>`` (``application/json+chapters``);
* ``<podcast:soundbite>``: up to 3 passages that stand alone (chapters/soundbites.json).

Only files that exist are linked. The enriched copy is the feed's own text with the tags inserted before
each matching item's end (matched as discovery keys episodes: GUID, else enclosure URL), the
``podcast`` namespace declared on the root when missing; nothing else in the feed changes, except that
it is re-encoded as UTF-8 without a DOCTYPE (as every feed is read: fetch/feeds.py). A feed whose owner
says ``<podcast:locked>yes</podcast:locked>`` (no copies on other platforms) gets no copy: only the tags.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

from podinsight_dagster.fetch.feeds import (PODCAST_NS, FeedParseError, _podcast_extras, choose_enclosure,
                                            declare_missing_namespaces, defuse)
from podinsight_dagster.store import layout
from podinsight_dagster.store.keys import EpisodeKey, InvalidKeyError
from podinsight_dagster.store.keys import guid_key as make_guid_key
from podinsight_dagster.transcribe.podcast20 import JSON_TYPE, SRT_TYPE

CHAPTERS_TYPE = "application/json+chapters"


class PublishError(ValueError):
    """Tags that cannot be made (no base URL, a feed that cannot be matched); one sentence."""


@dataclass
class EpisodeTags:
    partition_key: str
    guid: str | None
    title: str | None
    tags: list[str] = field(default_factory=list)


def public_url(base_url: str, key: str) -> str:
    return base_url.rstrip("/") + "/" + "/".join(part for part in key.split("/"))


def episode_tags(stage, pk: str, base_url: str, present: set[str] | None = None) -> list[str]:
    """The tags of one episode, for the stage files that exist (none when it is not transcribed).

    ``present``: the stage keys known to exist (one listing for a whole feed); else each is asked.
    """
    ek = EpisodeKey.parse(pk)

    def exists(key: str) -> bool:
        return key in present if present is not None else stage.exists(key)

    language = None
    if exists(layout.kpis_key(ek)):
        language = (stage.get_json(layout.kpis_key(ek)) or {}).get("language") or None
    lang = f" language={quoteattr(language)}" if language else ""
    tags = []
    for key, mime, rel in ((layout.podcast_json_key(ek), JSON_TYPE, None),
                           (layout.vtt_key(ek), "text/vtt", "captions"),
                           (layout.podcast_srt_key(ek), SRT_TYPE, "captions")):
        if exists(key):
            tags.append(f"<podcast:transcript url={quoteattr(public_url(base_url, key))} type={quoteattr(mime)}"
                        f"{lang}{' rel=' + quoteattr(rel) if rel else ''} />")
    if exists(layout.chapters_key(ek)):
        tags.append(f"<podcast:chapters url={quoteattr(public_url(base_url, layout.chapters_key(ek)))} "
                    f"type={quoteattr(CHAPTERS_TYPE)} />")
    soundbites_key = layout.soundbites_key(ek)
    if exists(soundbites_key):
        for bite in (stage.get_json(soundbites_key) or {}).get("soundbites", [])[:3]:
            tags.append(f"<podcast:soundbite startTime=\"{float(bite['startTime']):.1f}\" "
                        f"duration=\"{float(bite['duration']):.1f}\">{escape(bite.get('title') or '')}"
                        "</podcast:soundbite>")
    return tags


def feed_tags(services, slug: str, base_url: str | None) -> list[EpisodeTags]:
    """The tags of every episode the checkpoint store knows of feed ``slug``, in discovery order."""
    if not base_url or not base_url.startswith(("http://", "https://")):
        raise PublishError("set PODINSIGHT_PUBLISH_BASE_URL (or --base-url) to the http(s) address where the "
                           f"stage bucket is served, not {base_url!r}" if base_url else
                           "set PODINSIGHT_PUBLISH_BASE_URL (or --base-url) to the http(s) address where the "
                           "stage bucket is served: the tags link files there")
    present = set(services.stage.list_keys(f"{slug}/"))  # one listing, not a request per file
    return [EpisodeTags(r.partition_key, r.guid, r.title,
                        episode_tags(services.stage, r.partition_key, base_url, present))
            for r in services.checkpoints.episodes(feed_slug=slug)]


def tags_text(episodes: list[EpisodeTags]) -> str:
    """The tags to paste, item by item (an XML comment names each item by GUID and title)."""
    out = []
    for ep in episodes:
        if ep.tags:
            title = (ep.title or "").replace("--", "- -")
            guid = (ep.guid or "").replace("--", "- -")
            out.append(f"<!-- item guid {guid}: {title} -->")
            out += ep.tags
    return "\n".join(out) + ("\n" if out else "")


_ITEM = re.compile(rb"<(item|entry)(?=[\s>/])[^>]*>(.*?)</\1\s*>", re.DOTALL)
_ROOT_TAG = re.compile(rb"<(rss|feed)(?=[\s>])[^>]*>")


def enrich_feed(content: bytes, episodes: list[EpisodeTags], *, feed_slug: str, base_url: str | None = None,
                source: str = "feed") -> tuple[bytes, int]:
    """The feed with each episode's tags inserted in its item; returns the bytes and how many items got tags.

    An item's existing ``<podcast:chapters>`` is kept (the publisher's own), ours then left out.
    """
    data = declare_missing_namespaces(defuse(content, source))
    parsed = _podcast_extras(data, base_url)
    if parsed is None:
        raise FeedParseError(f"{source}: not well-formed XML, so it cannot be copied with tags inserted")
    chan, extras = parsed
    if chan.get("locked"):
        owner = f" (owner {chan['locked_owner']})" if chan.get("locked_owner") else ""
        raise PublishError(f"{source} is podcast:locked{owner}: its owner does not allow copies of the feed "
                           "elsewhere; paste the tags (podrun publish without --feed-copy) into the original instead")
    spans = list(_ITEM.finditer(data))
    if len(spans) != len(extras):
        raise FeedParseError(f"{source}: its items could not be matched one to one ({len(spans)} found as text, "
                             f"{len(extras)} as XML)")
    by_key = {EpisodeKey.parse(e.partition_key).guid_key: e.tags for e in episodes if e.tags}
    out, pos, enriched = [], 0, 0
    for span, extra in zip(spans, extras):
        enclosure, _ = choose_enclosure(extra["enclosures"])
        try:
            key = make_guid_key(extra["guid"], enclosure.url if enclosure else None)
        except InvalidKeyError:
            continue
        tags = by_key.get(key)
        if not tags:
            continue
        body = span.group(2)
        if re.search(rb"<podcast:chapters[\s/>]", body):
            tags = [t for t in tags if not t.startswith("<podcast:chapters")]
        end = span.end() - len(re.search(rb"</(?:item|entry)\s*>$", span.group(0)).group(0))
        indent = b"\n      "
        out.append(data[pos:end])
        out.append(b"".join(indent + t.encode() for t in tags) + b"\n    ")
        pos = end
        enriched += 1
    out.append(data[pos:])
    doc = b"".join(out)
    root = _ROOT_TAG.search(doc)
    if root and b"xmlns:podcast=" not in root.group(0):
        insert = root.start() + 1 + len(root.group(1))
        doc = doc[:insert] + f' xmlns:podcast="{PODCAST_NS}"'.encode() + doc[insert:]
    return doc, enriched


def soundbites_json(bites: list[dict]) -> bytes:
    return json.dumps({"soundbites": bites}, ensure_ascii=False).encode()
