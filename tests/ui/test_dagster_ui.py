"""After the demo, a data engineer opening the Dagster UI sees the episode partitions materialized."""

import pytest

from podinsight_dagster.demo.run import run_demo
from podinsight_dagster.settings import Settings

from .conftest import dismiss_community_dialog

pytestmark = pytest.mark.ui


def test_ui_shows_demo_partitions_materialized(settings, demo_cdn, dagster_dev, browser_page, tmp_path):
    rows = run_demo(Settings.from_env(), say=lambda _msg: None, slugs=["tech-talk"])
    assert [r.status for r in rows] == ["transcribed"] * 3
    page = browser_page
    page.goto(f"{dagster_dev}/assets/kpis?view=partitions", wait_until="domcontentloaded")
    dismiss_community_dialog(page)
    page.get_by_text("tech-talk/tt-0001").first.wait_for(timeout=60000)
    page.get_by_text("Materialized (3)").wait_for(timeout=30000)
    body = page.inner_text("body")
    assert "Missing (0)" in body and "Failed (0)" in body
    # A partition's own figures are one click away.
    page.get_by_text("tech-talk/tt-0001").first.click()
    page.get_by_text("words_per_minute").first.wait_for(timeout=30000)
    page.screenshot(path=str(tmp_path / "kpis-partition.png"))
    assert "realtime_factor" in page.inner_text("body")
    page.goto(f"{dagster_dev}/assets", wait_until="domcontentloaded")
    dismiss_community_dialog(page)
    for name in ("feeds", "episode_manifest", "raw_audio", "transcript", "segments", "kpis"):
        page.get_by_text(name, exact=True).first.wait_for(timeout=60000)
    page.get_by_text("3 partitions").first.wait_for(timeout=30000)
    page.screenshot(path=str(tmp_path / "catalog.png"))
