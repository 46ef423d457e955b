"""`podrun demo` end to end, as an operator runs it: a subprocess, a loopback server, the real tiny.en model."""

import json
import subprocess
import sys
from pathlib import Path

from dagster import AssetKey, DagsterInstance

from podinsight_dagster.store.checkpoints import SqliteCheckpointStore
from podinsight_dagster.transcribe.text import wer
from podinsight_dagster.demo.run import reference_text
from podinsight_dagster.partitions import EPISODES

ROOT = Path(__file__).resolve().parents[1]


def test_podrun_demo_end_to_end(home):
    podrun = Path(sys.executable).parent / "podrun"
    out = subprocess.run([str(podrun), "demo", "--model", "tiny.en"], cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "mean WER" in out.stdout and "make ui" in out.stdout

    # Run-book §2 layout, for every episode.
    store = SqliteCheckpointStore(home / "checkpoints.sqlite")
    episodes = store.episodes()
    assert len(episodes) == 9 and {e.state for e in episodes} == {"transcribed"}
    for ep in episodes:
        raw = home / "pod-insights-raw" / ep.partition_key
        stage = home / "pod-insights-stage" / ep.partition_key
        meta = json.loads((raw / "meta" / "meta.json").read_text())
        assert (raw / "audio" / "episode.mp3").stat().st_size == meta["bytes"] > 0
        assert meta["transcript_key"] == f"{ep.partition_key}/transcripts/transcript.json"
        assert meta["guid"] == ep.guid
        for rel in ("transcripts/transcript.json", "transcripts/transcript.vtt", "transcripts/transcript.srt",
                    "segments/segments.json", "kpis/kpis.json"):
            assert (stage / rel).is_file(), rel
        text = json.loads((stage / "transcripts" / "transcript.json").read_text())["text"]
        assert wer(reference_text(ep.enclosure_url), text) <= 0.20, ep.partition_key
    assert len(list((home / "pod-insights-manifests").glob("*.csv"))) == 1

    # The same Dagster instance the UI uses shows every partition materialized.
    with DagsterInstance.from_config(str(home / "dagster")) as instance:
        keys = instance.get_dynamic_partitions(EPISODES)
        assert len(keys) == 9
        for asset in ("raw_audio", "transcript", "segments", "kpis"):
            assert instance.get_materialized_partitions(AssetKey(asset)) == set(keys), asset
