"""podrun feeds: import an OPML file, add a feed, inspect (and the old `feed inspect` form), on loopback feeds."""

import yaml

from podinsight_dagster.fetch.catalog import load_catalog

OPML = """<?xml version="1.0" encoding="UTF-8"?>
<opml version="2.0">
  <head><title>My subscriptions</title></head>
  <body>
    <outline text="feeds">
      <outline type="rss" text="Tech Talk" xmlUrl="{base}/feeds/tech-talk.xml"/>
      <outline text="History">
        <outline type="rss" title="History Hour!" xmlUrl="{base}/feeds/history-hour.xml"/>
      </outline>
      <outline type="rss" text="Tech Talk" xmlUrl="{base}/feeds/tech-talk-extra.xml"/>
      <outline type="rss" text="dup" xmlUrl="{base}/feeds/tech-talk.xml"/>
      <outline type="link" text="a web page" url="https://example.com/"/>
    </outline>
  </body>
</opml>
"""


def test_feeds_import_adds_unique_slugs_skips_known_urls_and_keeps_the_file(settings, demo_cdn, demo_catalog,
                                                                              podrun, tmp_path):
    demo_catalog(["science-weekly"])  # tier 1: already in the catalog
    opml = tmp_path / "subs.opml"
    opml.write_text(OPML.format(base=demo_cdn.base_url.rstrip("/")) + "")
    dry = podrun("feeds", "import", str(opml), "--dry-run").output
    assert "would add 3 feeds" in dry and not (settings.feeds_dir / "tier3_feeds.yaml").exists()
    out = podrun("feeds", "import", str(opml)).output
    assert "added 3 feeds to" in out and "tier3_feeds.yaml" in out
    assert "skipped " + demo_cdn.url("/feeds/tech-talk.xml") + ": already in the catalog as tech-talk" in out
    cat = load_catalog(settings.feeds_dir)
    assert [f.slug for f in cat.feeds] == ["science-weekly", "tech-talk", "history-hour", "tech-talk-2"]
    assert {f.tier for f in cat.feeds[1:]} == {3}
    # a second import adds nothing, and says so; a hand-written comment survives a later add
    path = settings.feeds_dir / "tier3_feeds.yaml"
    path.write_text("# my podcasts\n" + path.read_text())
    again = podrun("feeds", "import", str(opml)).output
    assert "nothing to add" in again and again.count("already in the catalog") == 4
    podrun("feeds", "add", demo_cdn.url("/feeds/science-weekly.xml") + "/", "--slug", "other")  # same URL
    assert len(load_catalog(settings.feeds_dir).feeds) == 4
    podrun("feeds", "add", demo_cdn.url("/x.xml"), "--slug", "xfeed", "--tier", "3")
    assert path.read_text().startswith("# my podcasts\n")
    assert load_catalog(settings.feeds_dir).by_slug()["xfeed"].url == demo_cdn.url("/x.xml")
    more = tmp_path / "more.opml"
    more.write_text('<opml version="1.0"><body><outline title="Tech Talk" xmlUrl="https://b.example/f.rss"/>'
                    '</body></opml>')
    assert "added 1 feed to" in podrun("feeds", "import", str(more), "--tier", "4").output
    assert load_catalog(settings.feeds_dir).by_slug()["tech-talk-3"].tier == 4  # unique across every tier


def test_feeds_add_derives_the_slug_from_the_feed_title(settings, demo_cdn, podrun):
    out = podrun("feeds", "add", demo_cdn.url("/feeds/history-hour.xml"), "--tier", "2").output
    doc = yaml.safe_load((settings.feeds_dir / "tier2_feeds.yaml").read_text())
    assert doc["feeds"] == [{"slug": "history-hour", "url": demo_cdn.url("/feeds/history-hour.xml"), "tier": 2}]
    assert "added 1 feed to" in out
    taken = podrun("feeds", "add", demo_cdn.url("/feeds/tech-talk.xml"), "--slug", "history-hour", ok=False)
    assert taken.exit_code == 1 and "already in the catalog" in taken.output and "Traceback" not in taken.output
    missing = podrun("feeds", "add", demo_cdn.url("/nope.xml"), ok=False)
    assert missing.exit_code == 1 and "404" in missing.output and "--slug" in missing.output
    bad = podrun("feeds", "add", "ftp://x/feed.xml", ok=False)
    assert bad.exit_code == 1 and "not an http(s) URL" in bad.output


def test_feeds_import_refuses_bad_opml_in_one_sentence(settings, podrun, tmp_path):
    cases = {
        "broken.opml": b"<opml><body><outline xmlUrl='http://a/f.xml'>",
        "html.opml": b"<html><body>hi</body></html>",
        "empty.opml": b"<opml version='2.0'><body><outline text='folder'/></body></opml>",
        "bomb.opml": b"<?xml version='1.0'?><!DOCTYPE opml [<!ENTITY a 'aaaa'><!ENTITY b '&a;&a;'>]>"
                     b"<opml><body><outline text='&b;' xmlUrl='http://a/f.xml'/></body></opml>",
    }
    for name, body in cases.items():
        (tmp_path / name).write_bytes(body)
        result = podrun("feeds", "import", str(tmp_path / name), ok=False)
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("Error: "), (name, result.output)
    assert not list(settings.feeds_dir.glob("tier*_feeds.yaml"))
    missing = podrun("feeds", "import", str(tmp_path / "nope.opml"), ok=False)
    assert missing.exit_code == 1 and "cannot read" in missing.output


def test_feeds_inspect_and_the_old_feed_inspect_form_agree(home, demo_cdn, podrun):
    url = demo_cdn.url("/feeds/tech-talk.xml")
    new = podrun("feeds", "inspect", url, "--json").output
    old = podrun("feed", "inspect", url, "--json").output
    assert new == old and '"guid_key"' in new


def test_fetch_per_feed_beside_limit_and_a_failing_page_said(settings, demo_catalog, demo_cdn, podrun):
    from tests.support.cdn import Fault
    from tests.support.feeds import add_to_catalog, serve_paged_feed

    demo_catalog(["tech-talk", "history-hour"])
    add_to_catalog(settings.feeds_dir, [serve_paged_feed(demo_cdn, "archive", 30, 10)])
    demo_cdn.set_fault("/feeds/archive-p3.xml", Fault(status=404))
    result = podrun("fetch", "--per-feed", "1", "--dry-run", ok=False)  # a failing page: the work partly failed
    assert result.exit_code == 1 and "DRY RUN: would download 3 episodes" in result.output
    assert "feed archive: page 3" in result.output and "404" in result.output
    result = podrun("fetch", "--per-feed", "2", "--limit", "5", "--dry-run", ok=False)
    assert result.exit_code == 1 and "would download 5 episodes" in result.output
    demo_cdn.set_fault("/feeds/archive-p3.xml", None)
    podrun("fetch", "--per-feed", "1", "--limit", "0")  # registers all; downloads none
    plan = podrun("fetch", "--per-feed", "1", "--dry-run").output
    assert "would download 3 episodes" in plan
