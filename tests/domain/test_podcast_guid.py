"""<podcast:guid> as the show's identity: a moved feed keeps its episodes; another show under a slug, or one
show under two slugs, fails and says why (loopback feeds, requests counted)."""

from podinsight_dagster.demo.run import CONTENT
from podinsight_dagster.fetch.catalog import Catalog, FeedSpec, load_catalog
from podinsight_dagster.fetch.discover import discover
from podinsight_dagster.services import build_services
from podinsight_dagster.settings import Settings
from tests.support.feeds import add_to_catalog

TECH = (CONTENT / "feeds" / "tech-talk.xml").read_bytes()
GUID = b"917393e3-1b1e-5cef-ace4-edaa54e1f810"


def _with_guid(guid: bytes) -> bytes:
    return TECH.replace(b"<channel>", b"<channel><podcast:guid>" + guid + b"</podcast:guid>", 1)


def _discover(specs):
    return {f.slug: f for f in discover(build_services(Settings.from_env()), Catalog(feeds=specs),
                                        write_manifest=False).feeds}


def test_a_moved_show_keeps_its_episodes_and_two_shows_never_mix(settings, demo_cdn, podrun):
    demo_cdn.add_file("/a.xml", _with_guid(GUID), "application/rss+xml")
    demo_cdn.add_file("/b.xml", _with_guid(GUID), "application/rss+xml")
    demo_cdn.add_file("/other.xml", _with_guid(b"another-show"), "application/rss+xml")
    add_to_catalog(settings.feeds_dir, [{"slug": "show", "url": demo_cdn.url("/a.xml"), "tier": 3}])
    podrun("fetch", "--limit", "0")
    store = build_services(settings).checkpoints
    assert store.get_feed("show").podcast_guid == GUID.decode() and len(store.episodes(feed_slug="show")) == 3

    # the publisher moved the show: `feeds add NEW_URL` finds it by podcast:guid and moves its entry
    out = podrun("feeds", "add", demo_cdn.url("/b.xml")).output
    assert "show moved to " + demo_cdn.url("/b.xml") in out and "its episodes stay" in out
    assert [(f.slug, f.url) for f in load_catalog(settings.feeds_dir).feeds] == [("show", demo_cdn.url("/b.xml"))]
    result = _discover([FeedSpec("show", demo_cdn.url("/b.xml"), 3)])["show"]
    assert result.status == "ok" and result.new == 0 and result.episodes == 3
    assert len(store.episodes(feed_slug="show")) == 3

    # the same show under a second slug: refused, its episodes not registered twice
    both = _discover([FeedSpec("show", demo_cdn.url("/b.xml"), 3), FeedSpec("show-copy", demo_cdn.url("/a.xml"), 3)])
    assert both["show"].status in ("ok", "not_modified")
    assert both["show-copy"].status == "failed" and "the same show as feed show" in both["show-copy"].error
    assert store.episodes(feed_slug="show-copy") == []

    # another show at the slug's URL: refused, said why
    other = _discover([FeedSpec("show", demo_cdn.url("/other.xml"), 3)])["show"]
    assert other.status == "failed" and "another show (podcast:guid another-show)" in other.error
    assert len(store.episodes(feed_slug="show")) == 3
