"""Sensors evaluated with build_sensor_context against a real instance and loopback feeds."""

import json
import time

from dagster import DagsterInstance, SensorResult, SkipReason, build_sensor_context

from tests.support.cdn import Fault
from podinsight_dagster.store.checkpoints import EpisodeRecord, SqliteCheckpointStore
from podinsight_dagster.services import build_services
from podinsight_dagster.settings import Settings
from podinsight_dagster.partitions import EPISODES, RANGE_END_TAG, RANGE_START_TAG
from podinsight_dagster.definitions import resources_for
from podinsight_dagster.sensors import (auto_transcribe_sensor, batched_ranges, build_new_episodes_sensor,
                                        new_episodes_sensor)


def _tick(sensor, instance, cursor=None):
    # Resources with setup and teardown live only inside the context manager.
    with build_sensor_context(instance=instance, cursor=cursor, resources=resources_for("local")) as ctx:
        return sensor(ctx)


def test_new_episodes_registered_and_queued_in_batches_idempotently(settings, demo_catalog, demo_cdn):
    demo_catalog()
    demo_cdn.set_fault("/feeds/science-weekly.xml", Fault(status=500))
    with DagsterInstance.ephemeral() as instance:
        result = _tick(new_episodes_sensor, instance)
        assert isinstance(result, SensorResult)
        # The tick registers its partitions itself, in bulk; the daemon has none to apply key by key.
        assert not result.dynamic_partitions_requests
        keys = instance.get_dynamic_partitions(EPISODES)
        assert len(keys) == 6  # one feed failed, the others went on
        assert len(result.run_requests) == 1  # one run for the batch, not one per episode
        run = result.run_requests[0]
        assert (run.tags[RANGE_START_TAG], run.tags[RANGE_END_TAG]) == (keys[0], keys[-1])
        cursor = json.loads(result.cursor)
        assert cursor["last_new"] == 6 and "science-weekly" in cursor["failed_feeds"]
        # The failing feed fails the every_feed_answers check on `feeds`, naming it and its error.
        (health,) = result.asset_events
        assert (health.asset_key.to_user_string(), health.check_name, health.passed) == (
            "feeds", "every_feed_answers", False)
        assert "science-weekly" in health.description and "500" in health.description
        again = _tick(new_episodes_sensor, instance, cursor=result.cursor)  # a repeated tick adds nothing
        assert not again.run_requests and not again.dynamic_partitions_requests
        assert not again.asset_events  # the check is reported again only when it changes
        assert json.loads(again.cursor)["ticks"] == 2
        assert len(instance.get_dynamic_partitions(EPISODES)) == 6
        demo_cdn.set_fault("/feeds/science-weekly.xml", None)
        recovered = _tick(new_episodes_sensor, instance, cursor=again.cursor)
        assert len(instance.get_dynamic_partitions(EPISODES)) == 9
        (run,) = recovered.run_requests
        assert (run.tags[RANGE_START_TAG], run.tags[RANGE_END_TAG]) == tuple(instance.get_dynamic_partitions(EPISODES)[6::2])
        assert "science-weekly" not in json.loads(recovered.cursor)["failed_feeds"]
        assert [e.passed for e in recovered.asset_events] == [True]


def test_episodes_known_to_the_checkpoint_store_but_not_the_instance_are_registered(settings, demo_catalog, demo_cdn):
    # A tick interrupted after the checkpoint store took the episodes, before the instance did: the next
    # tick, whose feeds all answer 304, registers and queues them.
    demo_catalog()
    with DagsterInstance.ephemeral() as instance:
        _tick(new_episodes_sensor, instance)
        lost = instance.get_dynamic_partitions(EPISODES)[-3:]
        for key in lost:
            instance.delete_dynamic_partition(EPISODES, key)
        result = _tick(new_episodes_sensor, instance)
        assert sorted(instance.get_dynamic_partitions(EPISODES)[-3:]) == sorted(lost)
        (run,) = result.run_requests
        assert {run.tags[RANGE_START_TAG], run.tags[RANGE_END_TAG]} <= set(lost)


def test_download_batches_split_at_100():
    keys = [f"f/e{i:04d}" for i in range(250)]
    assert batched_ranges(keys, keys, 100) == [("f/e0000", "f/e0099"), ("f/e0100", "f/e0199"), ("f/e0200", "f/e0249")]
    assert batched_ranges(keys, ["f/e0001", "f/e0002", "f/e0005"], 100) == [("f/e0001", "f/e0002"), ("f/e0005", "f/e0005")]


