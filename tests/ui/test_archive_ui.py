"""The UI driven end to end: after `podrun demo` (one feed), the demo's partitions materialized with their
figures, its runs under their jobs and on the Overview's timeline, re-executable as the same version; the asset
graph with its checks; a backfill of two partitions of another feed launched from the UI, the run succeeding,
check results with figures, the new-episodes sensor switched on and off, and the report. Then (through the
GraphQL API of the same `dagster dev`) the sensors react: an episode published is transcribed within two
minutes, their runs belong to the named jobs, and a failing feed fails the check on `feeds`.

Screenshots of every step are kept under tests/ui/artifacts/archive/ (gitignored); on failure also failure.png and
failure.html (the DOM), to find the selector that no longer matches.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner
from dagster import AssetKey, DagsterInstance, RunsFilter
from playwright.sync_api import expect

from podinsight_dagster.cli import main
from podinsight_dagster.demo.run import CONTENT, run_demo
from podinsight_dagster.fetch.catalog import load_catalog
from podinsight_dagster.fetch.discover import discover
from podinsight_dagster.partitions import EPISODES
from podinsight_dagster.services import build_services
from podinsight_dagster.store import layout
from podinsight_dagster.store.keys import EpisodeKey

from tests.support.cdn import Fault
from tests.support.feeds import add_to_catalog, serve_feed

from .conftest import SENSOR_INTERVAL_S, dismiss_community_dialog

pytestmark = pytest.mark.ui
ARTIFACTS = Path(__file__).resolve().parent / "artifacts" / "archive"
ASSETS = ("feeds", "episode_manifest", "raw_audio", "transcript", "segments", "kpis", "transcript_index",
          "archive_rollup")
CHECKS = ("download_success_rate", "per_host_429", "gpu_cost_today", "transcript_sanity", "every_feed_answers")


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_ui_driven_end_to_end(settings, demo_catalog, dagster_dev, browser_page, tmp_path):
    rows = run_demo(settings, say=lambda _msg: None, slugs=["tech-talk"])
    assert [r.status for r in rows] == ["transcribed"] * 3
    demo_catalog(["history-hour"])  # a second feed, discovered but not downloaded: the UI's backfill fetches it
    services = build_services(settings)
    keys = sorted(r["partition_key"] for r in discover(services, load_catalog(settings.feeds_dir)).manifest_rows)
    assert len(keys) == 3 and all(k.startswith("history-hour/") for k in keys)
    with DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        instance.add_dynamic_partitions(EPISODES, keys)
    shutil.rmtree(ARTIFACTS, ignore_errors=True)  # this run's screenshots only
    page = browser_page
    try:
        _drive(page, dagster_dev, keys, settings, tmp_path)
    except Exception:
        shot(page, "failure")
        (ARTIFACTS / "failure.html").write_text(page.content())
        raise


def _drive(page, base: str, keys: list[str], settings, tmp_path) -> None:
    # 0. After the demo, a data engineer sees its partitions materialized, a partition's figures one click away.
    page.goto(f"{base}/assets/kpis?view=partitions", wait_until="domcontentloaded")
    dismiss_community_dialog(page)
    page.get_by_text("tech-talk/tt-0001").first.wait_for(timeout=60000)
    page.get_by_text("Materialized (3)").wait_for(timeout=30000)
    body = page.inner_text("body")
    assert "Missing (3)" in body and "Failed (0)" in body  # the second feed's three are not fetched yet
    page.get_by_text("tech-talk/tt-0001").first.click()
    page.get_by_text("words_per_minute").first.wait_for(timeout=30000)
    assert "realtime_factor" in page.inner_text("body")
    shot(page, "00-demo-kpis-partition")

    # 0b. podrun's runs carry the workspace's job origin: listed on their job's Runs tab and on the Overview's
    # timeline (both said "No runs"), and re-executable as the same version (no "may be a different version").
    with DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        demo_runs = {job: [r.run_id for r in instance.get_runs(filters=RunsFilter(job_name=job))]
                     for job in ("ingest_catalog", "episode_pipeline")}
    assert all(demo_runs.values()), demo_runs
    page.goto(f"{base}/locations/podinsight/jobs/episode_pipeline/runs", wait_until="domcontentloaded")
    for run_id in demo_runs["episode_pipeline"]:
        page.get_by_text(run_id[:8], exact=True).first.wait_for(timeout=60000)
    shot(page, "00c-podrun-runs-under-their-job")
    page.goto(f"{base}/overview/activity/timeline", wait_until="domcontentloaded")
    for job in demo_runs:
        page.get_by_text(job, exact=True).first.wait_for(timeout=60000)
    shot(page, "00d-overview-timeline")
    for job, run_ids in demo_runs.items():
        snapshot = graphql(base, """query($job: String!) { pipelineOrError(params: {pipelineName: $job,
            repositoryName: "__repository__", repositoryLocationName: "podinsight"}) {
            ... on Pipeline { pipelineSnapshotId } } }""", job=job)["pipelineOrError"]["pipelineSnapshotId"]
        for run_id in run_ids:
            run = graphql(base, """query($id: ID!) { runOrError(runId: $id) { ... on Run { pipelineSnapshotId
                parentPipelineSnapshotId repositoryOrigin { repositoryName repositoryLocationName } } } }""",
                          id=run_id)["runOrError"]
            # What the UI compares before re-executing: the code location, then the job's snapshot.
            assert run["repositoryOrigin"] == {"repositoryName": "__repository__",
                                               "repositoryLocationName": "podinsight"}, run
            assert (run["parentPipelineSnapshotId"] or run["pipelineSnapshotId"]) == snapshot, (job, run)

    # 0c. The `config` resource shows the values in force (it showed "" / Default), typed, each field
    # described with the variable that sets it and its default.
    details = graphql(base, """{ topLevelResourceDetailsOrError(
        resourceSelector: {repositoryName: "__repository__", repositoryLocationName: "podinsight",
        resourceName: "config"}) { ... on ResourceDetails { configuredValues { key value }
        configFields { name description } } } }""")["topLevelResourceDetailsOrError"]
    values = {v["key"]: json.loads(v["value"]) for v in details["configuredValues"]}
    assert (values["model"], values["home"], values["device"]) == ("tiny.en", str(settings.home), "auto")
    assert values["new_episodes_interval_sec"] == SENSOR_INTERVAL_S and values["cost_ceiling_usd"] == 40.0
    assert "dagster_token" not in values and "dagster_cloud_api_token" not in values
    described = {f["name"]: f["description"] for f in details["configFields"]}
    assert described["batch_size"] == "PODINSIGHT_BATCH_SIZE (default 8): speech chunks per batch"
    page.goto(f"{base}/locations/podinsight/resources/config", wait_until="domcontentloaded")
    dismiss_community_dialog(page)
    page.get_by_text("PODINSIGHT_BATCH_SIZE (default 8)").first.wait_for(timeout=60000)
    shot(page, "00e-config-resource")

    # 1. The asset graph: every asset, and the checks on them.
    page.goto(f"{base}/asset-groups", wait_until="domcontentloaded")
    dismiss_community_dialog(page)
    page.get_by_text("episodes", exact=True).last.wait_for(timeout=60000)
    shot(page, "00b-lineage")  # the graph opens with its three groups collapsed
    page.goto(f"{base}/assets", wait_until="domcontentloaded")
    for name in ASSETS:
        page.get_by_text(name, exact=True).first.wait_for(timeout=60000)
    page.get_by_text("6 partitions").first.wait_for(timeout=30000)
    shot(page, "01-asset-graph")
    for asset, checks in (("raw_audio", CHECKS[:2]), ("transcript", CHECKS[2:3]), ("kpis", CHECKS[3:4]),
                          ("feeds", CHECKS[4:])):
        page.goto(f"{base}/assets/{asset}?view=checks", wait_until="domcontentloaded")
        for name in checks:
            page.get_by_text(name).first.wait_for(timeout=30000)
        shot(page, f"02-{asset}-checks")

    # 2. raw_audio's partitions: launch a backfill of two of them from the UI.
    page.goto(f"{base}/assets/raw_audio?view=partitions", wait_until="domcontentloaded")
    page.get_by_text("Missing (3)").first.wait_for(timeout=60000)
    shot(page, "03-raw-audio-partitions")
    page.get_by_text(re.compile(r"^Materialize")).first.click()
    dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize raw_audio")
    dialog.wait_for(timeout=30000)
    shot(page, "04-launch-dialog")
    # Custom selection: the partition picker is a radix popover (not a Blueprint one) holding a filter box and a
    # virtualized menu of checkboxes whose labels are middle-truncated, so an option is found by its title.
    picker = dialog.locator("[aria-haspopup=dialog]").filter(has_text="Select a partition or create one")
    picker.click()
    menu = page.locator("[data-radix-popper-content-wrapper]").filter(has=page.get_by_placeholder("Filter partitions"))
    for key in keys[:2]:
        menu.get_by_placeholder("Filter partitions").fill(key)
        option = menu.get_by_role("menuitem").filter(has=page.locator(f'[title="{key}"]'))
        option.click()
        expect(option.locator("input[type=checkbox]")).to_be_checked(timeout=10000)
    dialog.get_by_text("Launch runs to materialize raw_audio").click()  # closes the popover
    expect(menu).to_be_hidden(timeout=10000)
    dialog.get_by_text("2 partitions").wait_for(timeout=30000)
    shot(page, "05-two-partitions-selected")
    dialog.get_by_role("button", name="Launch backfill").click()
    expect(dialog).to_be_hidden(timeout=30000)
    page.get_by_text("Created backfill").first.wait_for(timeout=30000)
    shot(page, "05b-backfill-launched")

    # 3. Watch the run succeed (the backfill page shows it; the instance confirms).
    page.goto(f"{base}/runs", wait_until="domcontentloaded")
    deadline = time.monotonic() + 240
    with DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        while time.monotonic() < deadline:
            if len(instance.get_materialized_partitions(AssetKey("raw_audio")) & set(keys)) >= 2:
                break
            time.sleep(2)
        assert instance.get_materialized_partitions(AssetKey("raw_audio")) & set(keys) == set(keys[:2])
    page.reload(wait_until="domcontentloaded")
    page.get_by_text("Success", exact=True).first.wait_for(timeout=60000)
    shot(page, "06-run-succeeded")

    # 4. The checks' results with their figures (the metadata table of the latest execution).
    page.goto(f"{base}/assets/raw_audio?view=checks", wait_until="domcontentloaded")
    for check, figure, value in (("download_success_rate", "overall_percent", "100"),
                                 ("per_host_429", "per_host_percent", None)):
        page.get_by_text(check, exact=True).first.click()
        page.get_by_text("Passed", exact=True).first.wait_for(timeout=60000)
        cells = page.locator("tr").filter(has=page.get_by_text(figure, exact=True)).first.locator("td")
        expect(cells.first).to_have_text(figure, timeout=30000)
        if value is not None:
            expect(cells.nth(1)).to_have_text(value)
        shot(page, f"07-check-{check}")

    # 5. Switch the new-episodes sensor on, then off: the "Running" row's switch (a styled, hidden checkbox).
    page.goto(f"{base}/locations/podinsight/sensors/new_episodes_sensor", wait_until="domcontentloaded")
    row = page.locator("tr").filter(has=page.get_by_text("Running", exact=True))
    switch = row.locator("input[type=checkbox]")
    expect(switch).to_be_attached(timeout=60000)
    expect(switch).not_to_be_checked()
    for on in (True, False):
        row.locator("label:has(input[type=checkbox])").click()
        (expect(switch).to_be_checked if on else expect(switch).not_to_be_checked)(timeout=30000)
        _wait_for(lambda: _sensor_running(settings) == on, 30, f"sensor running == {on} in the instance")
        shot(page, "08-sensor-on" if on else "09-sensor-off")

    # 6. The report, opened from disk.
    out = tmp_path / "report.html"
    result = CliRunner().invoke(main, ["report", "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    page.goto(out.as_uri(), wait_until="load")
    page.get_by_text("Download success rate per feed").wait_for(timeout=10000)
    assert page.locator("svg").count() >= 2
    assert "tech-talk" in page.inner_text("body")
    shot(page, "10-report")


def _sensor_running(settings) -> bool:
    from dagster._core.scheduler.instigation import InstigatorStatus

    with DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        states = [s for s in instance.all_instigator_state() if s.name == "new_episodes_sensor"]
    return bool(states) and states[0].status == InstigatorStatus.RUNNING


def _wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.5)
    return value


def test_sensors_react_their_runs_belong_to_named_jobs_and_a_failing_feed_fails_a_check(settings, demo_cdn,
                                                                                        dagster_dev):
    """Both sensors on (at the module's 5 s intervals) through the GraphQL API, as a user switches them on."""
    from podinsight_dagster.services import build_services
    from podinsight_dagster.store.checkpoints import DOWNLOADED

    base = dagster_dev
    services = build_services(settings)
    news = serve_feed(demo_cdn, "sensor-news", [])  # nothing published yet
    demo_cdn.add_file("/feeds/broken-news.xml", b"<rss/>", content_type="application/rss+xml")
    demo_cdn.set_fault("/feeds/broken-news.xml", Fault(status=500))
    add_to_catalog(settings.feeds_dir, [news, {"slug": "broken-news", "url": demo_cdn.url("/feeds/broken-news.xml"),
                                               "tier": 3}])
    def transcribed(keys: list[str]) -> bool:
        return all((settings.stage_root / layout.transcript_key(EpisodeKey.parse(pk))).is_file() for pk in keys)

    waiting = [r.partition_key for r in services.checkpoints.episodes(state=DOWNLOADED)]  # an earlier test's
    sensor_ids = []
    for name in ("new_episodes_sensor", "auto_transcribe_sensor"):
        started = graphql(base, """mutation($s: SensorSelector!) { startSensor(sensorSelector: $s) { __typename
            ... on Sensor { sensorState { id status } } ... on PythonError { message } } }""",
                          s={"repositoryName": "__repository__", "repositoryLocationName": "podinsight",
                             "sensorName": name})["startSensor"]
        assert started.get("sensorState", {}).get("status") == "RUNNING", started
        sensor_ids.append(started["sensorState"]["id"])
    try:
        # What was downloaded and waiting goes to transcription in one run (batched), through the named job.
        _wait_for(lambda: transcribed(waiting), 150, f"the waiting episodes {waiting} transcribed")
        _wait_for(lambda: (feed := services.checkpoints.get_feed("sensor-news")) is not None and feed.checked_at, 60,
                  "a first poll of sensor-news")

        # A feed answering 500 fails the every_feed_answers check on `feeds`, naming it and its error.
        check = _wait_for(lambda: _latest_feeds_check(base, failed=True), 60, "every_feed_answers failing")
        assert "broken-news" in check["description"] and "500" in check["description"], check

        # Publish an episode: its transcript is there within two minutes.
        serve_feed(demo_cdn, "sensor-news", [("news-0001", CONTENT / "audio" / "science-weekly" / "ep1.mp3")])
        published = time.monotonic()
        _wait_for(lambda: transcribed([r.partition_key for r in services.checkpoints.episodes(
            feed_slug="sensor-news")] or ["sensor-news/none-yet"]), 120, "the published episode's transcript")
        print(f"published -> transcript in {time.monotonic() - published:.0f} s")
    finally:
        for sensor_id in sensor_ids:
            graphql(base, """mutation($id: String!) { stopSensor(id: $id) { __typename } }""", id=sensor_id)

    # Their runs belong to the named jobs (listed on the jobs' pages), none to the hidden __ASSET_JOB.
    def runs(**run_filter) -> list[dict]:
        return graphql(base, """query($f: RunsFilter!) { runsOrError(filter: $f) { ... on Runs { results {
            runId pipelineName tags { key value } } } } }""", f=run_filter)["runsOrError"]["results"]

    by_sensor = {name: runs(tags=[{"key": "podinsight/trigger", "value": name}])
                 for name in ("new_episodes_sensor", "auto_transcribe_sensor")}
    assert {r["pipelineName"] for r in by_sensor["new_episodes_sensor"]} == {"fetch_episodes"}
    assert {r["pipelineName"] for r in by_sensor["auto_transcribe_sensor"]} == {"transcribe_episodes"}
    assert len(runs(pipelineName="transcribe_episodes")) >= len(by_sensor["auto_transcribe_sensor"])
    # The episodes that waited went in one run, the published one in another.
    ranges = sorted((t["dagster/asset_partition_range_start"], t["dagster/asset_partition_range_end"])
                    for r in by_sensor["auto_transcribe_sensor"] for t in [{x["key"]: x["value"] for x in r["tags"]}])
    assert len(ranges) == (2 if waiting else 1), ranges


def graphql(base: str, query: str, **variables) -> dict:
    resp = requests.post(f"{base}/graphql", json={"query": query, "variables": variables}, timeout=60)
    resp.raise_for_status()
    body = resp.json()
    assert not body.get("errors"), body["errors"]
    return body["data"]


def _latest_feeds_check(base: str, failed: bool) -> dict | None:
    executions = graphql(base, """{ assetCheckExecutions(assetKey: {path: ["feeds"]}, checkName: "every_feed_answers",
        limit: 1) { status evaluation { success description } } }""")["assetCheckExecutions"]
    if executions and executions[0]["evaluation"] and executions[0]["evaluation"]["success"] is (not failed):
        return executions[0]["evaluation"]
    return None
