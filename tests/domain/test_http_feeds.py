"""Feeds over HTTP: conditional GET, permanent redirects, RSS and Atom with podcast tags, paging."""

from __future__ import annotations

import re
from datetime import datetime, timezone

import pytest

from podinsight_dagster import USER_AGENT
from tests.support.cdn import Fault
from podinsight_dagster.fetch.feeds import parse_feed
from podinsight_dagster.fetch.http import ContentRejectedError, PermanentFetchError

from .test_http_support import make_client, serve_audio


@pytest.fixture
def cdn():
    yield from serve_audio()

RSS_PAGE_1 = b"""<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0" xmlns:itunes="http://www.itunes.com/dtds/podcast-1.0.dtd"
     xmlns:podcast="https://podcastindex.org/namespace/1.0" xmlns:atom="http://www.w3.org/2005/Atom">
<channel>
  <title>Paged show</title><link>https://show.example</link>
  <podcast:guid>917393e3-1b1e-5cef-ace4-edaa54e1f810</podcast:guid>
  <atom:link rel="self" href="{base_url}/feed.xml"/>
  <atom:link rel="next" href="{base_url}/feed-2.xml"/>
  <item>
    <title>Two</title><guid isPermaLink="false">ep-2</guid>
    <pubDate>Tue, 06 Jan 2026 10:00:00 GMT</pubDate>
    <enclosure url="{base_url}/2.mp3" type="audio/mpeg" length="2000"/>
    <itunes:duration>3600</itunes:duration>
    <podcast:transcript url="{base_url}/2.vtt" type="text/vtt" language="en"/>
    <podcast:transcript url="{base_url}/2.srt" type="application/x-subrip" language="de" rel="captions"/>
    <podcast:transcript url="{base_url}/2.json" type="application/json"/>
    <podcast:chapters url="{base_url}/2.chapters.json" type="application/json+chapters"/>
  </item>
</channel></rss>"""

RSS_PAGE_2 = b"""<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0" xmlns:itunes="http://www.itunes.com/dtds/podcast-1.0.dtd">
<channel><title>Paged show</title>
  <item><title>One</title><guid>ep-1</guid><pubDate>Mon, 05 Jan 2026 10:00:00 GMT</pubDate>
    <enclosure url="{base_url}/1.mp3" type="audio/mpeg" length="1000"/><itunes:duration>59:30</itunes:duration></item>
</channel></rss>"""

ATOM = b"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xmlns:itunes="http://www.itunes.com/dtds/podcast-1.0.dtd"
      xmlns:podcast="https://podcastindex.org/namespace/1.0">
  <title>Atom show</title>
  <podcast:guid>c2d8c6e4-0000-5000-8000-000000000007</podcast:guid>
  <id>urn:uuid:60a76c80-d399-11d9-b93C-0003939e0af6</id>
  <updated>2026-01-07T12:00:00Z</updated>
  <link rel="alternate" href="https://atom.example/"/>
  <link rel="self" href="{base_url}/feed.atom"/>
  <link rel="next" href="{base_url}/feed.atom?page=2"/>
  <entry>
    <title>Atom episode</title>
    <id>tag:atom.example,2026:ep-7</id>
    <published>2026-01-07T11:30:00+01:00</published>
    <updated>2026-01-07T12:00:00Z</updated>
    <link rel="alternate" type="text/html" href="https://atom.example/ep-7"/>
    <link rel="enclosure" type="audio/mpeg" length="123456" href="{base_url}/7.mp3"/>
    <itunes:duration>1:02:03</itunes:duration>
    <podcast:transcript url="{base_url}/7.vtt" type="text/vtt" language="en"/>
    <podcast:chapters url="{base_url}/7.json" type="application/json+chapters"/>
  </entry>
  <entry>
    <title>Text only</title><id>tag:atom.example,2026:note</id><updated>2026-01-06T12:00:00Z</updated>
    <link rel="alternate" href="https://atom.example/note"/>
  </entry>
