"""Sensors evaluated with build_sensor_context against a real instance and loopback feeds."""

import json

from dagster import DagsterInstance, SensorResult, SkipReason, build_sensor_context

from tests.support.cdn import Fault
from podinsight_dagster.store.checkpoints import EpisodeRecord, SqliteCheckpointStore
from podinsight_dagster.services import build_services
from podinsight_dagster.settings import Settings
from podinsight_dagster.partitions import EPISODES, RANGE_END_TAG, RANGE_START_TAG
from podinsight_dagster.definitions import resources_for
from podinsight_dagster.sensors import auto_transcribe_sensor, batched_ranges, new_episodes_sensor


def _tick(sensor, instance, cursor=None):
    # Resources with setup and teardown live only inside the context manager.
    with build_sensor_context(instance=instance, cursor=cursor, resources=resources_for("local")) as ctx:
        return sensor(ctx)


def _apply(instance, result: SensorResult) -> None:
    # Calling a sensor directly does not apply its dynamic partition requests: do what the daemon does.
    for req in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))


def test_new_episodes_registered_and_queued_in_batches_idempotently(settings, demo_catalog, demo_cdn):
    demo_catalog()
    demo_cdn.set_fault("/feeds/science-weekly.xml", Fault(status=500))
    with DagsterInstance.ephemeral() as instance:
        result = _tick(new_episodes_sensor, instance)
        assert isinstance(result, SensorResult)
        (req,) = result.dynamic_partitions_requests
        assert req.partitions_def_name == EPISODES and len(req.partition_keys) == 6  # one feed failed, others went on
        assert len(result.run_requests) == 1  # one run for the batch, not one per episode
        run = result.run_requests[0]
        assert (run.tags[RANGE_START_TAG], run.tags[RANGE_END_TAG]) == (req.partition_keys[0], req.partition_keys[-1])
        cursor = json.loads(result.cursor)
        assert cursor["last_new"] == 6 and "science-weekly" in cursor["failed_feeds"]
        _apply(instance, result)
        again = _tick(new_episodes_sensor, instance, cursor=result.cursor)  # a repeated tick adds nothing
        assert not again.run_requests and not again.dynamic_partitions_requests
        assert json.loads(again.cursor)["ticks"] == 2
        demo_cdn.set_fault("/feeds/science-weekly.xml", None)
        recovered = _tick(new_episodes_sensor, instance, cursor=again.cursor)
        assert len(recovered.dynamic_partitions_requests[0].partition_keys) == 3


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


def test_auto_transcribe_shrinks_a_request_that_would_cross_the_ceiling(settings, monkeypatch):
    monkeypatch.setenv("PODINSIGHT_COST_CEILING_USD", "1.0")
    with DagsterInstance.ephemeral() as instance:
        # 30-minute episodes at 12x real time on a $0.30/h GPU: $0.0125 each, so 80 fit under $1.
        _downloaded(settings, instance, 150)
        runs = _tick(auto_transcribe_sensor, instance)
        queued = sum(int(r.tags[RANGE_END_TAG][-3:]) - int(r.tags[RANGE_START_TAG][-3:]) + 1 for r in runs)
        assert 0 < queued < 150 and queued * 0.0125 <= 1.0
