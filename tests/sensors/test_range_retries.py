"""new_episodes_sensor requests a failed range again after a backoff, with a new run key, then gives up saying why."""

import json

from dagster import DagsterInstance, SensorResult, build_sensor_context, materialize

import podinsight_dagster.sensors as sensors
from tests.support.cdn import Fault
from podinsight_dagster.assets import all_assets
from podinsight_dagster.definitions import resources_for
from podinsight_dagster.partitions import EPISODES
from podinsight_dagster.services import build_services
from podinsight_dagster.store.checkpoints import DOWNLOAD, FAILED


def _tick(sensor, instance, cursor):
    with build_sensor_context(instance=instance, cursor=cursor, resources=resources_for("local")) as ctx:
        return sensor(ctx)


def _execute(instance, run):
    """The run the daemon would launch for ``run`` (a RunRequest): raw_audio over its range, with its tags."""
    return materialize(all_assets, selection=["raw_audio"], instance=instance, resources=resources_for("local"),
                       raise_on_error=False, tags=run.tags)


def test_a_failed_range_is_retried_after_a_backoff_then_left_with_its_reason(settings, demo_catalog, demo_cdn,
                                                                              monkeypatch):
    demo_catalog(["tech-talk"])
    demo_cdn.set_fault("/audio/tech-talk/ep2.mp3", Fault(status=404))
    sensor = sensors.build_new_episodes_sensor(name="retrying_sensor", max_range_retries=1, retry_backoff_s=600)
    clock = [1_000_000.0]
    monkeypatch.setattr(sensors, "wall_clock", lambda: clock[0])
    with DagsterInstance.ephemeral() as instance:
        first = _tick(sensor, instance, None)
        (run,) = first.run_requests
        assert not _execute(instance, run).success  # ep2 is a 404
        bad = [pk for pk in instance.get_dynamic_partitions(EPISODES)
               if build_services(settings).checkpoints.stage(pk, DOWNLOAD).status == FAILED]
        assert len(bad) == 1

        # Seen failed; not asked again before its backoff.
        waiting = _tick(sensor, instance, first.cursor)
        assert isinstance(waiting, SensorResult) and not waiting.run_requests
        assert "1 failed ranges waiting to be retried" in waiting.skip_reason.skip_message
        (entry,) = json.loads(waiting.cursor)["retries"]["pending"].values()
        assert entry["attempt"] == 1 and "404" in entry["reason"] and bad[0] in entry["reason"]

        clock[0] += 601
        due = _tick(sensor, instance, waiting.cursor)
        (retry,) = due.run_requests
        assert retry.run_key == f"{run.run_key}:retry1" and retry.tags["podinsight/range_attempt"] == "1"
        assert retry.partition_key is None and retry.tags[sensors.RANGE_START_TAG] == run.tags[sensors.RANGE_START_TAG]
        assert not _execute(instance, retry).success  # still a 404: the limit (1 retry) is reached

        left = _tick(sensor, instance, due.cursor)
        assert not left.run_requests
        message = left.skip_reason.skip_message
        assert "left for a person" in message and "404" in message and bad[0] in message
        retries = json.loads(left.cursor)["retries"]
        assert not retries["pending"] and list(retries["given_up"].values())[0]["attempts"] == 2
        # The episode's own status says the same, and its attempts are counted.
        st = build_services(settings).checkpoints.stage(bad[0], DOWNLOAD)
        assert st.status == FAILED and st.attempts >= 2 and "404" in st.last_error

        clock[0] += 10_000
        assert not _tick(sensor, instance, left.cursor).run_requests  # never asked again by itself
