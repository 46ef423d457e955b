"""A podrun killed mid-download, inside the spend-ledger write, or between transcription and KPIs, re-run
later: nothing duplicated (no second download, no second transcription or spend line), nothing lost."""

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
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
    """Three kills, each re-run by the same command.

    1. `podrun fetch` killed mid-body: the re-run downloads only what is missing, whole files only.
    2. `podrun transcribe` killed inside the spend-ledger write of its first transcription (the test holds the
       ledger's SQLite database exclusively, so the INSERT blocks; the transcript is written, its stage still
       running, no line yet). The next run adopts that transcript: not transcribed again, and its spend line
       is written once, in the killed run's name. No line lost, none doubled.
    3. `podrun transcribe` killed between transcription and KPIs (every transcript done and paid): the last
       re-run writes segments and KPIs from the transcripts, adding no spend line and no transcription.
    """
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

    keys = [r.partition_key for r in store.episodes()]
    ledger = SqliteSpendLedger(settings.checkpoint_db)
    written = lambda: list(settings.stage_root.glob("*/*/transcripts/transcript.json"))  # noqa: E731
    proc = _start("transcribe", "--model", "tiny.en")
    # Every episode claimed (before any audio is decoded): now hold the ledger's database, as a long writer
    # would. Readers pass (WAL); the first finished transcription blocks in its spend line's INSERT.
    _wait_for(lambda: all(store.stage(pk, TRANSCRIBE).status == "running" for pk in keys), proc, timeout=300)
    lock = sqlite3.connect(settings.checkpoint_db, isolation_level=None, timeout=30)
    try:
        lock.execute("BEGIN EXCLUSIVE")
        assert not ledger.entries() and not written()
        _wait_for(lambda: written(), proc, timeout=300)
        time.sleep(0.5)  # its next statement is the ledger INSERT, which cannot pass the lock
        [transcript] = written()
        first = transcript.parent.parent.relative_to(settings.stage_root).as_posix()
        assert store.stage(first, TRANSCRIBE).status == "running" and not ledger.entries()
        _kill(proc)
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    killed_run = json.loads(transcript.read_text())["run_id"]
    assert killed_run and not ledger.entries() and store.counts()["transcribed"] == 0

    # Killed again between transcription and KPIs: every transcript done (and paid for), no KPIs yet.
    proc = _start("transcribe", "--model", "tiny.en")
    _wait_for(lambda: all(store.stage(pk, TRANSCRIBE).status == DONE for pk in keys), proc, timeout=300)
    _kill(proc)
    assert any(store.stage(pk, KPIS).status != DONE for pk in keys)
    assert store.counts()["transcribed"] < 3
    # One line per episode: the one whose line the kill cut off was adopted, not transcribed again, and
    # paid in the name of the run that did the work.
    lines = ledger.entries()
    assert Counter(e.partition_key for e in lines) == Counter(keys)
    assert [e.run_id for e in lines if e.partition_key == first] == [killed_run]
    assert json.loads(transcript.read_text())["run_id"] == killed_run
    others = {e.run_id for e in lines if e.partition_key != first}
    assert len(others) == 1 and killed_run not in others
    paid = sorted(e.partition_key for e in lines)
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
