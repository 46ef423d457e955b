"""The UI driven end to end: after `podrun demo` (one feed), the demo's partitions materialized with their
figures; the asset graph with its checks; a backfill of two partitions of another feed launched from the UI,
the run succeeding, check results with figures, the new-episodes sensor switched on and off, and the report.

Screenshots of every step are kept under tests/ui/artifacts/archive/ (gitignored); on failure also failure.png and
failure.html (the DOM), to find the selector that no longer matches.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from dagster import AssetKey, DagsterInstance
from playwright.sync_api import expect

from podinsight_dagster.cli import main
from podinsight_dagster.demo.run import run_demo
from podinsight_dagster.fetch.catalog import load_catalog
from podinsight_dagster.fetch.discover import discover
from podinsight_dagster.partitions import EPISODES
from podinsight_dagster.services import build_services

from .conftest import dismiss_community_dialog

pytestmark = pytest.mark.ui
ARTIFACTS = Path(__file__).resolve().parent / "artifacts" / "archive"
ASSETS = ("feeds", "episode_manifest", "raw_audio", "transcript", "segments", "kpis", "transcript_index",
          "archive_rollup")
CHECKS = ("download_success_rate", "per_host_429", "gpu_cost_today", "transcript_sanity")


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
    for asset, checks in (("raw_audio", CHECKS[:2]), ("transcript", CHECKS[2:3]), ("kpis", CHECKS[3:])):
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


def _wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.5)