</feed>"""


def test_feed_fetch_identifies_itself_and_returns_validators(cdn):
    cdn.add_file("/feed.xml", RSS_PAGE_1)
    client, _ = make_client()
    got = client.fetch_bytes(cdn.url("/feed.xml"), accept="application/rss+xml")
    assert got.status == 200 and not got.not_modified and b"Paged show" in got.content
    assert got.etag and got.last_modified and got.permanent_redirect is None
    req = cdn.requests[0]
    assert req.headers["User-Agent"] == USER_AGENT
    assert re.fullmatch(r"PodInsight/\S+ \(\+https?://\S+\)", USER_AGENT)
    assert req.headers["Accept"] == "application/rss+xml"


def test_conditional_get_with_etag_and_last_modified(cdn):
    cdn.add_file("/feed.xml", RSS_PAGE_1, last_modified=datetime(2026, 1, 6, tzinfo=timezone.utc))
    client, _ = make_client()
    first = client.fetch_bytes(cdn.url("/feed.xml"))
    by_etag = client.fetch_bytes(cdn.url("/feed.xml"), etag=first.etag)
    assert by_etag.not_modified and by_etag.content == b"" and by_etag.etag == first.etag
    by_date = client.fetch_bytes(cdn.url("/feed.xml"), last_modified=first.last_modified)
    assert by_date.not_modified and by_date.last_modified == first.last_modified
    assert cdn.requests[1].headers["If-None-Match"] == first.etag
    assert cdn.requests[2].headers["If-Modified-Since"] == first.last_modified
    # The feed changes: the same validators now get the new body.
    cdn.add_file("/feed.xml", RSS_PAGE_1.replace(b"Two", b"Deux"))
    changed = client.fetch_bytes(cdn.url("/feed.xml"), etag=first.etag, last_modified=first.last_modified)
    assert changed.status == 200 and b"Deux" in changed.content and changed.etag != first.etag


@pytest.mark.parametrize("status", [301, 308])
def test_permanent_redirect_on_the_first_hop_is_reported(cdn, status):
    cdn.add_file("/new.xml", RSS_PAGE_1)
    cdn.set_fault("/old.xml", Fault(redirect_to="/new.xml", redirect_status=status))
    client, _ = make_client()
    got = client.fetch_bytes(cdn.url("/old.xml"))
    assert got.permanent_redirect == cdn.url("/new.xml") and got.final_url == cdn.url("/new.xml")


def test_permanent_redirect_then_temporary_reports_the_first_target(cdn):
    cdn.add_file("/final.xml", RSS_PAGE_1)
    cdn.set_fault("/old.xml", Fault(redirect_to="/moved.xml", redirect_status=301))
    cdn.set_fault("/moved.xml", Fault(redirect_to="/final.xml", redirect_status=302))
    client, _ = make_client()
    assert client.fetch_bytes(cdn.url("/old.xml")).permanent_redirect == cdn.url("/moved.xml")


@pytest.mark.parametrize("chain", [[302], [307], [302, 301], [303, 308]])
def test_temporary_first_hop_means_no_permanent_move(cdn, chain):
    cdn.add_file("/final.xml", RSS_PAGE_1)
    paths = [f"/hop{i}.xml" for i in range(len(chain))] + ["/final.xml"]
    for path, target, status in zip(paths, paths[1:], chain):
        cdn.set_fault(path, Fault(redirect_to=target, redirect_status=status))
    client, _ = make_client()
    got = client.fetch_bytes(cdn.url(paths[0]))
    assert got.permanent_redirect is None and got.final_url == cdn.url("/final.xml")


def test_feed_fetch_retries_and_gives_up_on_404(cdn):
    cdn.add_file("/feed.xml", RSS_PAGE_1)
    cdn.set_fault("/feed.xml", Fault(status=503, retry_after="2", times=1))
    client, sleeps = make_client()
    assert client.fetch_bytes(cdn.url("/feed.xml")).status == 200 and sleeps == [2.0]
    with pytest.raises(PermanentFetchError, match="HTTP 404"):
        client.fetch_bytes(cdn.url("/gone.xml"))


def test_feed_over_the_cap_is_refused_on_its_header(cdn):
    cdn.add_file("/feed.xml", RSS_PAGE_1)
    client, _ = make_client()
    with pytest.raises(ContentRejectedError, match="over the 100-byte cap"):
        client.fetch_bytes(cdn.url("/feed.xml"), max_bytes=100)


def test_paged_rss_with_every_podcast_tag(cdn):
    cdn.add_file("/feed.xml", RSS_PAGE_1)
    cdn.add_file("/feed-2.xml", RSS_PAGE_2)
    client, _ = make_client()
    feed = parse_feed(client.fetch_bytes(cdn.url("/feed.xml")).content)
    assert feed.title == "Paged show" and feed.next_page_url == cdn.url("/feed-2.xml")
    assert feed.podcast_guid == "917393e3-1b1e-5cef-ace4-edaa54e1f810"
    assert feed.to_dict()["feed"]["podcast_guid"] == feed.podcast_guid
    page2 = parse_feed(client.fetch_bytes(feed.next_page_url).content)
    assert page2.next_page_url is None and [e.guid for e in page2.episodes] == ["ep-1"]
    assert page2.episodes[0].duration_sec == 3570
    (ep,) = feed.episodes
    assert ep.guid == "ep-2" and ep.published == "2026-01-06T10:00:00Z" and ep.duration_sec == 3600
    assert (ep.enclosure_url, ep.enclosure_type, ep.enclosure_length) == (cdn.url("/2.mp3"), "audio/mpeg", 2000)
    assert [(t.url.rsplit("/", 1)[1], t.type, t.language, t.rel) for t in ep.transcripts] == [
        ("2.vtt", "text/vtt", "en", None),
        ("2.srt", "application/x-subrip", "de", "captions"),
        ("2.json", "application/json", None, None),
    ]
    assert ep.chapters_url == cdn.url("/2.chapters.json")


def test_atom_feed_with_enclosure_links(cdn):
    cdn.add_file("/feed.atom", ATOM)
    client, _ = make_client()
    got = client.fetch_bytes(cdn.url("/feed.atom"))
    feed = parse_feed(got.content, source="atom")
    assert feed.title == "Atom show" and feed.link == "https://atom.example/"
    assert feed.next_page_url == cdn.url("/feed.atom") + "?page=2"
    assert feed.podcast_guid == "c2d8c6e4-0000-5000-8000-000000000007"
    assert len(feed.episodes) == 1 and "no enclosure" in feed.skipped[0]
    ep = feed.episodes[0]
    assert ep.guid == "tag:atom.example,2026:ep-7" and ep.title == "Atom episode"
    assert (ep.enclosure_url, ep.enclosure_type, ep.enclosure_length) == (cdn.url("/7.mp3"), "audio/mpeg", 123456)
    assert ep.published == "2026-01-07T10:30:00Z" and ep.duration_sec == 3723
    assert [(t.url, t.type, t.language) for t in ep.transcripts] == [(cdn.url("/7.vtt"), "text/vtt", "en")]
    assert ep.chapters_url == cdn.url("/7.json")


def test_atom_next_link_without_the_strict_parser():
    # An undeclared entity makes the strict XML view fail; paging still comes from feedparser.
    doc = ATOM.replace(b"{base_url}", b"https://a.example").replace(b"<title>Atom show", b"<title>Atom&nbsp;show")
    feed = parse_feed(doc)
    assert feed.next_page_url == "https://a.example/feed.atom?page=2" and len(feed.episodes) == 1
