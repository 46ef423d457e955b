"""A backfill as many runs at once: `dagster dev`'s daemon runs a backfill's runs side by side.

The instance's run coordinator is the QueuedRunCoordinator with at most 3 runs at once; the episode
assets' backfill policy puts PODINSIGHT_EPISODES_PER_RUN episodes in a run; podrun's launcher asks the
running deployment for the backfill through its GraphQL API (what `podrun --dagster-url` does) and waits
for it. Counted at the servers: every episode fetched once from the loopback CDN (GETs), transcribed once
(its stage attempted once), paid once (one spend-ledger line each: SQLite locally, DynamoDB on AWS), in
the index; every run succeeded (none failed because another run held something), never more than 3 at
once, and several at once.

Lean on purpose: 2-second clips, tiny.en. The 40-episode count (5 a run: 8 runs) runs on the AWS
deployment (moto's server), the same checks with 10 episodes (2 a run: 5 runs) on the local one.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterEventType, DagsterInstance, DagsterRunStatus

from podinsight_dagster.fetch.catalog import load_catalog
from podinsight_dagster.fetch.discover import discover
from podinsight_dagster.instance import get_instance
from podinsight_dagster.launch import GraphQLLauncher
from podinsight_dagster.services import build_services, build_transcript_index
from podinsight_dagster.settings import Settings
from podinsight_dagster.store.checkpoints import DONE, TRANSCRIBE, TRANSCRIBED
from tests.conftest import make_aws_stack
from tests.support.dagster_dev import dagster_dev_server
from tests.support.feeds import add_to_catalog, serve_feed

CLIP = Path(__file__).resolve().parent / "fixtures" / "audio" / "tiny-2s.mp3"  # not clip-*: those are the 14-33 s batching fixtures
MAX_CONCURRENT_RUNS = 3
DAGSTER_YAML = f"""\
# The local instance's (podinsight_dagster/instance.py) with the run queue: the QueuedRunCoordinator, at most
# {MAX_CONCURRENT_RUNS} runs at once (Dagster takes the limit from `concurrency: runs:` once pools are configured there).
telemetry:
  enabled: false
run_coordinator:
  module: dagster._core.run_coordinator
  class: QueuedRunCoordinator
  config:
    dequeue_interval_seconds: 1
concurrency:
  pools:
    granularity: op
    default_limit: 4
  runs:
    max_concurrent_runs: {MAX_CONCURRENT_RUNS}
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  poll_interval_seconds: 10
  free_slots_after_run_end_seconds: 30
