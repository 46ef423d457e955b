"""The code location loads, in-process and through Dagster's own CLI."""

import subprocess
import sys
from pathlib import Path

from dagster import AssetKey, Definitions

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
    assert defs.resolve_sensor_def("auto_transcribe_sensor") is not None


def test_episode_assets_backfill_many_partitions_per_run_and_checks_are_attached():
    graph = defs.resolve_asset_graph()
    for name in ("raw_audio", "transcript", "segments", "kpis"):
        node = graph.get(AssetKey(name))
        assert node.partitions_def.name == "episodes"
        # A UI backfill of 1,000 episodes becomes 10 runs, not 1,000.
        assert node.backfill_policy.max_partitions_per_run == 100
    checks = {k.name for k in graph.asset_check_keys}
    assert checks == {"download_success_rate", "per_host_429", "gpu_cost_today", "transcript_sanity"}


def test_dagster_definitions_validate_cli(settings):
    prepare_instance(settings)
    out = subprocess.run([str(Path(sys.executable).parent / "dagster"), "definitions", "validate",
                          "-w", str(ROOT / "workspace.yaml")], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Validation successful" in out.stdout + out.stderr


DOMAIN = ["fetch", "transcribe", "store", "costs"]
DOMAIN_MODULES = ["settings", "services", "errors", "worker"]


def test_domain_never_imports_dagster():
    """A GPU worker runs the domain code with only dagster-pipes installed."""
    code = ("import sys, importlib, pkgutil\n"
            f"for p in {DOMAIN!r}:\n"
            "    pkg = importlib.import_module('podinsight_dagster.' + p)\n"
            "    for m in pkgutil.iter_modules(pkg.__path__): importlib.import_module(pkg.__name__ + '.' + m.name)\n"
            f"for m in {DOMAIN_MODULES!r}: importlib.import_module('podinsight_dagster.' + m)\n"
            "bad = [m for m in sys.modules if m == 'dagster' or m.startswith('dagster.')]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
