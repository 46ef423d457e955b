"""podrun as an operator runs it (click's runner in-process, real loopback feeds, the local instance)."""

import json

from dagster import AssetKey, DagsterInstance

from tests.support.cdn import Fault
from podinsight_dagster.store.checkpoints import SqliteCheckpointStore


def test_fetch_dry_run_prints_a_plan_and_writes_nothing_to_raw(settings, demo_catalog, podrun):
    demo_catalog(["tech-talk", "history-hour"])
    out = podrun("fetch", "--limit", "4", "--dry-run").output
    assert "DRY RUN: would download 4 episodes" in out
    assert "127.0.0.1" in out and "projected time" in out and "projected cost: $" in out
    assert not any(p.is_file() for p in settings.raw_root.rglob("*"))


def test_fetch_limit_then_rest_then_transcribe_and_status(settings, demo_catalog, demo_cdn, podrun):
    demo_catalog(["tech-talk", "history-hour"])
    out = podrun("fetch", "--limit", "2").output
    assert "downloading 2 episodes" in out
    assert "2/2 episodes" in out and "MB/s" in out  # the progress line
    store = SqliteCheckpointStore(settings.checkpoint_db)
    assert store.counts()["downloaded"] == 2 and store.counts()["discovered"] == 4
    assert len(list(settings.manifests_root.glob("*.csv"))) == 1
    demo_cdn.set_fault("/audio/history-hour/ep3.mp3", Fault(status=404))
    result = podrun("fetch", ok=False)
    assert result.exit_code == 1 and store.counts()["downloaded"] == 5 and store.counts()["failed"] == 1
    out = podrun("transcribe", "--limit", "1", "--model", "tiny.en").output
    assert "transcribing 1 episodes" in out and store.counts()["transcribed"] == 1
    doc = json.loads(podrun("status", "--json").output)
    assert doc["episodes"] == {"discovered": 0, "downloaded": 4, "transcribed": 1, "failed": 1}
    assert doc["download_success_rate"] == round(100 * 5 / 6, 2)
    assert doc["gb_transferred"] > 0 and doc["cost_today_usd"] > 0 and doc["frozen"] is False
    assert "127.0.0.1" in doc["per_host_429_rate"]
    with DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        assert len(instance.get_materialized_partitions(AssetKey("raw_audio"))) == 5
        assert len(instance.get_materialized_partitions(AssetKey("kpis"))) == 1
        # The speakers step took the voices the transcript step had made while its model went on (transcribe/ahead.py).
        speakers = instance.get_latest_materialization_event(AssetKey("speakers")).asset_materialization
        assert speakers.metadata["voices_ahead"].value is True


def test_fetch_from_manifest(settings, demo_catalog, demo_cdn, podrun, tmp_path):
    demo_catalog(["science-weekly"])
    podrun("fetch", "--dry-run")
    manifest = settings.home / "manifest.csv"
    assert not manifest.exists()  # a dry run writes no manifest either
    podrun("fetch", "--limit", "0")
    lines = manifest.read_text().splitlines()
    subset = tmp_path / "retry.csv"
    subset.write_text("\n".join(lines[:2]) + "\n")  # header + one episode
    out = podrun("fetch", "--manifest", str(subset)).output
    assert "1 episodes" in out
    assert SqliteCheckpointStore(settings.checkpoint_db).counts()["downloaded"] == 1


def test_transcribe_refuses_when_frozen_or_over_budget(settings, demo_catalog, podrun, monkeypatch):
    demo_catalog(["tech-talk"])
    podrun("fetch")
    podrun("freeze", "--reason", "manual stop")
    result = podrun("transcribe", "--model", "tiny.en", ok=False)
    assert result.exit_code == 3 and "frozen" in result.output and "podrun freeze --lift" in result.output
    assert "manual stop" in result.output  # --reason: the refusal says why it was frozen
    podrun("freeze", "--lift")
    monkeypatch.setenv("PODINSIGHT_COST_CEILING_USD", "0.00001")
    result = podrun("transcribe", "--model", "tiny.en", ok=False)
    assert result.exit_code == 3 and "would cross" in result.output  # refused by the cost guard
    assert SqliteCheckpointStore(settings.checkpoint_db).counts()["transcribed"] == 0


