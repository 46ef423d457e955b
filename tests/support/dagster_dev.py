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


def _start(settings, log_path: Path, timeout_s: float) -> tuple[subprocess.Popen, str] | None:
    """Start `dagster dev` on a free port; return it and its URL once *its* webserver answers, or None
    when another server took the port between free_port() and the bind (tests run side by side: a
    /server_info answer alone could come from another test's webserver on the same port)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    ours = f"Serving dagster-webserver on {base} in process"
    with log_path.open("a") as log:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "dagster"), "dev", "-w", str(ROOT / "workspace.yaml"),
             "-h", "127.0.0.1", "-p", str(port)],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "DAGSTER_HOME": str(settings.dagster_home)},
        )
    deadline = time.monotonic() + timeout_s
    while True:
        text = log_path.read_text(errors="replace")
        if "address already in use" in text.lower() or "error while attempting to bind" in text:
            kill_group(proc)
            return None
        if proc.poll() is not None:
            raise RuntimeError(f"dagster dev exited: {text[-2000:]}")
        if ours in text:
            try:
                with urllib.request.urlopen(base + "/server_info", timeout=2) as resp:
                    if resp.status == 200:
                        return proc, base
            except OSError:
                pass
        if time.monotonic() > deadline:
            kill_group(proc)
            raise RuntimeError(f"dagster dev did not answer within {timeout_s:.0f} s: {text[-2000:]}")
        time.sleep(0.5)


@contextlib.contextmanager
def dagster_dev_server(settings, log_path: Path, timeout_s: float = 120) -> Iterator[str]:
    """Start `dagster dev` on ``settings``' instance; yield its base URL; kill its process group after."""
    from podinsight_dagster.instance import prepare_instance

    prepare_instance(settings)
    for _attempt in range(3):
        log_path.write_text("")
        started = _start(settings, log_path, timeout_s)
        if started:
            break
    else:
        raise RuntimeError(f"dagster dev found its port taken three times: {log_path.read_text()[-2000:]}")
    proc, base = started
    try:
        yield base
    finally:
        kill_group(proc)