def _downloaded(settings, instance, n, duration=1800.0):
    store = SqliteCheckpointStore(settings.checkpoint_db)
    recs = [EpisodeRecord(partition_key=f"show/e{i:03d}", feed_slug="show", guid_key=f"e{i:03d}",
                          duration_hint_sec=duration, state="downloaded") for i in range(n)]
    store.register_episodes(recs)
    instance.add_dynamic_partitions(EPISODES, [r.partition_key for r in recs])
    return store


def test_auto_transcribe_queues_within_budget_and_respects_freeze(settings):
    with DagsterInstance.ephemeral() as instance:
        _downloaded(settings, instance, 150)
        runs = _tick(auto_transcribe_sensor, instance)
        assert [len(r.tags) for r in runs] and sum(
            int(r.tags[RANGE_END_TAG][-3:]) - int(r.tags[RANGE_START_TAG][-3:]) + 1 for r in runs) == 150
        build_services(Settings.from_env()).budget.freeze("test freeze")
        skipped = _tick(auto_transcribe_sensor, instance)
        assert isinstance(skipped, SkipReason) and "frozen" in skipped.skip_message


def test_auto_transcribe_leaves_what_its_unfinished_runs_hold_and_waits_for_a_running_download(settings):
    from dagster import DagsterRun, DagsterRunStatus

    from podinsight_dagster.sensors import BATCH_HOLD_S, TRIGGER_TAG, queue_transcription

    def started(job: str, tags: dict) -> None:
        instance.add_run(DagsterRun(job_name=job, run_id=f"run-{len(instance.get_runs())}",
                                    status=DagsterRunStatus.STARTED, tags=tags))

    with DagsterInstance.ephemeral() as instance:
        store = _downloaded(settings, instance, 3)
        (run,) = _tick(auto_transcribe_sensor, instance)
        started("transcribe_episodes", run.tags)  # the daemon launched it; it is still going
        assert "in transcription runs not finished" in _tick(auto_transcribe_sensor, instance).skip_message
        recs = [EpisodeRecord(partition_key=f"show/e{i:03d}", feed_slug="show", guid_key=f"e{i:03d}",
                              state="downloaded", downloaded_at=time.time()) for i in (3, 4)]
        store.register_episodes(recs)
        instance.add_dynamic_partitions(EPISODES, [r.partition_key for r in recs])
        (more,) = _tick(auto_transcribe_sensor, instance)  # only what finished downloading since
        assert (more.tags[RANGE_START_TAG], more.tags[RANGE_END_TAG]) == ("show/e003", "show/e004")
        assert more.tags[TRIGGER_TAG] == "auto_transcribe_sensor"
        started("fetch_episodes", {})  # a download run still going: its episodes wait to go in one batch
        recs = [EpisodeRecord(partition_key="show/e005", feed_slug="show", guid_key="e005", state="downloaded",
                              downloaded_at=time.time())]
        store.register_episodes(recs)
        instance.add_dynamic_partitions(EPISODES, ["show/e005"])
        started("transcribe_episodes", more.tags)
        assert "wait for download run" in _tick(auto_transcribe_sensor, instance).skip_message
        with build_sensor_context(instance=instance, resources=resources_for("local")) as ctx:
            (late,) = queue_transcription(ctx, ctx.resources.podinsight, at=time.time() + BATCH_HOLD_S + 1)
        assert (late.tags[RANGE_START_TAG], late.tags[RANGE_END_TAG]) == ("show/e005", "show/e005")


def test_auto_transcribe_shrinks_a_request_that_would_cross_the_ceiling(settings, monkeypatch):
    monkeypatch.setenv("PODINSIGHT_COST_CEILING_USD", "1.0")
    # The projection's speed and price, whatever this machine's device (it is measured per device otherwise).
    for name, value in {"PODINSIGHT_REALTIME_FACTOR": "12", "PODINSIGHT_PRICE_GPU_HOUR": "0.30",
                        "PODINSIGHT_PRICE_CPU_HOUR": "0.30"}.items():
        monkeypatch.setenv(name, value)
    with DagsterInstance.ephemeral() as instance:
        # 30-minute episodes at 12x real time on a $0.30/h GPU: $0.0125 each, so 80 fit under $1.
        _downloaded(settings, instance, 150)
        runs = _tick(auto_transcribe_sensor, instance)
        queued = sum(int(r.tags[RANGE_END_TAG][-3:]) - int(r.tags[RANGE_START_TAG][-3:]) + 1 for r in runs)
        assert 0 < queued < 150 and queued * 0.0125 <= 1.0


