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


def _pins() -> dict[str, str]:
    pins = dict(line.split("==", 1) for line in (ROOT / "constraints.txt").read_text().split() if "==" in line)
    return {k.lower().replace("_", "-"): v for k, v in pins.items()}


def test_gpu_image_carries_what_ctranslate2_loads_and_pins_what_constraints_pin():
    import re

    import ctranslate2

    dockerfile = (ROOT / "docker" / "Dockerfile.gpu").read_text()
    base = re.search(r"^FROM nvidia/cuda:(\d+)\.(\d+)\.(\d+)-cudnn-runtime-ubuntu(\d+\.\d+)\s*$", dockerfile, re.M)
    assert base, "Dockerfile.gpu must start from an nvidia/cuda cudnn-runtime image (cuBLAS and cuDNN included)"
    major, minor, ubuntu = int(base[1]), int(base[2]), base[4]
    # The cuBLAS the installed ctranslate2 wheel opens at run time is the one the base image carries.
    libs = Path(ctranslate2.__file__).resolve().parents[1] / "ctranslate2.libs"
    opened = {m.decode() for lib in libs.glob("libctranslate2*.so*") for m in re.findall(rb"libcublas\.so\.(\d+)",
                                                                                          lib.read_bytes())}
    assert opened == {str(major)}, f"ctranslate2 {ctranslate2.__version__} opens libcublas.so.{opened}; base: CUDA {major}"
    assert (major, minor) >= (12, 3), "NVIDIA's -cudnn- images carry cuDNN 9 from CUDA 12.3 on"
    python = {"22.04": "3.10", "24.04": "3.12"}[ubuntu]
    assert f"python{python}-venv" in dockerfile and f"python{python} -m venv" in dockerfile
    # Every version the image names is constraints.txt's, and the transcript step's GPU pieces are named.
    pins, named = _pins(), dict(re.findall(r"\s([A-Za-z0-9_.-]+)==([0-9][^\s\\]*)", dockerfile))
    assert {"faster-whisper", "ctranslate2", "av", "onnxruntime"} <= set(named)
    assert {k: pins.get(k.lower()) for k in named} == named
    assert "-c constraints.txt" in dockerfile  # and everything else it installs comes at constraints.txt's version
