"""Assets materialized with dagster.materialize on a test instance, against a loopback feed server."""

import json
from pathlib import Path

import pytest
from dagster import AssetKey, AssetRecordsFilter, DagsterInstance, materialize

from podinsight_dagster.assets import all_assets
from tests.support.cdn import Fault
from podinsight_dagster.store import layout
from podinsight_dagster.store.checkpoints import FAILED, SqliteCheckpointStore, TRANSCRIBED
from podinsight_dagster.store.keys import EpisodeKey
from podinsight_dagster.transcribe.text import wer
from podinsight_dagster.partitions import EPISODES, RANGE_END_TAG, RANGE_START_TAG
from podinsight_dagster.definitions import definitions_for, resources_for
from tests.support.feeds import add_to_catalog, serve_feed

from ..conftest import reference

EPISODE_ASSETS = ["raw_audio", "transcript", "speakers", "segments", "kpis"]
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "audio"


@pytest.fixture
def instance(home):
    with DagsterInstance.ephemeral() as inst:
        yield inst


def _run(instance, selection, **kwargs):
    return materialize(all_assets, selection=selection, instance=instance,
                       resources=resources_for("local"), raise_on_error=False, **kwargs)


def _ingest(instance, demo_catalog, slugs):
    demo_catalog(slugs)
    result = _run(instance, ["feeds", "episode_manifest"])
    assert result.success
    return instance.get_dynamic_partitions(EPISODES)


def test_manifest_registers_partitions_and_writes_manifest(instance, demo_catalog, settings):
    keys = _ingest(instance, demo_catalog, ["tech-talk", "history-hour"])
    assert len(keys) == 6 and all(k.startswith(("tech-talk/", "history-hour/")) for k in keys)
    manifests = list(settings.manifests_root.glob("*.csv"))
    assert len(manifests) == 1 and len(manifests[0].read_text().splitlines()) == 7
    # A second materialization is idempotent: no duplicate partitions, feeds answer 304.
    result = _run(instance, ["feeds", "episode_manifest"])
    assert result.success and instance.get_dynamic_partitions(EPISODES) == keys
    mat = result.asset_materializations_for_node("episode_manifest")[0]
    assert mat.metadata["feeds_not_modified"].value == 2 and mat.metadata["new_episodes"].value == 0


def test_one_partition_end_to_end(instance, demo_catalog, settings):
    keys = _ingest(instance, demo_catalog, ["tech-talk"])
    pk = "tech-talk/tt-0001"
    assert pk in keys
    result = _run(instance, EPISODE_ASSETS, partition_key=pk)
    assert result.success
    ek = EpisodeKey.parse(pk)
    meta = json.loads((settings.raw_root / layout.meta_key(ek)).read_text())
    assert meta["guid"] == "tt-0001" and meta["transcript_key"] == layout.transcript_key(ek)
    assert (settings.raw_root / layout.audio_key(ek)).stat().st_size == meta["bytes"]
    for key in (layout.transcript_key(ek), layout.segments_key(ek), layout.kpis_key(ek), layout.vtt_key(ek),
                layout.srt_key(ek)):
        assert (settings.stage_root / key).is_file(), key
    text = json.loads((settings.stage_root / layout.transcript_key(ek)).read_text())["text"]
    assert wer(reference("tech-talk", "ep1"), text) <= 0.20
    mat = result.asset_materializations_for_node("transcript")[0]
    assert mat.partition == pk and mat.metadata["words"].value > 100 and mat.metadata["language"].value == "en"
    # The UI shows each episode by its title, feed, date and duration, not only its hash key (the instance's API).
    for asset in EPISODE_ASSETS:
        (record,) = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=AssetKey(asset), asset_partitions=[pk]), limit=1).records
        meta = record.asset_materialization.metadata
        assert (meta["title"].value, meta["feed"].value) == ("Why Data Pipelines Break", "tech-talk"), asset
        assert meta["published"].value.startswith("2026-01-05T09:00:00"), asset
        assert 45 <= meta["duration_sec"].value <= 55, asset  # the feed says 50 s; raw_audio measures it
    # One espeak voice, no podcast:person: one speaker, estimated, labelled everywhere.
    spk = json.loads((settings.stage_root / layout.speakers_key(ek)).read_text())
    assert spk["num_speakers"] == 1 and spk["count_source"] == "estimated" and spk["wall_sec"] > 0
    doc = json.loads((settings.stage_root / layout.transcript_key(ek)).read_text())
    assert {s["speaker"] for s in doc["segments"]} == {"Speaker 1"}
    assert all(w["speaker"] == "Speaker 1" for s in doc["segments"] for w in s["words"])
    rows = [json.loads(line) for line in (settings.stage_root / layout.segments_key(ek)).read_text().splitlines()]
    assert {r["speaker_name"] for r in rows} == {"Speaker 1"}
    assert "<v Speaker 1>" in (settings.stage_root / layout.vtt_key(ek)).read_text()
    assert "[Speaker 1] " in (settings.stage_root / layout.srt_key(ek)).read_text()
    kpis = json.loads((settings.stage_root / layout.kpis_key(ek)).read_text())
    assert kpis["speakers"] == 1 and set(kpis["talk_sec_per_speaker"]) == {"Speaker 1"}


