"""`dagster dev` on loopback for the tests (the UI tests and the podrun --dagster-url tests share it)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

from podinsight_dagster.processes import free_port, kill_group

ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def dagster_dev_server(settings, log_path: Path, timeout_s: float = 120) -> Iterator[str]:
    """Start `dagster dev` on ``settings``' instance; yield its base URL; kill its process group after."""
    from podinsight_dagster.instance import prepare_instance

    prepare_instance(settings)
    port = free_port()
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster"), "dev", "-w", str(ROOT / "workspace.yaml"),
         "-h", "127.0.0.1", "-p", str(port)],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "DAGSTER_HOME": str(settings.dagster_home)},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"dagster dev exited: {log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(base + "/server_info", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"dagster dev did not answer within {timeout_s:.0f} s")
            time.sleep(0.5)
        yield base
    finally:
        kill_group(proc)
        log.close()
