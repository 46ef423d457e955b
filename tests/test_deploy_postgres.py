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
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from podinsight_dagster.definitions import definitions_for
from podinsight_dagster.instance import POOL_LIMITS, apply_pool_limits
from podinsight_dagster.launch import LocalLauncher
from podinsight_dagster.processes import free_port
from podinsight_dagster.services import build_services
from podinsight_dagster.store.checkpoints import DOWNLOADED

ROOT = Path(__file__).resolve().parents[1]
DEPLOY_YAML = ROOT / "deploy" / "dagster.yaml"


def _pg_bin() -> Path:
    """TEST_PG_BIN, or the newest server Debian's postgresql package installed (/usr/lib/postgresql/<major>/bin)."""
    if os.environ.get("TEST_PG_BIN"):
        return Path(os.environ["TEST_PG_BIN"])
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]) if
                   p.parts[-3].isdigit() else 0)
    return found[-1].parent if found else Path("/usr/lib/postgresql/15/bin")


PG_BIN = _pg_bin()
PG_USER, PG_PASSWORD, PG_DB = "dagster", "s3cret-pw", "dagster"
LOG_BUCKET = "podinsight-compute-logs"


def _pg_binaries_missing() -> str | None:
    missing = [n for n in ("initdb", "pg_ctl", "postgres", "psql") if not (PG_BIN / n).is_file()]
    if missing:
        return (f"PostgreSQL server binaries not found in {PG_BIN} ({', '.join(missing)}): "
                "install Debian's postgresql (make test does) or set TEST_PG_BIN")
    return None


class PostgresServer:
    """initdb + pg_ctl in a temporary folder; TCP on 127.0.0.1 (scram passwords), socket in the folder."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="podinsight-pg-"))
        self.port = free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("running as root and there is no postgres user to run initdb as")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.data = self.dir / "data"
        pwfile = self.dir / "pw"
        pwfile.write_text(PG_PASSWORD + "\n")
        if self.as_user:
            os.chown(pwfile, pw.pw_uid, pw.pw_gid)
        self._run([PG_BIN / "initdb", "-D", self.data, "-U", PG_USER, "--pwfile", pwfile, "-E", "UTF8",
                   "--auth-local=trust", "--auth-host=scram-sha-256"])
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run([PG_BIN / "pg_ctl", "-D", self.data, "-l", self.dir / "server.log", "-o", opts, "-w", "-t", "60",
                   "start"])
        self.started = True
        # the Dagster database, created over the socket (trust) as the superuser initdb made
        self.psql("postgres", f"CREATE DATABASE {PG_DB}")

    def _run(self, cmd) -> None:
        out = subprocess.run(self.as_user + [str(c) for c in cmd], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, f"{cmd[0]} failed: {out.stdout}{out.stderr}{self.log()}"

    def psql(self, db: str, sql: str) -> str:
        out = subprocess.run([str(PG_BIN / "psql"), "-h", str(self.dir), "-p", str(self.port), "-U", PG_USER, "-d", db,
                              "-At", "-c", sql], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout

    def log(self) -> str:
        log = self.dir / "server.log"
        return log.read_text() if log.exists() else ""

    def stop(self) -> None:
        subprocess.run(self.as_user + [str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres():
    reason = _pg_binaries_missing()
    if reason:
        pytest.skip(reason)
    server = PostgresServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def deploy_env(postgres, moto_server, monkeypatch):
    """The environment deploy/dagster.yaml names, pointing at the test's PostgreSQL and moto."""
    monkeypatch.setenv("DAGSTER_PG_HOST", "127.0.0.1")
    monkeypatch.setenv("DAGSTER_PG_PORT", str(postgres.port))
    monkeypatch.setenv("DAGSTER_PG_DB", PG_DB)
    monkeypatch.setenv("DAGSTER_PG_USERNAME", PG_USER)
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", PG_PASSWORD)
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
