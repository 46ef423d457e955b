"""The auto-transcribe sensor, `podrun transcribe` and a UI backfill racing for the same downloaded episodes."""

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from dagster import DagsterEventType, DagsterInstance, build_sensor_context, materialize

from podinsight_dagster.assets import assets_for
from podinsight_dagster.costs.budget import SqliteSpendLedger
from podinsight_dagster.definitions import resources_for
from podinsight_dagster.launch import JOB_ASSETS
from podinsight_dagster.partitions import RANGE_END_TAG, RANGE_START_TAG
from podinsight_dagster.sensors import auto_transcribe_sensor
from podinsight_dagster.store.checkpoints import DONE, TRANSCRIBE, TRANSCRIBED, SqliteCheckpointStore
from tests.support.feeds import add_to_catalog, serve_feed

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FIXTURES = ROOT / "tests" / "fixtures" / "audio"
POOL = "podinsight_transcribe"
IN_PROCESS = {"execution": {"config": {"in_process": {}}}}


def _transcript_step(instance, run_id: str) -> dict:
    """The run's transcript step: start and end times, its totals, and what it logged per episode."""
    out: dict = {"messages": [], "totals": []}
    for e in instance.all_logs(run_id):
        if e.step_key != "transcript":
            continue
        kind = e.dagster_event_type
        if kind == DagsterEventType.STEP_START:
            out["start"] = e.timestamp
        elif kind in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE):
            out["end"], out["status"] = e.timestamp, kind
        elif kind == DagsterEventType.ASSET_MATERIALIZATION:
            meta = e.dagster_event.event_specific_data.materialization.metadata
            out["totals"].append({k: meta[k].value for k in ("succeeded", "failed", "skipped") if k in meta})
        elif kind is None and "] " in e.user_message:
            out["messages"].append(e.user_message)
    return out


def test_sensor_podrun_and_ui_backfill_transcribe_each_episode_once(settings, demo_cdn, podrun, tmp_path):
    """Three launchers, three processes, the same three episodes, transcript steps started together.

    The instance's pool (one transcription step at a time per machine) would run the three transcript
    steps one after another; the test holds the pool's only slot until all three wait for it, then gives
    it three (a deployment with three GPU workers, or the runs of two machines), so the three steps claim
    the same episodes at the same moment. Proven: each episode is transcribed once (one claim, one
    transcript write, one spend line), the others skip it, and all three runs succeed.
    """
    # Three short clips (14 to 22 s): the race is about claims and money, not about long audio.
    add_to_catalog(settings.feeds_dir, [serve_feed(demo_cdn, "race", [
        (f"r{i}", FIXTURES / f"clip-{n}s.mp3") for i, n in enumerate((14, 18, 22), 1)])])
    podrun("fetch")
    store = SqliteCheckpointStore(settings.checkpoint_db)
    keys = [r.partition_key for r in store.episodes(state="downloaded")]
    assert len(keys) == 3
    run_config = tmp_path / "in_process.yaml"
    run_config.write_text(json.dumps(IN_PROCESS))
    with DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        with build_sensor_context(instance=instance, resources=resources_for("local")) as ctx:
            [request] = auto_transcribe_sensor(ctx)
        assert (request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]) == (keys[0], keys[-1])
        storage = instance.event_log_storage
        storage.set_concurrency_slots(POOL, 1)
        assert storage.claim_concurrency_slot(POOL, "test-barrier", "barrier").is_claimed

        cli = subprocess.Popen([str(BIN / "podrun"), "transcribe", "--model", "tiny.en"], cwd=ROOT, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        # A UI backfill's run: the transcribe_episodes job over the range, in a process of its own (in-process
        # executor: dagster dev's one subprocess per step would only add minutes).
        ui = subprocess.Popen([str(BIN / "dagster"), "job", "execute", "-m", "podinsight_dagster.definitions",
                               "-j", "transcribe_episodes", "-c", str(run_config), "--tags",
                               json.dumps({RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[-1]})],
                              cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        sensor_run = {}
        # The sensor's run request executed as the daemon would: its job's assets, its tags, on this instance.
        assert auto_transcribe_sensor.job_name == "transcribe_episodes" and request.run_config == IN_PROCESS
        thread = threading.Thread(target=lambda: sensor_run.setdefault("result", materialize(
            assets_for(settings), selection=JOB_ASSETS["transcribe_episodes"], instance=instance,
            resources=resources_for("local"), tags=request.tags, raise_on_error=False)))
        thread.start()
        try:
            deadline = time.monotonic() + 240
            while len(storage.get_concurrency_info(POOL).pending_run_ids) < 3:
                assert cli.poll() is None and ui.poll() is None, (cli.poll(), ui.poll())
                assert time.monotonic() < deadline, storage.get_concurrency_info(POOL)
                time.sleep(0.1)
            storage.set_concurrency_slots(POOL, 4)
            out_cli, _ = cli.communicate(timeout=300)
            out_ui, _ = ui.communicate(timeout=300)
            thread.join(timeout=300)
        finally:
            storage.free_concurrency_slots_for_run("test-barrier")
            for proc in (cli, ui):
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            thread.join(timeout=300)
        assert cli.returncode == 0, out_cli
        assert ui.returncode == 0, out_ui[-5000:]
        assert sensor_run["result"].success

        runs = {r.run_id: r for r in instance.get_runs() if r.job_name != "fetch_episodes"
                and r.job_name != "ingest_catalog"}
        assert len(runs) == 3
        steps = {run_id: _transcript_step(instance, run_id) for run_id in runs}
        assert all(s["status"] == DagsterEventType.STEP_SUCCESS for s in steps.values())
        # Concurrent: every transcript step started while the one(s) that transcribed were at work.
        winners = [s for s in steps.values() if s["totals"][0]["succeeded"]]
        assert max(s["start"] for s in steps.values()) < min(s["end"] for s in winners)
        # Each episode transcribed once in all: one transcript write, one claim, one spend line.
        totals = [s["totals"][0] for s in steps.values()]
        assert sum(t["succeeded"] for t in totals) == len(keys)
        assert sum(t["skipped"] for t in totals) == 2 * len(keys) and not any(t["failed"] for t in totals)
        ledger = SqliteSpendLedger(settings.checkpoint_db).entries()
        assert Counter(e.partition_key for e in ledger) == Counter(keys)
        assert {e.run_id for e in ledger} <= set(runs)
        for pk in keys:
            st = store.stage(pk, TRANSCRIBE)
            assert (st.status, st.attempts, st.owner) == (DONE, 1, None)
            assert store.get(pk).state == TRANSCRIBED
            assert (settings.stage_root / pk / "kpis" / "kpis.json").is_file()
        # The losers skipped cleanly, saying why (held by the winner, or already done by then).
        skips = [m for s in steps.values() for m in s["messages"] if "skipped" in m]
        assert len(skips) == 2 * len(keys)
        assert all("claimed by" in m or "already done" in m for m in skips), skips
        assert not storage.get_concurrency_info(POOL).claimed_slots  # every slot given back
