import pytest

from podinsight_dagster.demo.run import CONTENT
from podinsight_dagster.fetch.catalog import CatalogError, load_catalog
from podinsight_dagster.fetch.feeds import FeedParseError, parse_duration, parse_feed
from podinsight_dagster.store.keys import guid_key

RSS = b"""<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0" xmlns:itunes="http://www.itunes.com/dtds/podcast-1.0.dtd"
     xmlns:podcast="https://podcastindex.org/namespace/1.0" xmlns:atom="http://www.w3.org/2005/Atom">
<channel>
  <title>Show</title><link>https://show.example</link>
  <itunes:new-feed-url>https://new.example/feed.xml</itunes:new-feed-url>
  <atom:link rel="next" href="https://show.example/feed?page=2"/>
  <item>
    <title>One</title><guid isPermaLink="false">ep-1</guid>
    <pubDate>Mon, 05 Jan 2026 09:00:00 +0100</pubDate>
    <enclosure url="https://cdn.example/1.mp3" type="audio/mpeg" length="1234"/>
    <itunes:duration>01:02:03</itunes:duration>
    <podcast:transcript url="https://show.example/1.vtt" type="text/vtt" language="en"/>
    <podcast:transcript url="https://show.example/1.json" type="application/json" rel="captions"/>
    <podcast:chapters url="https://show.example/1.chapters.json" type="application/json+chapters"/>
  </item>
  <item><title>No audio</title><guid>ep-2</guid></item>
  <item>
    <title>No guid</title>
    <enclosure url="https://cdn.example/3.mp3" type="audio/mpeg" length="bogus"/>
    <itunes:duration>754</itunes:duration>
  </item>
</channel></rss>"""


def test_parse_rss_with_itunes_and_podcasting20_tags():
    feed = parse_feed(RSS)
    assert feed.title == "Show"
    assert feed.new_feed_url == "https://new.example/feed.xml"
    assert feed.next_page_url == "https://show.example/feed?page=2"
    assert len(feed.episodes) == 2 and len(feed.skipped) == 1 and "no enclosure" in feed.skipped[0]
    one, three = feed.episodes
    assert one.guid == "ep-1" and one.guid_key == "ep-1"
    assert one.published == "2026-01-05T08:00:00Z"  # converted to UTC
    assert (one.enclosure_url, one.enclosure_type, one.enclosure_length) == ("https://cdn.example/1.mp3", "audio/mpeg", 1234)
    assert one.duration_sec == 3723
    assert [t.url for t in one.transcripts] == ["https://show.example/1.vtt", "https://show.example/1.json"]
    assert one.transcripts[0].language == "en" and one.transcripts[1].rel == "captions"
    assert one.chapters_url == "https://show.example/1.chapters.json"
    assert three.guid is None and three.guid_key == guid_key(None, "https://cdn.example/3.mp3")
    assert three.enclosure_length is None and three.duration_sec == 754


@pytest.mark.parametrize("value, seconds", [
    ("01:02:03", 3723), ("02:03", 123), ("754", 754), ("12.5", 12.5), ("0:00:45", 45),
    ("", None), (None, None), ("soon", None),
])
def test_itunes_duration_forms(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("content", [b"", b"   ", b"<html><body>Not found</body></html>", b"\x00\x01garbage"])
def test_malformed_feed_gives_clear_error(content):
    with pytest.raises(FeedParseError) as err:
        parse_feed(content, source="feed bad")
    assert "feed bad" in str(err.value)


def test_bundled_demo_feeds_parse_with_safe_unique_keys():
    keys = []
    counts = {}
    for xml in sorted((CONTENT / "feeds").glob("*.xml")):
        feed = parse_feed(xml.read_bytes())
        assert not feed.skipped
        keys += [e.guid_key for e in feed.episodes]
        counts[xml.stem] = len(feed.episodes)
    # science-weekly is a paged feed (RFC 5005): two episodes, the third on its next page
    assert counts == {"tech-talk": 3, "history-hour": 3, "science-weekly": 2, "science-weekly-page2": 1}
    assert len(set(keys)) == len(keys) == 9


def test_catalog_loads_tier_files_and_rejects_bad_slugs(tmp_path):
    (tmp_path / "tier1_feeds.yaml").write_text(
        "feeds:\n  - {slug: a-show, url: 'https://a.example/feed', tier: 1}\nhost_limits:\n  cdn.example: 2\n")
    (tmp_path / "tier2_feeds.yaml").write_text("feeds:\n  - {slug: b-show, url: 'https://b.example/feed', tier: 2}\n")
    cat = load_catalog(tmp_path)
    assert [f.slug for f in cat.feeds] == ["a-show", "b-show"] and cat.host_limits == {"cdn.example": 2}
    (tmp_path / "tier3_feeds.yaml").write_text("feeds:\n  - {slug: 'Bad Slug', url: 'https://c.example'}\n")
    with pytest.raises(CatalogError, match="Bad Slug"):
        load_catalog(tmp_path)