def test_partition_range_in_one_run_with_per_episode_metadata(instance, demo_catalog, settings):
    keys = _ingest(instance, demo_catalog, ["history-hour"])
    result = _run(instance, ["raw_audio"], tags={RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[-1]})
    assert result.success
    mats = result.asset_materializations_for_node("raw_audio")
    assert sorted(m.partition for m in mats) == sorted(keys)
    sizes = {m.partition: m.metadata["bytes"].value for m in mats}
    store = SqliteCheckpointStore(settings.checkpoint_db)
    assert sizes == {k: store.get(k).bytes for k in keys}  # each partition carries its own figures
    # The original GUIDs survive in meta.json even where the key is a hash.
    guids = {json.loads((settings.raw_root / layout.meta_key(EpisodeKey.parse(k))).read_text())["guid"] for k in keys}
    assert "History Hour, Episode 1 [remastered]" in guids and "../../etc/passwd" in guids


def test_one_broken_episode_does_not_stop_the_others(instance, demo_catalog, demo_cdn, settings):
    keys = _ingest(instance, demo_catalog, ["tech-talk"])
    demo_cdn.set_fault("/audio/tech-talk/ep2.mp3", Fault(status=404))
    demo_cdn.set_fault("/audio/tech-talk/ep3.mp3", Fault(html_200=True))
    result = _run(instance, ["raw_audio"], tags={RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[-1]})
    assert not result.success
    materialized = {e.event_specific_data.materialization.partition for e in result.get_asset_materialization_events()}
    assert materialized == {"tech-talk/tt-0001"}
    store = SqliteCheckpointStore(settings.checkpoint_db)
    failed = {r.partition_key: r for r in store.episodes(state=FAILED)}
    assert set(failed) == set(keys) - materialized
    errors = " ".join(r.last_error for r in failed.values())
    assert "404" in errors and "HTML page" in errors
    for pk in failed:  # nothing half-written in raw storage for the failed ones
        assert not (settings.raw_root / pk).exists()
    assert not list((settings.raw_root / ".partial").iterdir())
    # Once the CDN behaves, a re-run completes the rest and reuses the finished download.
    demo_cdn.set_fault("/audio/tech-talk/ep2.mp3", None)
    demo_cdn.set_fault("/audio/tech-talk/ep3.mp3", None)
    before = demo_cdn.request_count("/audio/tech-talk/ep1.mp3")
    result = _run(instance, EPISODE_ASSETS, tags={RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[-1]})
    assert result.success
    assert demo_cdn.request_count("/audio/tech-talk/ep1.mp3") == before
    assert store.counts()[TRANSCRIBED] == 3


def test_partition_metadata_reads_the_partition_list_once_per_run(instance, monkeypatch):
    """Per-partition metadata must not list every partition once per episode (20,000 partitions: 50 ms each)."""
    from podinsight_dagster.dagster_internals import partition_list_read_once

    instance.add_dynamic_partitions(EPISODES, [f"f/e{i}" for i in range(50)])
    calls = []
    original = type(instance).get_dynamic_partitions

    def counting(self, name):
        calls.append(name)
        return original(self, name)

    monkeypatch.setattr(type(instance), "get_dynamic_partitions", counting)
    with partition_list_read_once(instance):
        for _ in range(10):
            assert len(instance.get_dynamic_partitions(EPISODES)) == 50
    assert calls == [EPISODES]
    instance.get_dynamic_partitions(EPISODES)
    assert len(calls) == 2  # the cache ends with the block


def test_one_404_in_a_pipeline_run_stops_only_its_own_later_stages(instance, demo_catalog, demo_cdn, settings):
    """10 episodes in one episode_pipeline run, one of them 404: 9 reach KPIs; the run fails naming the one."""
    demo_catalog(["tech-talk", "history-hour"])
    # Four more episodes, one short clip each (14 s: the test is about isolation, not long audio).
    add_to_catalog(settings.feeds_dir, [serve_feed(demo_cdn, "extra", [
        (f"x{i}", FIXTURES / "clip-14s.mp3") for i in range(1, 5)])])
    assert _run(instance, ["feeds", "episode_manifest"]).success
    keys = instance.get_dynamic_partitions(EPISODES)
    assert len(keys) == 10
    demo_cdn.set_fault("/audio/tech-talk/ep2.mp3", Fault(status=404))
    result = definitions_for(settings).resolve_job_def("episode_pipeline").execute_in_process(
        instance=instance, tags={RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[-1]}, raise_on_error=False)
    assert not result.success
    store = SqliteCheckpointStore(settings.checkpoint_db)
    [bad] = [r.partition_key for r in store.episodes(state=FAILED)]
    good = set(keys) - {bad}
    assert {k for k in keys if store.stage(k, "kpis").status == "done"} == good  # every other one went all the way
    assert all(store.get(k).state == TRANSCRIBED for k in good)
    assert all((settings.stage_root / k / "kpis" / "kpis.json").is_file() for k in good)
    assert store.get(bad).state == FAILED and store.stage(bad, "download").status == FAILED
    assert store.stage(bad, "transcribe").status == "pending"  # never attempted
    assert not (settings.stage_root / bad).exists()
    # The run's last episode asset (the search index) fails it, naming the one; it indexed the other nine.
    failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert [e.step_key for e in failure] == ["transcript_index"]
    text = str(failure[0].step_failure_data.user_failure_data.description)
    assert text.startswith("1 of 10 episodes failed") and bad in text and "upstream failed" in text
    assert {m.partition for m in result.asset_materializations_for_node("transcript_index")} == good
