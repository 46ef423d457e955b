"""deploy/dagster.yaml, the AWS deployment's Dagster instance, against a real PostgreSQL server and moto's S3.

A PostgreSQL 15 server from Debian's packages starts in a temporary folder (as the
``postgres`` user when the tests run as root: initdb refuses root), on a free loopback port
with password authentication. The instance is built from deploy/dagster.yaml unchanged; only
the environment variables it names point at that server (and AWS_ENDPOINT_URL at moto, for
the S3 compute logs). Then Pod-Insight's own jobs run on it (``ingest_catalog`` registers the
episode partitions, ``fetch_episodes`` downloads two of them) and the runs, materializations,
partitions and pool limits are read back from PostgreSQL with psycopg2.

Not exercised: launching runs as ECS tasks (``EcsRunLauncher.launch_run`` needs ECS and the
daemon's task metadata), the run monitor and run retries (daemon features); the launcher is
only built from its configuration.
"""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path

import pytest
import yaml

from podinsight_dagster.definitions import definitions_for
from podinsight_dagster.instance import POOL_LIMITS, apply_pool_limits
from podinsight_dagster.launch import LocalLauncher
from podinsight_dagster.services import build_services
from podinsight_dagster.store.checkpoints import DOWNLOADED
from tests.support.postgres import PG_DB, PG_PASSWORD, PG_USER, dagster_env

ROOT = Path(__file__).resolve().parents[1]
DEPLOY_YAML = ROOT / "deploy" / "dagster.yaml"
LOG_BUCKET = "podinsight-compute-logs"


@pytest.fixture
def deploy_env(postgres, moto_server, monkeypatch):
    """The environment deploy/dagster.yaml names, pointing at the test's PostgreSQL and moto."""
    for name, value in dagster_env(postgres).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DAGSTER_ECS_CLUSTER", "podinsight")
    monkeypatch.setenv("DAGSTER_COMPUTE_LOG_BUCKET", LOG_BUCKET)
    # boto3 (the ECS launcher's clients, the S3 compute log manager) reads these
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.url)
    moto_server.client("s3").create_bucket(Bucket=LOG_BUCKET)
    return postgres


def _instance_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "dagster_home"
    folder.mkdir()
    shutil.copy(DEPLOY_YAML, folder / "dagster.yaml")
    return folder


def test_deploy_yaml_is_valid_dagster_instance_config(tmp_path):
    """The whole file (launcher and compute logs included) passes Dagster's schemas, without any AWS."""
    from dagster._config import validate_config
    from dagster._core.instance.config import dagster_instance_config
    from dagster_aws.ecs import EcsRunLauncher
    from dagster_aws.s3.compute_log_manager import S3ComputeLogManager

    config, custom_class = dagster_instance_config(str(_instance_dir(tmp_path)))
    assert custom_class is None
    doc = yaml.safe_load(DEPLOY_YAML.read_text())
    # the configurable classes' own schemas (dagster_instance_config checks only module/class/config)
    for section, cls in (("run_launcher", EcsRunLauncher), ("compute_logs", S3ComputeLogManager)):
        assert getattr(importlib.import_module(config[section]["module"]), config[section]["class"]) is cls
        result = validate_config(cls.config_type(), doc[section]["config"])
        assert result.success, result.errors
    launcher = doc["run_launcher"]["config"]
    assert launcher["run_task_kwargs"]["capacityProviderStrategy"] == [
        {"capacityProvider": "FARGATE_SPOT", "weight": 1}]
    assert launcher["run_resources"] == {"cpu": "256", "memory": "512"}  # run-book §3.4: 0.25 vCPU, 512 MB
    assert "PODINSIGHT_DEPLOYMENT=aws" in launcher["env_vars"]
    assert config["telemetry"]["enabled"] is False
    assert config["concurrency"]["pools"] == {"granularity": "op", "default_limit": POOL_LIMITS["podinsight_fetch"]}
    # every credential is an env: reference, none is written in the file
    pg = doc["storage"]["postgres"]["postgres_db"]
    assert all(set(value) == {"env"} for key, value in pg.items() if key != "scheme"), pg


def test_jobs_run_on_the_deploy_instance_and_land_in_postgres(settings, demo_catalog, deploy_env, moto_server,
                                                              tmp_path):
    from dagster import AssetKey, DagsterInstance, DagsterRunStatus
    from dagster_aws.ecs import EcsRunLauncher
    from dagster_aws.s3.compute_log_manager import S3ComputeLogManager
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage
    import psycopg2

    pg = deploy_env
    demo_catalog(["tech-talk"])
    with DagsterInstance.from_config(str(_instance_dir(tmp_path))) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        assert isinstance(instance.run_launcher, EcsRunLauncher)  # built from the file; never launches here
        assert isinstance(instance.compute_log_manager, S3ComputeLogManager)
        apply_pool_limits(instance)

        launcher = LocalLauncher(instance, definitions_for(settings), say=lambda _: None)
        assert launcher.run_job("ingest_catalog").success
        keys = sorted(instance.get_dynamic_partitions("episodes"))
        assert len(keys) >= 2
        outcome = launcher.run_partitions("fetch_episodes", keys[:2])
        assert outcome.success and outcome.runs == 1
        assert set(instance.get_materialized_partitions(AssetKey("raw_audio"))) == set(keys[:2])
        assert all(r.status == DagsterRunStatus.SUCCESS for r in instance.get_runs())

    checkpoints = build_services(settings).checkpoints
    assert all(checkpoints.require(k).state == DOWNLOADED for k in keys[:2])

    # What the database itself holds, read with psycopg2 over TCP and the password.
    with psycopg2.connect(host="127.0.0.1", port=pg.port, dbname=PG_DB, user=PG_USER,
                          password=PG_PASSWORD) as conn, conn.cursor() as cur:
        cur.execute("SELECT run_id, pipeline_name, status FROM runs ORDER BY create_timestamp")
        runs = cur.fetchall()
        assert [r[1:] for r in runs] == [("ingest_catalog", "SUCCESS"), ("fetch_episodes", "SUCCESS")]
        cur.execute("SELECT asset_key, partition FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION'")
        materialized = cur.fetchall()
        assert sorted(p for k, p in materialized if k == '["raw_audio"]') == keys[:2]
        assert {k for k, _ in materialized} >= {'["feeds"]', '["episode_manifest"]', '["raw_audio"]'}
        cur.execute("SELECT partition FROM dynamic_partitions WHERE partitions_def_name = 'episodes'")
        assert sorted(r[0] for r in cur.fetchall()) == keys
        cur.execute('SELECT concurrency_key, "limit" FROM concurrency_limits')
        assert dict(cur.fetchall()) == POOL_LIMITS

    # Each step's stdout/stderr went to the S3 bucket the file names (moto's, here).
    objects = moto_server.client("s3").list_objects_v2(Bucket=LOG_BUCKET, Prefix="dagster-compute-logs/")
    logged = {obj["Key"] for obj in objects.get("Contents", [])}
    assert all(any(run_id in key for key in logged) for run_id, _, _ in runs), logged