def _small_feed(i: int) -> bytes:
    items = "".join(
        f"<item><title>Feed {i} episode {k}</title><guid isPermaLink=\"false\">f{i:04d}-e{k}</guid>"
        f"<pubDate>Mon, 0{k} Jun 2026 09:00:00 +0000</pubDate>"
        f"<enclosure url=\"{{base_url}}/audio/f{i:04d}-e{k}.mp3\" type=\"audio/mpeg\" length=\"1000\"/></item>"
        for k in range(1, 2 + i % 2))  # 1 or 2 items
    return (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><rss version=\"2.0\"><channel><title>Feed {i}</title>"
            f"<link>{{base_url}}/</link><description>d</description>{items}</channel></rss>").encode()


def test_a_tick_keeps_to_its_budget_and_the_feeds_it_missed_go_first_next_tick(settings, demo_cdn):
    """1,000 feeds, 20 ms each: a tick stops starting feeds at its budget; the next ticks carry on from there."""
    import yaml

    n, budget, workers = 1000, 2.0, 8
    slugs = [f"feed-{i:04d}" for i in range(n)]
    for i, slug in enumerate(slugs):
        demo_cdn.add_file(f"/many/{slug}.xml", _small_feed(i), content_type="application/rss+xml")
        demo_cdn.set_fault(f"/many/{slug}.xml", Fault(latency_s=0.02))
    (settings.feeds_dir / "tier1_feeds.yaml").write_text(yaml.safe_dump(
        {"feeds": [{"slug": s, "url": demo_cdn.url(f"/many/{s}.xml"), "tier": 1} for s in slugs]}))
    expected = {f"{slug}/f{i:04d}-e{k}" for i, slug in enumerate(slugs) for k in range(1, 2 + i % 2)}
    # 8 feeds at a time, 20 ms each: at most 8 x 2 s / 20 ms = 800 feeds start within the budget.
    sensor = build_new_episodes_sensor(tick_budget_s=budget, max_workers=workers)
    demo_cdn.reset_stats()
    cursor, polled_by_tick, seen, runs, previous_next = None, [], set(), [], None
    with DagsterInstance.ephemeral() as instance:
        while len(seen) < n:
            # Starvation is a tick that starts no feed; how many ticks it takes depends on the machine's load.
            assert len(polled_by_tick) < 200 and all(polled_by_tick), "feeds starved"
            t0 = time.monotonic()
            result = _tick(sensor, instance, cursor)
            wall = time.monotonic() - t0
            # A hang, not a timing: the tick's wall also holds registering what it found and resource set-up,
            # which a loaded machine stretches.
            assert wall < budget + 60.0, wall
            cursor = result.cursor
            state = json.loads(cursor)
            polled = [r.path.rsplit("/", 1)[-1][:-4] for r in demo_cdn.requests]
            # The budget binds: no feed starts after it, so at most workers x budget / 20 ms (+ those in flight).
            assert len(polled) <= workers * budget / 0.02 + workers, len(polled)
            demo_cdn.reset_stats()
            assert state["last_polled"] == len(polled) and not state["failed_feeds"]
            polled_by_tick.append(polled)
            seen |= set(polled)
            # Every episode of every feed polled so far is registered, and queued for download once.
            registered = set(instance.get_dynamic_partitions(EPISODES))
            assert registered == {k for k in expected if k.split("/")[0] in seen}
            if len(polled_by_tick) > 1:  # this tick started with the feed where the last one stopped
                assert previous_next in polled
            previous_next = state["next_feed"]
            runs += result.run_requests
        first = polled_by_tick[0]
        assert len(first) < n and state["ticks"] >= 2  # the first tick carried feeds over
        assert set(first) == set(slugs[:len(first)])  # in catalog order, from the start
        # Round robin: each tick went on where the last stopped, so until every feed was polled once
        # no feed was polled twice.
        before_last = [s for tick in polled_by_tick[:-1] for s in tick]
        assert len(before_last) == len(set(before_last))
        # Each episode's download was requested once, in runs of contiguous partitions.
        order = {k: i for i, k in enumerate(instance.get_dynamic_partitions(EPISODES))}
        spans = [range(order[r.tags[RANGE_START_TAG]], order[r.tags[RANGE_END_TAG]] + 1) for r in runs]
        assert sorted(i for span in spans for i in span) == list(range(len(expected)))
        # A further tick finds nothing new and asks for nothing.
        again = _tick(sensor, instance, cursor)
        assert not again.run_requests and len(instance.get_dynamic_partitions(EPISODES)) == len(expected)
