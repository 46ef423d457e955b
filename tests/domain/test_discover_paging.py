"""Paged feeds (RFC 5005 rel="next") on a loopback server: 1,200 items in 12 pages, requests counted per poll."""

import pytest

from tests.support.cdn import Fault
from tests.support.feeds import serve_paged_feed
from podinsight_dagster.fetch.catalog import Catalog, FeedSpec
from podinsight_dagster.fetch.discover import discover
from podinsight_dagster.services import build_services
from podinsight_dagster.settings import Settings


def _poll(cdn, catalog):
    before = len(cdn.requests)
    result = discover(build_services(Settings.from_env()), catalog, write_manifest=False)
    feed_requests = [r for r in cdn.requests[before:] if r.path.startswith("/feeds/")]
    return result.feeds[0], result, feed_requests


@pytest.fixture
def paged(settings, demo_cdn):
    entry = serve_paged_feed(demo_cdn, "archive", 1200, 100)
    return Catalog(feeds=[FeedSpec(entry["slug"], entry["url"], 3)])


def test_first_poll_walks_the_pages_later_polls_stop_at_nothing_new(paged, demo_cdn):
    feed, result, reqs = _poll(demo_cdn, paged)
    assert feed.status == "ok" and feed.pages == 12 and len(reqs) == 12
    assert feed.episodes == 1200 and feed.new == 1200 and len(result.manifest_rows) == 1200
    # unchanged: one conditional request, answered 304
    feed, _, reqs = _poll(demo_cdn, paged)
    assert feed.status == "not_modified" and len(reqs) == 1 and reqs[0].status == 304 and feed.episodes == 1200
    # five new episodes on top (every page shifts by five): page 1 has them, page 2 has nothing new
    serve_paged_feed(demo_cdn, "archive", 1205, 100)
    feed, _, reqs = _poll(demo_cdn, paged)
    assert feed.status == "ok" and feed.new == 5 and len(reqs) == 2 and feed.episodes == 1205


def test_a_failing_page_keeps_the_earlier_pages_and_the_next_poll_resumes_there(paged, demo_cdn):
    demo_cdn.set_fault("/feeds/archive-p5.xml", Fault(status=404))
    feed, result, reqs = _poll(demo_cdn, paged)
    assert feed.status == "partial" and feed.new == 400 and len(reqs) == 5
    assert "page 5" in feed.error and "archive-p5.xml" in feed.error and "404" in feed.error
    demo_cdn.set_fault("/feeds/archive-p5.xml", None)
    feed, _, reqs = _poll(demo_cdn, paged)  # page 1 is unchanged (304), then pages 5 to 12
    assert feed.status == "ok" and feed.error is None and feed.new == 800 and feed.episodes == 1200
    assert [r.path for r in reqs] == ["/feeds/archive.xml"] + [f"/feeds/archive-p{n}.xml" for n in range(5, 13)]
    feed, _, reqs = _poll(demo_cdn, paged)
    assert feed.status == "not_modified" and len(reqs) == 1


def test_the_page_bound_is_a_setting_and_the_back_catalogue_continues_next_poll(paged, demo_cdn, monkeypatch):
    monkeypatch.setenv("PODINSIGHT_FEED_MAX_PAGES", "5")
    feed, _, reqs = _poll(demo_cdn, paged)
    assert feed.status == "ok" and len(reqs) == 5 and feed.new == 500
    feed, _, reqs = _poll(demo_cdn, paged)  # 304 on page 1, then four more pages (the bound counts page 1)
    assert len(reqs) == 5 and feed.new == 400 and feed.episodes == 900
    feed, _, reqs = _poll(demo_cdn, paged)
    assert len(reqs) == 4 and feed.new == 300 and feed.episodes == 1200
    feed, _, reqs = _poll(demo_cdn, paged)
    assert feed.status == "not_modified" and len(reqs) == 1


def test_a_page_seen_before_ends_the_walk(settings, demo_cdn):
    entry = serve_paged_feed(demo_cdn, "loop", 30, 10)
    page3 = demo_cdn.url("/feeds/loop-p3.xml")
    body = (b'<?xml version="1.0"?><rss version="2.0" xmlns:atom="http://www.w3.org/2005/Atom"><channel>'
            b'<title>loop</title><atom:link rel="next" href="' + demo_cdn.url("/feeds/loop-p2.xml").encode()
            + b'"/><item><guid>x-1</guid><enclosure url="http://127.0.0.1/a.mp3" type="audio/mpeg"/></item>'
            b'</channel></rss>')
    demo_cdn.add_file("/feeds/loop-p3.xml", body, "application/rss+xml")
    feed, _, reqs = _poll(demo_cdn, Catalog(feeds=[FeedSpec("loop", entry["url"], 3)]))
    assert feed.status == "ok" and len(reqs) == 3 and feed.episodes == 21 and page3 in {demo_cdn.url(r.path)
                                                                                        for r in reqs}


def test_newest_per_feed_picks_by_date_and_undated_last():
    from podinsight_dagster.fetch.discover import newest_per_feed

    rows = [("a/1", "a", "2026-01-05T09:00:00Z"), ("a/3", "a", "2026-01-19T09:00:00Z"), ("a/x", "a", None),
            ("a/2", "a", "2026-01-12T09:00:00Z"), ("b/1", "b", None), ("b/2", "b", None)]
    assert newest_per_feed(rows, 2) == {"a/3", "a/2", "b/1", "b/2"}
    assert newest_per_feed(rows, 1) == {"a/3", "b/1"} and newest_per_feed(rows, 0) == set()
