"""Deployment files: Dockerfiles lint clean, the lock pins the Dagster family together."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_dockerfiles_pass_hadolint():
    hadolint = Path(sys.executable).parent / "hadolint"
    files = sorted(str(p) for p in (ROOT / "docker").glob("Dockerfile.*"))
    assert len(files) == 2
    out = subprocess.run([str(hadolint), "--config", str(ROOT / ".hadolint.yaml"), *files],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_lock_pins_the_dagster_family_together():
    pins = dict(line.split("==", 1) for line in (ROOT / "constraints.txt").read_text().split()
                if "==" in line)
    pins = {k.lower().replace("_", "-"): v for k, v in pins.items()}
    for name in ("dagster", "dagster-webserver", "dagster-graphql", "dagster-pipes"):
        assert pins[name] == "1.13.27", name
    assert pins["dagster-aws"] == pins["dagster-postgres"] == "0.29.27"
    for name in ("boto3", "requests", "tenacity", "feedparser", "faster-whisper", "pandas", "click", "pytest"):
        assert name in pins, name


def test_worker_runs_with_dagster_pipes_and_no_dagster():
    code = ("import sys, podinsight_dagster.worker\n"
            "assert not [m for m in sys.modules if m == 'dagster' or m.startswith('dagster.')]\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_the_package_never_imports_test_tooling():
    # The fault-injecting CDN lives in tests/support/ and is not installed; the demo has its own server.
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "podinsight_dagster").rglob("*.py")
                 if "from tests" in p.read_text() or "import tests" in p.read_text()]
    assert offenders == []
    assert not (ROOT / "podinsight_dagster" / "demo" / "cdn.py").exists()
