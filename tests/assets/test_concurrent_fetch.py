"""raw_audio downloads the episodes of its run concurrently, each host exactly up to its limit, as the servers count."""

from pathlib import Path

import pytest
import yaml

from podinsight_dagster.definitions import definitions_for
from tests.support.cdn import Fault, PodcastCDN
from podinsight_dagster.instance import get_instance
from podinsight_dagster.launch import LocalLauncher
from podinsight_dagster.services import build_services
from podinsight_dagster.store.checkpoints import DOWNLOADED, EpisodeRecord
from podinsight_dagster.store.keys import partition_key

from ..conftest import audio_bytes

AUDIO = audio_bytes("tech-talk", "ep1")


def peak_concurrency(cdn: PodcastCDN, prefix: str) -> int:
    """Most requests under ``prefix`` in flight at one moment, from the server's own records."""
    events = []
    for r in cdn.requests:
        if r.path.startswith(prefix) and r.finished is not None:
            events += [(r.started, 1), (r.finished, -1)]
    peak = inside = 0
    for _, step in sorted(events, key=lambda e: (e[0], e[1])):
        inside += step
        peak = max(peak, inside)
    return peak


@pytest.fixture
def two_hosts():
    with PodcastCDN(host="127.0.0.1", name="host-a") as a, PodcastCDN(host="127.0.0.2", name="host-b") as b:
        yield a, b


def test_a_run_downloads_concurrently_up_to_each_hosts_limit(settings, two_hosts, tmp_path):
    a, b = two_hosts
    # Each download takes ~0.4 s, so a run that fetched one at a time would never overlap.
    throttle = Fault(bandwidth_bps=max(1, len(AUDIO) * 5 // 2))
    records = []
    for cdn, slug, n in ((a, "show-a", 6), (b, "show-b", 9)):
        for i in range(n):
            path = f"/audio/{slug}/ep{i}.mp3"
            cdn.add_file(path, AUDIO, content_type="audio/mpeg")
            cdn.set_fault(path, throttle)
            records.append(EpisodeRecord(partition_key=partition_key(slug, f"ep{i}"), feed_slug=slug,
                                         guid_key=f"ep{i}", enclosure_url=cdn.url(path)))
    # The catalog's host_limits reach the run's HTTP client (podrun once built it without them).
    (settings.feeds_dir / "tier1_feeds.yaml").write_text(yaml.safe_dump({
        "feeds": [{"slug": "show-a", "url": a.url("/feed.xml")}],
        "host_limits": {"127.0.0.1": 2, "127.0.0.2": 3}}))
    services = build_services(settings)
    services.checkpoints.register_episodes(records)
    keys = [r.partition_key for r in records]
    launcher = LocalLauncher(get_instance(settings), definitions_for(settings), say=lambda _: None)
    outcome = launcher.run_partitions("fetch_episodes", keys)
    assert outcome.success and outcome.runs == 1
    assert all(services.checkpoints.require(k).state == DOWNLOADED for k in keys)
    assert peak_concurrency(a, "/audio/") == 2
    assert peak_concurrency(b, "/audio/") == 3
    for k in keys:
        with services.raw.local_copy(f"{k}/audio/episode.mp3") as path:
            assert Path(path).read_bytes() == AUDIO


def test_one_failing_host_never_stops_the_other(settings, two_hosts):
    a, b = two_hosts
    records = []
    for cdn, slug in ((a, "ok"), (b, "broken")):
        for i in range(3):
            path = f"/audio/{slug}/ep{i}.mp3"
            cdn.add_file(path, AUDIO, content_type="audio/mpeg")
            records.append(EpisodeRecord(partition_key=partition_key(slug, f"ep{i}"), feed_slug=slug,
                                         guid_key=f"ep{i}", enclosure_url=cdn.url(path)))
    for i in range(3):
        b.set_fault(f"/audio/broken/ep{i}.mp3", Fault(status=404))
    services = build_services(settings)
    services.checkpoints.register_episodes(records)
    launcher = LocalLauncher(get_instance(settings), definitions_for(settings), say=lambda _: None)
    outcome = launcher.run_partitions("fetch_episodes", [r.partition_key for r in records])
    assert not outcome.success
    states = {r.partition_key: services.checkpoints.require(r.partition_key).state for r in records}
    assert [states[f"ok/ep{i}"] for i in range(3)] == [DOWNLOADED] * 3
    assert [states[f"broken/ep{i}"] for i in range(3)] == ["failed"] * 3
    assert not any(p.name.startswith(".tmp-") for p in settings.raw_root.rglob("*") if p.is_file())
