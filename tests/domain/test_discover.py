"""discover(): polling feeds over a real loopback server."""

from tests.support.cdn import Fault
from podinsight_dagster.demo.run import CONTENT
from podinsight_dagster.fetch.catalog import Catalog, FeedSpec
from podinsight_dagster.fetch.discover import discover, read_manifest
from podinsight_dagster.services import build_services
from podinsight_dagster.settings import Settings

TECH = (CONTENT / "feeds" / "tech-talk.xml").read_bytes()


def _services():
    return build_services(Settings.from_env())


def test_bad_feeds_never_stop_the_others_and_say_why(settings, demo_cdn):
    demo_cdn.add_file("/page.html", b"<!doctype html><html><body>Sorry</body></html>", "text/html")
    demo_cdn.add_file("/broken.xml", b"<rss><channel><title>x</title><item>", "application/rss+xml")
    demo_cdn.set_fault("/gone.xml", Fault(status=404))
    catalog = Catalog(feeds=[
        FeedSpec("tech-talk", demo_cdn.url("/feeds/tech-talk.xml"), 1),
        FeedSpec("gone", demo_cdn.url("/gone.xml"), 1),
        FeedSpec("html", demo_cdn.url("/page.html"), 1),
        FeedSpec("broken", demo_cdn.url("/broken.xml"), 1),
        FeedSpec("dead-host", "http://127.0.0.1:9/feed.xml", 2),
    ])
    demo_cdn.set_fault("/feeds/tech-talk.xml", None)
    result = discover(_services(), catalog)
    by = {f.slug: f for f in result.feeds}
    assert by["tech-talk"].status == "ok" and by["tech-talk"].new == 3
    assert by["gone"].status == "failed" and "404" in by["gone"].error
    assert by["dead-host"].status == "failed" and "connect" in by["dead-host"].error
    rows = read_manifest((settings.home / "manifest.csv").read_bytes())
    assert by["html"].status == "failed" and "feed html" in by["html"].error
    assert {r["feed_slug"] for r in rows} == {"tech-talk"} and len(rows) == 3
    store = _services().checkpoints
    assert store.get_feed("gone").last_status == "failed" and "404" in store.get_feed("gone").last_error


def test_conditional_get_costs_no_parsing_on_304(settings, demo_cdn):
    catalog = Catalog(feeds=[FeedSpec("tech-talk", demo_cdn.url("/feeds/tech-talk.xml"), 1)])
    first = discover(_services(), catalog)
    assert first.feeds[0].status == "ok"
    second = discover(_services(), catalog)
    assert second.feeds[0].status == "not_modified" and second.feeds[0].episodes == 3
    last = demo_cdn.requests[-1]
    assert last.status == 304 and ("If-None-Match" in last.headers or "if-none-match" in
                                   {k.lower() for k in last.headers})
    assert len(second.manifest_rows) == 3  # the manifest still lists every known episode


def test_permanent_redirect_and_new_feed_url_move_the_feed(settings, demo_cdn):
    demo_cdn.add_file("/new.xml", TECH, "application/rss+xml")
    demo_cdn.set_fault("/old.xml", Fault(redirect_to="/new.xml", redirect_status=301))
    catalog = Catalog(feeds=[FeedSpec("tech-talk", demo_cdn.url("/old.xml"), 1)])
    discover(_services(), catalog)
    assert _services().checkpoints.get_feed("tech-talk").effective_url == demo_cdn.url("/new.xml")
    before = demo_cdn.request_count("/old.xml")
    discover(_services(), catalog)
    assert demo_cdn.request_count("/old.xml") == before  # polled at its new address directly

    moved = TECH.replace(b"<channel>", b"<channel><itunes:new-feed-url>" + demo_cdn.url("/newer.xml").encode()
                         + b"</itunes:new-feed-url>", 1)
    demo_cdn.add_file("/new.xml", moved, "application/rss+xml")
    demo_cdn.add_file("/newer.xml", TECH, "application/rss+xml")
    discover(_services(), catalog)
    assert _services().checkpoints.get_feed("tech-talk").effective_url == demo_cdn.url("/newer.xml")


def test_a_move_is_recorded_even_when_the_feed_is_unchanged(settings, demo_cdn):
    demo_cdn.add_file("/a.xml", TECH, "application/rss+xml")
    catalog = Catalog(feeds=[FeedSpec("tech-talk", demo_cdn.url("/a.xml"), 1)])
    discover(_services(), catalog)
    demo_cdn.add_file("/b.xml", TECH, "application/rss+xml")
    demo_cdn.set_fault("/a.xml", Fault(redirect_to="/b.xml", redirect_status=308))
    result = discover(_services(), catalog)  # 308 then 304: same bytes, new home
    assert result.feeds[0].status == "not_modified"
    assert _services().checkpoints.get_feed("tech-talk").effective_url == demo_cdn.url("/b.xml")
