"""Feeds as publishers write them: one fixture feed per case under tests/fixtures/feeds/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from podinsight_dagster.fetch.feeds import declare_missing_namespaces, parse_duration, parse_feed
from podinsight_dagster.store.keys import guid_key

FEEDS = Path(__file__).resolve().parents[1] / "fixtures" / "feeds"
FEED_URL = "https://feeds.example/shows/rel/feed.xml"


def read(name: str, base_url: str | None = FEED_URL):
    return parse_feed((FEEDS / name).read_bytes(), source=name, base_url=base_url)


def test_whitespace_around_urls_and_guids_is_trimmed():
    [ep] = read("whitespace.xml").episodes
    assert ep.guid == ep.guid_key == "spaces-ep-1"
    assert (ep.enclosure_url, ep.enclosure_type, ep.enclosure_length) == (
        "https://cdn.example/spaces/ep1.mp3", "audio/mpeg", 4096)
    assert [t.url for t in ep.transcripts] == ["https://cdn.example/spaces/ep1.vtt"]
    assert ep.chapters_url == "https://cdn.example/spaces/ep1.chapters.json"
    assert ep.duration_sec == 754


def test_relative_urls_resolve_against_the_feed_url_and_xml_base():
    one, two, three, four = read("relative-urls.xml").episodes
    assert one.enclosure_url == "https://feeds.example/shows/rel/audio/ep1.mp3"
    assert [t.url for t in one.transcripts] == ["https://feeds.example/shows/transcripts/ep1.srt"]
    assert one.chapters_url == "https://feeds.example/chapters/ep1.json"
    assert two.enclosure_url == "https://media.example/season2/ep2.mp3"  # xml:base on the item
    assert [t.url for t in two.transcripts] == ["https://media.example/season2/ep2.vtt"]
    assert three.enclosure_url == "https://feeds.example/shows/rel/mirror/ep3.mp3"  # relative xml:base
    assert four.enclosure_url == "https://cdn.example/ep4.mp3"
    # xml:base never touches GUIDs (feedparser resolves them as if they were URLs, even leaking
    # the previous item's xml:base into the next one).
    assert [e.guid for e in (one, two, three, four)] == ["rel-1", "rel-2", "rel-3", "rel-4"]


def test_relative_urls_against_a_file_path_and_without_a_base():
    path = str(FEEDS / "relative-urls.xml")
    assert read("relative-urls.xml", base_url=path).episodes[0].enclosure_url == str(FEEDS / "audio" / "ep1.mp3")
    # With no base the URL is kept as written (trimmed): nothing is invented.
    assert read("relative-urls.xml", base_url=None).episodes[0].enclosure_url == "audio/ep1.mp3"


def test_redirected_feed_resolves_against_where_it_was_read():
    # discover passes the URL after redirects: a moved feed's relative URLs follow it.
    feed = read("relative-urls.xml", base_url="https://new-host.example/podcast/feed.xml")
    assert feed.episodes[0].enclosure_url == "https://new-host.example/podcast/audio/ep1.mp3"


def test_media_rss_and_choosing_the_audio_among_several_enclosures():
    one, two, three, four = read("media-rss.xml").episodes
    assert (one.enclosure_url, one.enclosure_type, one.enclosure_length) == (
        "https://cdn.example/media/ep1.mp3", "audio/mpeg", 5000)
    # media:group: the image is not audio; of the two audio files the larger one
    assert (two.enclosure_url, two.enclosure_length) == ("https://cdn.example/media/ep2-128k.m4a", 6000)
    # several <enclosure>: audio by type, then by size; media:content is only used without <enclosure>
    assert three.enclosure_url == "https://cdn.example/media/ep3.mp3"
    # medium="audio" counts as audio when there is no type, and wins over video
    assert four.enclosure_url == "https://cdn.example/media/ep4-stream"


def test_podcasting20_and_itunes_tags_without_namespace_declarations():
    feed = read("undeclared-namespaces.xml")
    assert feed.itunes_type == "serial" and feed.podcast_guid == "917393e3-1b1e-5cef-ace4-edaa54e1f810"
    one, two = feed.episodes
    assert one.duration_sec == 3661 and one.number == 1
    assert [(t.url, t.type, t.language) for t in one.transcripts] == [
        ("https://cdn.example/forgot/ep1.vtt", "text/vtt", "en")]
    assert one.chapters_url == "https://cdn.example/forgot/ep1.json"
    assert two.enclosure_url == "https://cdn.example/forgot/ep2.mp3" and two.duration_sec == 95
    assert not feed.skipped


def test_declared_namespaces_are_left_alone():
    doc = b'<rss version="2.0" xmlns:itunes="http://www.itunes.com/dtds/podcast-1.0.dtd"><itunes:type/></rss>'
    assert declare_missing_namespaces(doc) == doc
    fixed = declare_missing_namespaces(b'<?xml version="1.0"?><rss version="2.0"><podcast:guid/></rss>')
    assert fixed == (b'<?xml version="1.0"?><rss xmlns:podcast="https://podcastindex.org/namespace/1.0"'
                     b' version="2.0"><podcast:guid/></rss>')


def test_item_without_guid_is_identified_by_its_enclosure_url():
    feed = read("no-guid.xml")
    missing, blank, present = feed.episodes
    assert missing.guid is None and missing.guid_derived
    assert missing.identity == "https://cdn.example/noguid/ep1.mp3?source=feed"
    assert missing.guid_key == guid_key(None, missing.identity) == guid_key(missing.identity)
    assert blank.guid_derived and blank.identity == "https://cdn.example/noguid/ep2.mp3"  # trimmed
    assert not present.guid_derived and present.identity == "noguid-3"
    doc = feed.to_dict()["episodes"]
    assert [(e["guid"], e["guid_derived"]) for e in doc] == [
        ("https://cdn.example/noguid/ep1.mp3?source=feed", True),
        ("https://cdn.example/noguid/ep2.mp3", True),
        ("noguid-3", False)]


def test_items_without_audio_are_listed_as_skipped_with_the_reason():
    feed = read("no-audio.xml")
    assert [e.guid for e in feed.episodes] == ["mixed-5"]
    assert [(s.index, s.guid, s.reason) for s in feed.skipped_items] == [
        (0, "mixed-1", "no enclosure"),
        (1, "mixed-2", "no audio enclosure (image/jpeg)"),
        (2, "mixed-3", "no audio enclosure (application/pdf)"),
        (3, "mixed-4", "no enclosure"),
    ]
    assert feed.skipped[1] == "item 1 ('Cover art only'): no audio enclosure (image/jpeg)"
    skipped = feed.to_dict()["skipped"]
    assert skipped[0] == {"index": 0, "title": "Announcement", "guid": "mixed-1", "reason": "no enclosure"}
    json.dumps(feed.to_dict())


def test_episodes_keep_the_feed_order_and_serial_is_reported():
    feed = read("serial.xml")
    assert feed.itunes_type == "serial" and feed.to_dict()["feed"]["itunes_type"] == "serial"
    assert [e.guid for e in feed.episodes] == ["serial-1", "serial-3", "serial-2"]  # not sorted by date
    assert [(e.season, e.number) for e in feed.episodes] == [(2, 1), (2, 3), (2, 2)]
    assert [e["episode"] for e in feed.to_dict()["episodes"]] == [1, 3, 2]


def test_durations_in_every_form_from_a_feed():
    feed = read("durations.xml")
    assert len(feed.episodes) == 18 and not feed.skipped
    for ep in feed.episodes:  # each item's title is what its duration should read as
        assert ep.duration_sec == (None if ep.title == "null" else float(ep.title)), ep.guid


@pytest.mark.parametrize("value, seconds", [
    ("01:02:03", 3723), ("1:02:03", 3723), ("02:03", 123), ("754", 754), ("754.25", 754.25),
    ("1:02:03.500", 3723.5), ("1:02:03,5", 3723.5), (" 45:00 ", 2700), ("PT1H2M3S", 3723), ("PT45S", 45),
    ("P1DT1S", 86401), ("0:00:45", 45),
    ("", None), ("soon", None), ("1:2:3:4", None), ("-5", None), ("12 min", None), ("NaN", None), ("inf", None),
    ("P", None), ("PT", None), ("9" * 400, None), ("1:xx", None), (":", None), ("1..2", None),
])
def test_duration_forms(value, seconds):
    assert parse_duration(value) == seconds
