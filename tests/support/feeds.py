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
