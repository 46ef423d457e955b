"""`dagster dev` on loopback and headless Debian Chromium driven by Playwright."""

from pathlib import Path

import pytest

from tests.support.dagster_dev import dagster_dev_server

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync", "--disable-quic"]


@pytest.fixture
def dagster_dev(settings, tmp_path):
    """Start `dagster dev` on the test's instance; yield its base URL; kill its process group after."""
    with dagster_dev_server(settings, tmp_path / "dagster-dev.log") as base:
        yield base


@pytest.fixture
def browser_page():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium for the UI tests")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        try:
            yield page
        finally:
            browser.close()


def dismiss_community_dialog(page) -> None:
    """The UI greets a new instance with a "Join the Dagster community" dialog: Skip it."""
    try:
        page.get_by_role("button", name="Skip").click(timeout=5000)
    except Exception:  # noqa: BLE001 - no dialog this time
        pass