def test_feed_inspect_json_and_bad_feed(settings, demo_cdn, podrun):
    doc = json.loads(podrun("feed", "inspect", demo_cdn.url("/feeds/history-hour.xml"), "--json").output)
    assert doc["feed"]["title"] and len(doc["episodes"]) == 3
    ep = doc["episodes"][1]
    assert ep["guid"] == "../../etc/passwd" and ep["guid_key"].startswith("h-")
    assert set(ep) >= {"guid", "guid_key", "title", "published", "enclosure", "duration_sec", "transcripts",
                       "chapters_url"}
    assert ep["published"].endswith("Z") and ep["enclosure"]["type"] == "audio/mpeg"
    demo_cdn.add_file("/bad.xml", b"<html>nope</html>", "text/html")
    result = podrun("feed", "inspect", demo_cdn.url("/bad.xml"), ok=False)
    assert result.exit_code != 0 and "bad.xml" in result.output and len(result.output.strip().splitlines()) == 1


def test_fetch_feeds_accepts_a_single_catalog_file(settings, demo_catalog, podrun):
    """`--feeds FILE` (as --help offers) once crashed with FileExistsError."""
    [catalog_file] = demo_catalog(["tech-talk"])
    other = settings.home / "elsewhere"
    other.mkdir()
    single = other / "tier1_feeds.yaml"
    single.write_text(catalog_file.read_text())
    catalog_file.unlink()
    out = podrun("fetch", "--feeds", str(single), "--limit", "1").output
    assert "downloading 1 episodes" in out
    assert SqliteCheckpointStore(settings.checkpoint_db).counts()["downloaded"] == 1


def test_fetch_feeds_accepts_a_folder(settings, demo_catalog, podrun):
    demo_catalog(["science-weekly"])
    out = podrun("fetch", "--feeds", str(settings.feeds_dir), "--dry-run").output
    assert "DRY RUN: would download 3 episodes" in out


def test_a_bad_setting_is_one_sentence_not_a_traceback(home, podrun, monkeypatch):
    monkeypatch.setenv("PODINSIGHT_BATCH_SIZE", "eight")
    result = podrun("status", ok=False)
    assert result.exit_code == 2  # a bad setting (README: exit codes)
    assert result.output.strip() == "Error: PODINSIGHT_BATCH_SIZE='eight' is not a whole number"


def test_transcribe_speakers_retry_failed_and_stale(settings, demo_catalog, podrun, monkeypatch):
    """--speakers forces the count; failed transcriptions wait for --retry-failed; --stale redoes changed ones."""
    demo_catalog(["tech-talk"])
    podrun("fetch", "--limit", "2")
    store = SqliteCheckpointStore(settings.checkpoint_db)
    good, bad = [r.partition_key for r in store.episodes(state="downloaded")]
    audio = next((settings.raw_root / bad).rglob("episode.mp3"))
    audio.write_bytes(b"\0" * audio.stat().st_size)  # same size, not audio: a permanent failure

    result = podrun("transcribe", "--model", "tiny.en", "--speakers", "1", ok=False)
    assert result.exit_code == 1
    speakers = json.loads(next((settings.stage_root / good).rglob("speakers.json")).read_text())
    assert speakers["num_speakers"] == 1 and speakers["count_source"] != "estimated"  # the flag's count
    failed = store.stage(bad, "transcribe")
    assert (store.require(bad).state, failed.status, failed.retryable) == ("downloaded", "failed", False)

    assert "nothing to transcribe" in podrun("transcribe", "--model", "tiny.en").output  # not retried by itself
    podrun("transcribe", "--model", "tiny.en", "--retry-failed", ok=False)
    assert store.stage(bad, "transcribe").attempts == failed.attempts + 1

    assert "no stale transcripts" in podrun("transcribe", "--model", "tiny.en", "--stale").output
    before = store.stage(good, "transcribe").code_version
    monkeypatch.setenv("PODINSIGHT_TRANSCRIPT_SOURCE", "always_asr")  # part of the transcript's code version
    out = podrun("transcribe", "--model", "tiny.en", "--stale").output
    assert "transcribing 1 episodes" in out
    after = store.stage(good, "transcribe")
    assert after.status == "done" and after.code_version != before
