"""`podrun demo` end to end, as an operator runs it: a subprocess, a loopback server, the real tiny.en model.

Where the connect audit can run (root, unshare, strace, ip: as in CI), the same demo process runs inside a
network namespace with no network under that audit (tests/test_no_network.py says how): nothing leaves the
machine. One demo run serves both proofs.
"""

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

from .test_no_network import HOLD_AFTER_ORT_S, HOLD_OPEN, clean_env, missing_prerequisite, run_audited

ROOT = Path(__file__).resolve().parents[1]


def _run_demo(home: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """`podrun demo --model tiny.en` on ``home``, audited for connections off the machine where that can run.

    The environment has no ORT_DISABLE_TELEMETRY (the package must set it itself) and a fresh model
    cache (the model comes out of its wheel, offline)."""
    env = clean_env(PODINSIGHT_HOME=str(home), PODINSIGHT_MODEL_CACHE=str(tmp_path / "models"), PYTHONPATH=str(ROOT))
    why_not = missing_prerequisite()
    if why_not is not None:
        print(f"connect audit not run ({why_not}); the demo runs unaudited")
        return subprocess.run([str(Path(sys.executable).parent / "podrun"), "demo", "--model", "tiny.en"], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=600)
    argv = [sys.executable, "-c", HOLD_OPEN, str(HOLD_AFTER_ORT_S), "podinsight_dagster.cli", "demo", "--model", "tiny.en"]
    audit = run_audited(argv, tmp_path / "demo.log", env, timeout=540)
    held = [line for line in audit.stderr.splitlines() if line.startswith("audit:")]
    print(f"demo audited in {audit.wall_s:.0f}s: {len(audit.log)} strace lines, {len(audit.loopback)} loopback, "
          f"{len(audit.violations)} off-machine; {held[-1] if held else 'no hold line'}")
    tail = f"\n--- stdout ---\n{audit.stdout[-3000:]}\n--- stderr ---\n{audit.stderr[-3000:]}"
    assert not audit.violations, audit.report() + tail
    # The audit saw real traffic: the demo's fetches from its loopback server.
    assert audit.loopback, "no loopback connection in the strace log: was the audit attached?" + tail
    # faster-whisper's VAD loaded onnxruntime, and the process outlived its telemetry delay.
    assert "audit: onnxruntime imported" in audit.stderr, tail
    assert audit.wall_s > HOLD_AFTER_ORT_S, audit.wall_s
    return subprocess.CompletedProcess(argv, audit.returncode, audit.stdout, audit.stderr)


def test_podrun_demo_end_to_end(home, tmp_path):
    out = _run_demo(home, tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "mean WER" in out.stdout and "make ui" in out.stdout and out.stdout.count(" transcribed") == 9

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
    assert spk["num_speakers"] == 2 and spk["count_source"] == "estimated" and spk["count_bound"] == 2
    assert {(s["name"], s["role"]) for s in spk["speakers"]} == {(host, "host"), (guest, "guest")}
    # Each name with its evidence: the host opens the show ("Welcome to science weekly"), the guest is the one left.
    assert {s["name"]: s["source"] for s in spk["speakers"]} == {host: "opening", guest: "one-left"}
    assert all(s["evidence"] for s in spk["speakers"])
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
