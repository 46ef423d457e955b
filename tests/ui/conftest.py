"""`dagster dev` on loopback and headless Debian Chromium driven by Playwright, one of each per test module.

The module's tests share one data root, one loopback CDN of the demo feeds, one `dagster dev` (the slowest
thing to start) and one browser, in file order: a later test may find what an earlier one made. The sensors'
intervals are short (5 s) for the whole module, and loopback is opened as `podrun demo` opens it: `dagster dev`
and podrun's runs have the same settings, so podrun's runs are the code location's jobs' version.
"""

from pathlib import Path

import pytest

from tests.conftest import TEST_MODEL
from tests.support.cdn import PodcastCDN
from tests.support.dagster_dev import dagster_dev_server
from podinsight_dagster.demo.run import CONTENT, DEMO_NETWORKS

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync", "--disable-quic"]
SENSOR_INTERVAL_S = 5


@pytest.fixture(scope="module")
def home(tmp_path_factory, model_cache):
    """The module's PODINSIGHT_HOME (as tests/conftest.py's ``home``), with short sensor intervals."""
    root = tmp_path_factory.mktemp("ui") / "data"
    with pytest.MonkeyPatch.context() as mp:
        for var, value in (("PODINSIGHT_HOME", root), ("PODINSIGHT_FEEDS_DIR", root / "feeds"),
                           ("PODINSIGHT_MODEL", TEST_MODEL), ("PODINSIGHT_MODEL_CACHE", model_cache),
                           # what `podrun demo` sets: its runs have the code location's settings
                           ("PODINSIGHT_ALLOW_PRIVATE_NETWORKS", DEMO_NETWORKS), ("DAGSTER_HOME", root / "dagster"),
                           ("PODINSIGHT_NEW_EPISODES_INTERVAL_SEC", SENSOR_INTERVAL_S),
                           ("PODINSIGHT_AUTO_TRANSCRIBE_INTERVAL_SEC", SENSOR_INTERVAL_S)):
            mp.setenv(var, str(value))
        mp.delenv("PODINSIGHT_ALLOW_MODEL_DOWNLOAD", raising=False)
        yield root


@pytest.fixture(scope="module")
def demo_cdn():
    """The bundled demo feeds and audio on a loopback server, for the whole module."""
    with PodcastCDN(name="ui-cdn") as cdn:
        cdn.add_directory(CONTENT / "feeds", prefix="/feeds")
        cdn.add_directory(CONTENT / "audio", prefix="/audio")
        yield cdn


@pytest.fixture(scope="module")
def dagster_dev(home, tmp_path_factory):
    """Start `dagster dev` on the module's instance; yield its base URL; kill its process group after."""
    from podinsight_dagster.settings import Settings

    settings = Settings.from_env()
    settings.ensure_dirs()
    with dagster_dev_server(settings, tmp_path_factory.mktemp("dagster-dev") / "dagster-dev.log") as base:
        yield base


@pytest.fixture(scope="module")
def browser_page():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium for the UI tests")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        # The "Join the Dagster community" dialog can open late on a busy machine, over whatever the test
        # clicks next: Playwright skips it whenever it shows up before an action.
        page.add_locator_handler(page.get_by_role("button", name="Skip"), lambda skip: skip.click())
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
