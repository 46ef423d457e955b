"""A podrun killed mid-download, mid-transcription or between transcription and KPIs, re-run later: nothing
duplicated (no second download, no second transcription or spend line), nothing lost."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from tests.support.cdn import Fault
from podinsight_dagster.costs.budget import SqliteSpendLedger
from podinsight_dagster.store.checkpoints import DONE, KPIS, TRANSCRIBE, SqliteCheckpointStore

from .conftest import audio_bytes

ROOT = Path(__file__).resolve().parents[1]
PODRUN = str(Path(sys.executable).parent / "podrun")


def _start(*args) -> subprocess.Popen:
    return subprocess.Popen([PODRUN, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True, text=True)


def _kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def _wait_for(predicate, proc, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_killed_fetch_and_transcribe_rerun_complete(settings, demo_catalog, demo_cdn):
    demo_catalog(["tech-talk"])
    store = SqliteCheckpointStore(settings.checkpoint_db)
    # ep2 trickles at 20 kB/s (about 10 s for its 200 kB): the kill lands mid-body.
    demo_cdn.set_fault("/audio/tech-talk/ep2.mp3", Fault(bandwidth_bps=20_000))
    proc = _start("fetch")
    _wait_for(lambda: any(r.path == "/audio/tech-talk/ep2.mp3" for r in demo_cdn.requests)
              or demo_cdn.active > 0 and store.counts()["downloaded"] >= 1, proc)
    time.sleep(1.5)
    _kill(proc)
    assert store.counts()["downloaded"] < 3
    # Nothing half-written is visible as an object: only whole files with their meta.json.
    for meta in settings.raw_root.glob("*/*/meta/meta.json"):
        doc = json.loads(meta.read_text())
        assert (settings.raw_root / doc["audio_key"]).stat().st_size == doc["bytes"]
    visible = [p for p in settings.raw_root.rglob("*") if p.is_file() and ".partial" not in p.parts]
    assert all(p.name in ("episode.mp3", "meta.json") for p in visible)
    assert len([p for p in visible if p.name == "episode.mp3"]) == len(list(settings.raw_root.glob("*/*/meta/meta.json")))

    demo_cdn.set_fault("/audio/tech-talk/ep2.mp3", None)
    done_before = {r.partition_key for r in store.episodes(state="downloaded")}
    requests_before = {f"/audio/tech-talk/ep{i}.mp3": demo_cdn.request_count(f"/audio/tech-talk/ep{i}.mp3")
                       for i in (1, 2, 3)}
    out = subprocess.run([PODRUN, "fetch"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "marked run" in out.stdout  # the killed run is not left "started" forever
    assert store.counts()["downloaded"] == 3
    for rec in store.episodes():
        ep = rec.enclosure_url.rsplit("/", 1)[1][:-4]
        data = (settings.raw_root / rec.partition_key / "audio" / "episode.mp3").read_bytes()
        assert hashlib.sha256(data).hexdigest() == hashlib.sha256(audio_bytes("tech-talk", ep)).hexdigest()
        if rec.partition_key in done_before:  # finished downloads are not fetched again
            assert demo_cdn.request_count(f"/audio/tech-talk/{ep}.mp3") == requests_before[f"/audio/tech-talk/{ep}.mp3"]

    proc = _start("transcribe", "--model", "tiny.en")
    # Killed as soon as the first transcript is written: mid-way through the transcript step.
    _wait_for(lambda: any(settings.stage_root.glob("*/*/transcripts/transcript.json")), proc, timeout=300)
    _kill(proc)
    assert store.counts()["transcribed"] == 0

    # Killed again between transcription and KPIs: every transcript done (and paid for), no KPIs yet.
    keys = [r.partition_key for r in store.episodes()]
    proc = _start("transcribe", "--model", "tiny.en")
    _wait_for(lambda: all(store.stage(pk, TRANSCRIBE).status == DONE for pk in keys), proc, timeout=300)
    _kill(proc)
    assert any(store.stage(pk, KPIS).status != DONE for pk in keys)
    assert store.counts()["transcribed"] < 3
    ledger = SqliteSpendLedger(settings.checkpoint_db)
    paid = sorted(e.partition_key for e in ledger.entries())
    assert set(paid) == set(keys)
    attempts = {pk: store.stage(pk, TRANSCRIBE).attempts for pk in keys}

    out = subprocess.run([PODRUN, "transcribe", "--model", "tiny.en"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert store.counts()["transcribed"] == 3
    # The re-run wrote the missing segments and KPIs from the transcripts it found: nothing transcribed again.
    assert sorted(e.partition_key for e in ledger.entries()) == paid
    assert {pk: store.stage(pk, TRANSCRIBE).attempts for pk in keys} == attempts
    for rec in store.episodes():
        stage = settings.stage_root / rec.partition_key
        assert json.loads((stage / "transcripts" / "transcript.json").read_text())["text"]
        assert len((stage / "segments" / "segments.json").read_text().splitlines()) >= 3
    with DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        assert not instance.get_runs_count(filters=RunsFilter(statuses=[DagsterRunStatus.STARTED]))
