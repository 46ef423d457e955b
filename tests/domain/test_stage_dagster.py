"""The transcript asset over a multi-partition run: one batched call, per-episode outcomes as before."""

import json

from dagster import DagsterInstance, materialize

from podinsight_dagster.assets import all_assets
from podinsight_dagster.store import layout
from podinsight_dagster.store.checkpoints import FAILED, TRANSCRIBED
from podinsight_dagster.store.keys import EpisodeKey
from podinsight_dagster.services import build_services
from podinsight_dagster.partitions import EPISODES, RANGE_END_TAG, RANGE_START_TAG
from podinsight_dagster.definitions import resources_for

from .test_stage_transcribe import CLIP, FIXTURES, _episode, _vtt_from


def _run(instance, selection, keys):
    return materialize(all_assets, selection=selection, instance=instance,
                       resources=resources_for("local"), raise_on_error=False,
                       tags={RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[-1]})


def test_transcript_asset_runs_publisher_asr_and_failures_in_one_step(settings, demo_cdn):
    services = build_services(settings)
    demo_cdn.add_file("/p/pub.vtt", _vtt_from("Publisher words only. Nothing else here.", 10), content_type="text/vtt")
    pub = _episode(services, "pub", CLIP.read_bytes(), [{"url": demo_cdn.url("/p/pub.vtt"), "type": "text/vtt"}])
    asr1 = _episode(services, "asr1", (FIXTURES / "clip-18s.mp3").read_bytes())
    bad = _episode(services, "bad", b"ID3\x03\x00\x00\x00\x00\x00\x00" + bytes(range(256)) * 100)
    asr2 = _episode(services, "asr2", (FIXTURES / "clip-22s.mp3").read_bytes())
    keys = [pub, asr1, asr2, bad]
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(EPISODES, keys)
        result = _run(instance, ["transcript"], keys)
        assert not result.success
        mats = {m.partition: m for m in result.asset_materializations_for_node("transcript")}
        assert set(mats) == {pub, asr1, asr2}  # the good ones are recorded before the step fails
        assert mats[pub].metadata["source"].value == "publisher"
        assert mats[asr1].metadata["source"].value == "asr" and mats[asr1].metadata["words"].value > 30
        failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"][0]
        assert "1 of 4 episodes failed" in failure.step_failure_data.error.message or \
            "1 of 4 episodes failed" in str(failure.step_failure_data.user_failure_data.description)
        assert services.checkpoints.stage(bad, "transcribe").status == FAILED
        assert services.checkpoints.get(bad).state == "downloaded"  # the download is kept
        good = [pub, asr1, asr2]
        result = _run(instance, ["segments", "kpis"], good)
        assert result.success
    for pk in good:
        ek = EpisodeKey.parse(pk)
        assert services.checkpoints.get(pk).state == TRANSCRIBED
        kpis = json.loads((settings.stage_root / layout.kpis_key(ek)).read_text())
        assert kpis["source"] == ("publisher" if pk == pub else "asr")
        assert json.loads((settings.raw_root / layout.meta_key(ek)).read_text())["transcript_key"]
