"""The code location loads under every deployment, in-process and through Dagster's own CLI; its shape is pinned."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import AssetKey, Definitions, materialize

from podinsight_dagster.definitions import build_definitions, definitions_for, defs, resources_for
from podinsight_dagster.instance import prepare_instance
from podinsight_dagster.settings import CONFIG_VARS, DEPLOYMENTS, ENV_VARS, Settings, SettingsError

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOT = Path(__file__).parent / "snapshots" / "asset_graph.json"


def test_definitions_load_with_expected_assets_jobs_and_sensors():
    Definitions.validate_loadable(defs)
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert keys == {"feeds", "episode_manifest", "raw_audio", "transcript", "speakers", "chapters", "segments",
                    "kpis", "transcript_index", "archive_rollup"}
    for job in ("ingest_catalog", "episode_pipeline", "fetch_episodes", "transcribe_episodes"):
        assert defs.resolve_job_def(job) is not None
    assert defs.resolve_sensor_def("new_episodes_sensor") is not None
    assert defs.resolve_sensor_def("auto_transcribe_sensor") is not None


def test_episode_assets_backfill_many_partitions_per_run_and_checks_are_attached():
    graph = defs.resolve_asset_graph()
    for name in ("raw_audio", "transcript", "speakers", "chapters", "segments", "kpis"):
        node = graph.get(AssetKey(name))
        assert node.partitions_def.name == "episodes"
        # A UI backfill of 1,000 episodes becomes 10 runs, not 1,000.
        assert node.backfill_policy.max_partitions_per_run == 100
    checks = {k.name for k in graph.asset_check_keys}
    assert checks == {"download_success_rate", "per_host_429", "gpu_cost_today", "transcript_sanity", "speaker_count",
                      "every_feed_answers"}
    # The diarization method is the speakers asset's code version: switching it re-runs only speakers.
    assert graph.get(AssetKey("speakers")).code_version
    # Likewise the chapter method is the chapters asset's.
    assert graph.get(AssetKey("chapters")).code_version
    # After speakers too: the soundbites beside the chapters keep to one speaker's turn.
    assert graph.get(AssetKey("chapters")).parent_keys == {AssetKey("transcript"), AssetKey("speakers")}


@pytest.mark.parametrize("deployment", DEPLOYMENTS)
def test_dagster_definitions_validate_cli_under_every_deployment(settings, deployment):
    prepare_instance(settings)
    env = {**os.environ, "PODINSIGHT_DEPLOYMENT": deployment, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([str(Path(sys.executable).parent / "dagster"), "definitions", "validate",
                          "-w", str(ROOT / "workspace.yaml")], cwd=ROOT, capture_output=True, text=True, timeout=180,
                         env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Validation successful" in out.stdout + out.stderr


@pytest.mark.parametrize("deployment", DEPLOYMENTS)
def test_definitions_load_in_process_under_every_deployment(deployment):
    loaded = build_definitions(deployment, {})
    Definitions.validate_loadable(loaded)
    assert graph_shape(loaded) == graph_shape(defs)
    assert loaded.resources["config"].deployment == deployment


def test_unknown_deployment_is_one_clear_sentence():
    with pytest.raises(SettingsError, match="PODINSIGHT_DEPLOYMENT='gcp': choose one of local, aws"):
        resources_for("gcp", {})


def graph_shape(d: Definitions) -> dict:
    graph = d.resolve_asset_graph()
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "partitions": node.partitions_def.name if node.partitions_def else None,
            "deps": sorted(k.to_user_string() for k in node.parent_keys),
            "checks": sorted(k.name for k in graph.asset_check_keys if k.asset_key == key),
        }
    return {
        "assets": assets,
        "jobs": sorted(j.name for j in d.resolve_all_job_defs() if not j.name.startswith("__")),
        "sensors": sorted(s.name for s in d.sensors or []),
        "resources": sorted(d.resources or {}),
    }


def test_sensor_and_deployment_backfills_select_the_same_assets_as_the_jobs():
    """A run that leaves out speakers would run segments and kpis whenever transcript waits for its pool."""
    from podinsight_dagster.launch import JOB_ASSETS
    from podinsight_dagster.sensors import auto_transcribe_sensor

    graph = defs.resolve_asset_graph()

    for job, assets in JOB_ASSETS.items():
        keys = defs.resolve_job_def(job).asset_layer.executable_asset_keys
        assert {k.to_user_string() for k in keys} == set(assets), job
    # The sensors launch the named jobs (listed on their pages in the UI), not Dagster's hidden __ASSET_JOB.
    assert auto_transcribe_sensor.job_name == "transcribe_episodes" and auto_transcribe_sensor.asset_selection is None
    assert defs.resolve_sensor_def("new_episodes_sensor").job_name == "fetch_episodes"
    # segments reads transcript.json: ordered after transcript even in a run without speakers.
    assert AssetKey("transcript") in graph.get(AssetKey("segments")).parent_keys


def test_asset_graph_matches_its_snapshot():
    """Assets, partitions, checks, jobs, sensors and resources change only on purpose: update the snapshot then."""
    assert graph_shape(defs) == json.loads(SNAPSHOT.read_text())


def test_the_config_resource_carries_the_effective_settings_so_the_ui_shows_them(tmp_path):
    """The UI's `config` resource page shows each value in force (it showed "" / Default for EnvVar fields)."""
    env = {"PODINSIGHT_HOME": str(tmp_path), "PODINSIGHT_MODEL": "tiny.en", "PODINSIGHT_BATCH_SIZE": "3",
           "DAGSTER_CLOUD_API_TOKEN": "user:secret", "PODINSIGHT_DAGSTER_TOKEN": "t0k3n"}
    config = build_definitions("local", env).resources["config"]
    assert (config.model, config.batch_size, config.home) == ("tiny.en", 3, str(tmp_path))
    # unset: the default, by value
    assert (config.device, config.cost_ceiling_usd, config.feeds_dir) == ("auto", 40.0, str(tmp_path / "feeds"))
    assert config.raw_bucket == "pod-insights-raw" and config.deployment == "local"
    assert (config.allow_model_download, config.language_check_model) == (False, None)
    assert {f for f in type(config).model_fields} == {v.field for v in CONFIG_VARS}  # one field per variable
    # typed, and described with the variable that sets it and its default (the UI shows both beside the value)
    fields = type(config).model_fields
    assert (fields["batch_size"].annotation, fields["cost_ceiling_usd"].annotation,
            fields["allow_model_download"].annotation) == (int, float, bool)
    assert fields["batch_size"].description == "PODINSIGHT_BATCH_SIZE (default 8): speech chunks per batch"
    # and gives back the settings it was made from (but the credentials it never carries)
    assert config.settings() == dataclasses.replace(Settings.from_env(env), dagster_cloud_api_token=None,
                                                    dagster_token=None)
    # ... but podrun's credentials, which the UI must never show
    assert {v.name for v in ENV_VARS} - {v.name for v in CONFIG_VARS} == {
        "DAGSTER_CLOUD_API_TOKEN", "PODINSIGHT_DAGSTER_TOKEN"}
    assert "secret" not in repr(config.model_dump()) and "t0k3n" not in repr(config.model_dump())
    # The same settings give podrun's runs the code location's job snapshot (the UI re-executes them as is).
    same = definitions_for(Settings.from_env(env))
    assert same.resolve_job_def("episode_pipeline").get_job_snapshot_id() == \
        build_definitions("local", env).resolve_job_def("episode_pipeline").get_job_snapshot_id()


def test_env_batch_size_and_threads_reach_the_transcriber_in_a_run(home, monkeypatch):
    monkeypatch.setenv("PODINSIGHT_BATCH_SIZE", "3")
    monkeypatch.setenv("PODINSIGHT_CPU_THREADS", "1")
    seen = {}
    from dagster import asset

    from podinsight_dagster.resources import PodInsightResource

    @asset
    def probe(podinsight: PodInsightResource):
        services = podinsight.services()
        seen["options"] = services.transcriber.options
        seen["http"] = services.http
        services.http.session  # open a session so teardown has one to close

    assert materialize([probe], resources=resources_for("local")).success
    assert (seen["options"].batch_size, seen["options"].cpu_threads) == (3, 1)
    assert not seen["http"]._sessions  # the HTTP resource was torn down: its sessions closed