"""


def _most_at_once(runs) -> int:
    """The most runs that were running at the same moment (from their start and end times)."""
    edges = sorted([(r.start_time, 1) for r in runs] + [(r.end_time, -1) for r in runs])
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def _failures(instance, runs) -> str:
    lines = []
    for run in runs:
        if run.status != DagsterRunStatus.SUCCESS:
            lines.append(f"run {run.run_id} {run.status}")
            lines += [f"  {e.step_key}: {e.user_message[:500]}" for e in instance.all_logs(run.run_id)
                      if e.dagster_event_type in (DagsterEventType.STEP_FAILURE, DagsterEventType.RUN_FAILURE)]
    lines += [f"run {r.run_id} {r.status.value}" for r in instance.get_runs() if r.status != DagsterRunStatus.SUCCESS
              and not any(r.run_id in line for line in lines)]
    return "\n".join(lines)


def _daemon_lines(log: Path) -> str:
    """The daemon's and the webserver's lines of `dagster dev`'s log (not the runs' step events), last 60."""
    lines = [line for line in log.read_text(errors="replace").splitlines()
             if " - episode_pipeline - " not in line and not line.startswith((" ", "many-"))]
    return "\n".join(lines[-60:])


def backfill_many_runs(settings: Settings, cdn, tmp_path: Path, episodes: int, per_run: int) -> None:
    feeds = 2
    entries = [serve_feed(cdn, f"many-{f}", [(f"ep-{f}-{i:02d}", CLIP) for i in range(episodes // feeds)],
                          seconds=2) for f in range(feeds)]
    add_to_catalog(settings.feeds_dir, entries)
    (settings.dagster_home / "dagster.yaml").write_text(DAGSTER_YAML)
    get_instance(settings).dispose()  # as `make ui` does first: the pools' limits (one transcription at a time)
    services = build_services(settings)
    keys = [r["partition_key"] for r in discover(services, load_catalog(settings.feeds_dir)).manifest_rows]
    assert len(keys) == episodes
    audio_paths = {f"/audio/{e['slug']}/ep-{e['slug'].split('-')[1]}-{i:02d}.mp3"
                   for e in entries for i in range(episodes // feeds)}

    log = tmp_path / "dagster-dev.log"
    with dagster_dev_server(settings, log) as url:
        said: list[str] = []
        # Well inside pytest's timeout, so a stuck backfill fails with what the daemon and the runs said.
        outcome = GraphQLLauncher(url, say=said.append, timeout_s=420, poll_s=1.0).run_partitions(
            "episode_pipeline", keys)

    with DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        runs = [r for r in instance.get_run_records() if r.dagster_run.tags.get("dagster/backfill") == outcome.detail]
        assert outcome.success, (f"{said}\n{outcome.detail}\n{_failures(instance, [r.dagster_run for r in runs])}\n"
                                 f"{_daemon_lines(log)}")
        assert len(runs) == outcome.runs == math.ceil(episodes / per_run)
        assert all(r.dagster_run.status == DagsterRunStatus.SUCCESS for r in runs)
        assert {r.dagster_run.job_name for r in runs} == {"episode_pipeline"}  # listed on the job's pages
        assert all(r.dagster_run.run_config == {"execution": {"config": {"in_process": {}}}} for r in runs)
        assert 2 <= _most_at_once(runs) <= MAX_CONCURRENT_RUNS
        assert instance.get_materialized_partitions(AssetKey("transcript_index")) == set(keys)

    # Each episode fetched once (GETs at the CDN), transcribed once, paid once, indexed.
    gets = Counter(r.path for r in cdn.requests if r.method == "GET" and r.path.startswith("/audio/many-"))
    assert set(gets) == audio_paths and set(gets.values()) == {1}, gets
    for pk in keys:
        st = services.checkpoints.stage(pk, TRANSCRIBE)
        assert (st.status, st.attempts) == (DONE, 1), (pk, st)
        assert services.checkpoints.get(pk).state == TRANSCRIBED
    ledger = Counter(e.partition_key for e in services.budget.ledger.entries())
    assert ledger == Counter(keys)
    index = build_transcript_index(settings)
    try:
        assert index.stats()["episodes"] == episodes
    finally:
        index.close()


def test_a_backfill_on_the_aws_deployment_runs_side_by_side_and_does_each_episode_once(
        aws_home, moto_server, demo_cdn, tmp_path, monkeypatch):
    monkeypatch.setenv("PODINSIGHT_EPISODES_PER_RUN", "5")
    settings = Settings.from_env()
    settings.ensure_dirs()
    make_aws_stack(moto_server, settings)
    backfill_many_runs(settings, demo_cdn, tmp_path, episodes=40, per_run=5)


def test_a_backfill_on_the_local_deployment_runs_side_by_side_and_does_each_episode_once(
        home, demo_cdn, tmp_path, monkeypatch):
    monkeypatch.setenv("PODINSIGHT_EPISODES_PER_RUN", "2")
    settings = Settings.from_env()
    settings.ensure_dirs()
    backfill_many_runs(settings, demo_cdn, tmp_path, episodes=10, per_run=2)


def test_the_episode_assets_take_their_runs_size_from_the_settings(tmp_path):
    from podinsight_dagster.assets import assets_for

    settings = Settings.from_env({"PODINSIGHT_HOME": str(tmp_path), "PODINSIGHT_EPISODES_PER_RUN": "7"})
    policies = {a.key.to_user_string(): a.backfill_policy for a in assets_for(settings)}
    episode_assets = ("raw_audio", "transcript", "speakers", "chapters", "segments", "kpis", "transcript_index")
    assert {policies[name].max_partitions_per_run for name in episode_assets} == {7}
    assert policies["feeds"] is None and policies["archive_rollup"] is None
