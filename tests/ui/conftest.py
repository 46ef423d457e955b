"""`dagster dev` on loopback and headless Debian Chromium driven by Playwright."""

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from podinsight_dagster.processes import free_port, kill_group

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync", "--disable-quic"]


@pytest.fixture
def dagster_dev(settings, tmp_path):
    """Start `dagster dev` on the test's instance; yield its base URL; kill its process group after."""
    from podinsight_dagster.instance import prepare_instance

    prepare_instance(settings)
    port = free_port()
    log = open(tmp_path / "dagster-dev.log", "w")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster"), "dev", "-w", str(ROOT / "workspace.yaml"),
         "-h", "127.0.0.1", "-p", str(port)],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "DAGSTER_HOME": str(settings.dagster_home)},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"dagster dev exited: {(tmp_path / 'dagster-dev.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(base + "/server_info", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("dagster dev did not answer within 120 s")
            time.sleep(0.5)
        yield base
    finally:
        kill_group(proc)
        log.close()


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
