"""podcast:alternateEnclosure: the smaller rendition downloaded when present (podcast:integrity checked),
the enclosure itself when it cannot be had; on the demo feed served on loopback."""

import base64
import hashlib

from podinsight_dagster.demo.run import CONTENT
from podinsight_dagster.fetch.catalog import Catalog, FeedSpec
from podinsight_dagster.fetch.discover import discover
from podinsight_dagster.fetch.download import download_episode
from podinsight_dagster.fetch.feeds import AlternateEnclosure, _Enclosure, parse_feed, prefer_download
from podinsight_dagster.services import build_services
from podinsight_dagster.store import layout
from podinsight_dagster.store.keys import EpisodeKey
from tests.support.cdn import Fault

LOW = CONTENT / "audio" / "history-hour" / "ep1-low.mp3"


def test_the_lower_bitrate_audio_alternate_is_preferred():
    feed = parse_feed((CONTENT / "feeds" / "history-hour.xml").read_bytes().replace(b"{base_url}", b"http://h"))
    ep1, ep2, _ = feed.episodes
    assert ep2.download is None
    assert ep1.download.url == "http://h/audio/history-hour/ep1-low.mp3" and ep1.download.bitrate == 24000
    assert ep1.download.integrity.startswith("sha256-") and ep1.to_dict()["download"]["url"] == ep1.download.url
    assert ep1.enclosure_url.endswith("/ep1.mp3")  # the episode (and its key) stay the enclosure's
    main = _Enclosure("https://a/main.mp3", "audio/mpeg", 60_000_000)
    low = AlternateEnclosure("https://a/low.mp3", "audio/mpeg", 20_000_000, 64000)
    video = AlternateEnclosure("https://a/v.mp4", "video/mp4", 1000, 1000)
    same = AlternateEnclosure("https://a/main.mp3", "audio/mpeg", 60_000_000, 128000, default=True)
    assert prefer_download(main, [video, same, low], 3600) is low  # 64 kb/s below the default's 128 kb/s
    assert prefer_download(main, [low], 3600) is low  # main: 60 MB over an hour = 133 kb/s
    assert prefer_download(main, [AlternateEnclosure("https://a/hi.mp3", "audio/mpeg", 90_000_000, 256000)],
                           3600) is None  # larger: the enclosure stays
    assert prefer_download(main, [AlternateEnclosure("https://a/x.mp3", "audio/mpeg", None, None)], 3600) is None


def _ep1(services, demo_cdn):
    discover(services, Catalog(feeds=[FeedSpec("history-hour", demo_cdn.url("/feeds/history-hour.xml"), 1)]))
    [rec] = [r for r in services.checkpoints.episodes(feed_slug="history-hour") if r.enclosure_url.endswith("/ep1.mp3")]
    return rec


def test_download_takes_the_alternate_checked_and_falls_back_to_the_enclosure(settings, demo_cdn):
    services = build_services(settings)
    rec = _ep1(services, demo_cdn)
    assert rec.download_url == demo_cdn.url("/audio/history-hour/ep1-low.mp3")
    out = download_episode(services, rec.partition_key)
    assert demo_cdn.request_count("/audio/history-hour/ep1-low.mp3") == 1
    assert demo_cdn.request_count("/audio/history-hour/ep1.mp3") == 0
    meta = services.raw.get_json(layout.meta_key(EpisodeKey.parse(rec.partition_key)))
    assert out.bytes == meta["bytes"] == LOW.stat().st_size and "alternate_error" not in meta
    assert meta["sha256"] == hashlib.sha256(LOW.read_bytes()).hexdigest()
    assert meta["enclosure_url"].endswith("/ep1.mp3") and meta["final_url"].endswith("/ep1-low.mp3")

    # Bytes that do not match podcast:integrity: the enclosure is downloaded instead, and why is kept.
    other = build_services(settings.replace(home=settings.home / "second"))
    other.settings.ensure_dirs()
    tampered = bytearray(LOW.read_bytes())
    tampered[5000] ^= 0xFF
    demo_cdn.add_file("/audio/history-hour/ep1-low.mp3", bytes(tampered), "audio/mpeg")
    rec2 = _ep1(other, demo_cdn)
    out = download_episode(other, rec2.partition_key)
    meta = other.raw.get_json(layout.meta_key(EpisodeKey.parse(rec2.partition_key)))
    assert out.bytes == (CONTENT / "audio" / "history-hour" / "ep1.mp3").stat().st_size
    assert "podcast:integrity mismatch" in meta["alternate_error"] and meta["final_url"].endswith("/ep1.mp3")
    sri = "sha256-" + base64.b64encode(hashlib.sha256(LOW.read_bytes()).digest()).decode()
    assert sri in meta["alternate_error"]

    # An alternate that is gone: the same.
    third = build_services(settings.replace(home=settings.home / "third"))
    third.settings.ensure_dirs()
    demo_cdn.set_fault("/audio/history-hour/ep1-low.mp3", Fault(status=404))
    rec3 = _ep1(third, demo_cdn)
    download_episode(third, rec3.partition_key)
    meta = third.raw.get_json(layout.meta_key(EpisodeKey.parse(rec3.partition_key)))
    assert "404" in meta["alternate_error"] and meta["final_url"].endswith("/ep1.mp3")
    for s in (services, other, third):
        s.close()
