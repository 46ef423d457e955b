"""Small feeds of given MP3s on the test CDN, added to the catalog beside (or instead of) the demo feeds."""

from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import escape

import yaml

from tests.support.cdn import PodcastCDN


def serve_feed(cdn: PodcastCDN, slug: str, episodes: list[tuple[str, Path]], *, seconds: float = 30.0) -> dict:
    """An RSS feed ``slug`` with one item per (guid, mp3 file), served by ``cdn``; returns its catalog entry."""
    items = []
    for i, (guid, mp3) in enumerate(episodes, 1):
        path = f"/audio/{slug}/{guid}.mp3"
        cdn.add_file(path, Path(mp3), content_type="audio/mpeg")
        items.append(f"<item><title>{escape(slug)} {i}</title><guid isPermaLink=\"false\">{escape(guid)}</guid>"
                     f"<pubDate>Mon, {i:02d} Jun 2026 09:00:00 +0000</pubDate><itunes:duration>{seconds:.0f}"
                     f"</itunes:duration><enclosure url=\"{cdn.url(path)}\" type=\"audio/mpeg\" "
                     f"length=\"{Path(mp3).stat().st_size}\"/></item>")
    cdn.add_file(f"/feeds/{slug}.xml", (
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><rss version=\"2.0\" "
        "xmlns:itunes=\"http://www.itunes.com/dtds/podcast-1.0.dtd\"><channel>"
        f"<title>{escape(slug)}</title><link>{cdn.url('/')}</link><description>test feed</description>"
        f"<language>en</language>{''.join(items)}</channel></rss>").encode(), content_type="application/rss+xml")
    return {"slug": slug, "url": cdn.url(f"/feeds/{slug}.xml"), "tier": 3}


def add_to_catalog(feeds_dir: Path, entries: list[dict]) -> Path:
    """Write ``entries`` as the catalog's tier-3 file (the demo catalog uses tiers 1 and 2)."""
    path = feeds_dir / "tier3_feeds.yaml"
    path.write_text(yaml.safe_dump({"feeds": entries}, sort_keys=False))
    return path


def paged_feed_pages(base_url: str, slug: str, total: int, per_page: int, *, audio_path: str,
                     first: int = 1) -> dict[str, bytes]:
    """A paged RSS feed (RFC 5005 ``rel="next"``) of items ``first``..``total``, newest first, ``per_page``
    to a page: page 1 at ``/feeds/<slug>.xml``, page n at ``/feeds/<slug>-p<n>.xml``; returns path -> bytes.

    Every item's enclosure is ``audio_path`` (the test about paging never downloads).
    """
    numbers = list(range(total, first - 1, -1))
    chunks = [numbers[i:i + per_page] for i in range(0, len(numbers), per_page)]
    pages = {}
    for n, chunk in enumerate(chunks, 1):
        path = f"/feeds/{slug}.xml" if n == 1 else f"/feeds/{slug}-p{n}.xml"
        nxt = (f'<atom:link rel="next" href="{base_url.rstrip("/")}/feeds/{slug}-p{n + 1}.xml"/>'
               if n < len(chunks) else "")
        items = "".join(
            f"<item><title>{escape(slug)} {i}</title><guid isPermaLink=\"false\">{escape(slug)}-{i:05d}</guid>"
            f"<pubDate>{_day(i)}</pubDate><enclosure url=\"{base_url.rstrip('/')}{audio_path}?n={i}\" "
            f"type=\"audio/mpeg\" length=\"1000\"/></item>" for i in chunk)
        pages[path] = (
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><rss version=\"2.0\" "
            "xmlns:atom=\"http://www.w3.org/2005/Atom\"><channel>"
            f"<title>{escape(slug)}</title><link>{base_url}</link><description>paged test feed</description>"
            f"{nxt}{items}</channel></rss>").encode()
    return pages


def _day(i: int) -> str:
    """A distinct publication time per item number (newer numbers are newer), in RFC 822."""
    from datetime import datetime, timedelta, timezone
    from email.utils import format_datetime

    return format_datetime(datetime(2020, 1, 1, tzinfo=timezone.utc) + timedelta(hours=i))


def serve_paged_feed(cdn: PodcastCDN, slug: str, total: int, per_page: int, *, audio_path: str = "/audio/x.mp3",
                     first: int = 1) -> dict:
    """Serve :func:`paged_feed_pages` on ``cdn``; returns the catalog entry of page 1."""
    for path, body in paged_feed_pages(cdn.base_url, slug, total, per_page, audio_path=audio_path,
                                       first=first).items():
        cdn.add_file(path, body, content_type="application/rss+xml")
    return {"slug": slug, "url": cdn.url(f"/feeds/{slug}.xml"), "tier": 3}
