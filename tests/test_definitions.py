"""The code location loads, in-process and through Dagster's own CLI."""

import subprocess
import sys
from pathlib import Path

from dagster import Definitions

from podinsight_dagster.definitions import defs
from podinsight_dagster.instance import prepare_instance

ROOT = Path(__file__).resolve().parents[1]


def test_definitions_load_with_expected_assets_jobs_and_sensors():
    Definitions.validate_loadable(defs)
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert keys == {"feeds", "episode_manifest", "raw_audio", "transcript", "segments", "kpis"}
    for job in ("ingest_catalog", "episode_pipeline", "fetch_episodes", "transcribe_episodes"):
        assert defs.resolve_job_def(job) is not None
    assert defs.resolve_sensor_def("new_episodes_sensor") is not None


def test_dagster_definitions_validate_cli(settings):
    prepare_instance(settings)
    out = subprocess.run([str(Path(sys.executable).parent / "dagster"), "definitions", "validate",
                          "-w", str(ROOT / "workspace.yaml")], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Validation successful" in out.stdout + out.stderr


def test_domain_never_imports_dagster():
    """A GPU worker runs the domain code with only dagster-pipes installed."""
    code = ("import sys, importlib, pkgutil, podinsight_dagster.domain as d\n"
            "for m in pkgutil.iter_modules(d.__path__): importlib.import_module('podinsight_dagster.domain.' + m.name)\n"
            "bad = [m for m in sys.modules if m == 'dagster' or m.startswith('dagster.')]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
