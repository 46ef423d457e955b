"""`podrun demo` end to end, as an operator runs it: a subprocess, a loopback server, the real tiny.en model."""

import json
import subprocess
import sys
from pathlib import Path

from dagster import AssetKey, DagsterInstance

from podinsight_dagster.speakers.metrics import diarization_error
from podinsight_dagster.store.checkpoints import SqliteCheckpointStore
from podinsight_dagster.transcribe.text import wer
from podinsight_dagster.demo.run import CONTENT, reference_text
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

    # The two-voice episode: two speakers, named from its podcast:person entries, in the right turns.
    [duo] = [e for e in episodes if e.enclosure_url.endswith("/audio/science-weekly/ep1.mp3")]
    truth = json.loads((CONTENT / "texts" / "science-weekly" / "ep1.turns.json").read_text())
    host, guest = truth["persons"]["host"], truth["persons"]["guest"]
    stage = home / "pod-insights-stage" / duo.partition_key
    spk = json.loads((stage / "speakers" / "speakers.json").read_text())
    assert spk["num_speakers"] == 2 and spk["count_source"] == "feed"
    assert {(s["name"], s["role"]) for s in spk["speakers"]} == {(host, "host"), (guest, "guest")}
    segments = json.loads((stage / "transcripts" / "transcript.json").read_text())["segments"]
    hyp = [(s["start"], s["end"], s["speaker"]) for s in segments]
    ref = [(t["start"], t["end"], truth["persons"][t["role"]]) for t in truth["turns"]]
    assert diarization_error(ref, hyp) <= 0.10

    def said_by(start, end):  # the name that speaks most of a true turn
        talk = {}
        for s0, s1, name in hyp:
            talk[name] = talk.get(name, 0.0) + max(0.0, min(end, s1) - max(start, s0))
        return max(talk, key=talk.get)
    assert [said_by(s, e) for s, e, _ in ref] == [name for _, _, name in ref]
    assert f"2: {host}, {guest}" in out.stdout  # the summary's speakers column

    # The same Dagster instance the UI uses shows every partition materialized.
    with DagsterInstance.from_config(str(home / "dagster")) as instance:
        keys = instance.get_dynamic_partitions(EPISODES)
        assert len(keys) == 9
        for asset in ("raw_audio", "transcript", "segments", "kpis"):
            assert instance.get_materialized_partitions(AssetKey(asset)) == set(keys), asset
