"""The transcript asset through Dagster Pipes: the worker in a subprocess, reporting each episode as the in-process path does."""

import json

import pytest

from dagster import DagsterInstance, materialize

from podinsight_dagster.assets import all_assets
from podinsight_dagster.definitions import resources_for
from podinsight_dagster.partitions import EPISODES, RANGE_END_TAG, RANGE_START_TAG
from podinsight_dagster.services import build_services
from podinsight_dagster.store import layout
from podinsight_dagster.store.checkpoints import FAILED
from podinsight_dagster.store.keys import EpisodeKey

from ..domain.test_stage_transcribe import FIXTURES, _episode


def _run(instance, keys):
    return materialize(all_assets, selection=["transcript"], instance=instance, resources=resources_for("local"),
                       raise_on_error=False, tags={RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[-1]})


def test_transcript_via_subprocess_worker_reports_each_episode(settings, monkeypatch):
    monkeypatch.setenv("PODINSIGHT_TRANSCRIBE_VIA", "subprocess")
    services = build_services(settings)
    good1 = _episode(services, "a1", (FIXTURES / "clip-18s.mp3").read_bytes())
    bad = _episode(services, "b2", b"ID3\x03\x00\x00\x00\x00\x00\x00" + bytes(range(256)) * 100)
    good2 = _episode(services, "c3", (FIXTURES / "clip-22s.mp3").read_bytes())
    keys = [good1, bad, good2]
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(EPISODES, keys)
        result = _run(instance, keys)
        assert not result.success
        mats = {m.partition: m for m in result.asset_materializations_for_node("transcript")}
        assert set(mats) == {good1, good2}  # the corrupt episode fails alone
        for pk in (good1, good2):
            assert mats[pk].metadata["source"].value == "asr" and mats[pk].metadata["words"].value > 30
            assert mats[pk].metadata["model"].value == "tiny.en"
            doc = json.loads((settings.stage_root / layout.transcript_key(EpisodeKey.parse(pk))).read_text())
            assert doc["partition_key"] == pk
        failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"][0]
        text = str(failure.step_failure_data.user_failure_data.description)
        assert "1 of 3 episodes failed" in text and bad in text
        # The worker ran through Pipes: its log lines reached the run's event log.
        logs = [e.message for e in instance.all_logs(result.run_id)]
        assert any("2 of 3 episodes done, 1 failed" in (m or "") for m in logs)
    assert services.checkpoints.stage(bad, "transcribe").status == FAILED
    assert services.checkpoints.get(bad).state == "downloaded"  # the download is kept
    # Only the transcript: segments and kpis are assets of their own.
    assert not (settings.stage_root / layout.segments_key(EpisodeKey.parse(good1))).exists()


def test_worker_refuses_when_frozen(settings, monkeypatch):
    """The budget check also happens in the worker: a freeze set after the asset's check still stops spending."""
    monkeypatch.setenv("PODINSIGHT_TRANSCRIBE_VIA", "subprocess")
    services = build_services(settings)
    pk = _episode(services, "a1", (FIXTURES / "clip-18s.mp3").read_bytes())
    from podinsight_dagster.worker import Refused, read_outcomes, run_under_pipes

    services.budget.freeze("test freeze")

    class Pipes:
        extras = {"partition_keys": [pk], "through": "transcript"}
        reported: list = []

        class log:
            info = warning = staticmethod(lambda msg: None)

        def report_custom_message(self, payload):
            self.reported.append(payload)

    pipes = Pipes()
    run_under_pipes(services, pipes)
    assert len(pipes.reported) == 1 and "refused" in pipes.reported[0]
    with pytest.raises(Refused, match="frozen"):
        read_outcomes(pipes.reported)
    assert not (settings.stage_root / layout.transcript_key(EpisodeKey.parse(pk))).exists()
