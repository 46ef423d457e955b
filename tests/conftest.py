"""Shared fixtures: an isolated data root, the bundled demo feeds on a loopback server."""

from __future__ import annotations

import functools
import threading
from pathlib import Path

import pytest

from tests.support.cdn import PodcastCDN
from podinsight_dagster.demo.run import CONTENT, write_demo_catalog
from podinsight_dagster.settings import Settings

TEST_MODEL = "tiny.en"  # the suite must stay fast on 2 cores


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture
def home(tmp_path, monkeypatch, model_cache) -> Path:
    """A fresh PODINSIGHT_HOME with loopback allowed and the tiny.en model."""
    root = tmp_path / "data"
    monkeypatch.setenv("PODINSIGHT_HOME", str(root))
    monkeypatch.setenv("PODINSIGHT_FEEDS_DIR", str(root / "feeds"))
    monkeypatch.setenv("PODINSIGHT_MODEL", TEST_MODEL)
    monkeypatch.setenv("PODINSIGHT_MODEL_CACHE", str(model_cache))
    monkeypatch.setenv("PODINSIGHT_ALLOW_PRIVATE_NETWORKS", "127.0.0.0/8")
    monkeypatch.setenv("DAGSTER_HOME", str(root / "dagster"))
    monkeypatch.delenv("PODINSIGHT_ALLOW_MODEL_DOWNLOAD", raising=False)
    return root


@pytest.fixture
def settings(home) -> Settings:
    s = Settings.from_env()
    s.ensure_dirs()
    return s


@pytest.fixture
def demo_cdn():
    """The bundled demo feeds and audio on a real loopback HTTP server."""
    with PodcastCDN(name="test-cdn") as cdn:
        cdn.add_directory(CONTENT / "feeds", prefix="/feeds")
        cdn.add_directory(CONTENT / "audio", prefix="/audio")
        yield cdn


@pytest.fixture
def demo_catalog(settings, demo_cdn):
    """A catalog of the demo feeds (or some of them) pointing at the loopback server."""
    def make(slugs: list[str] | None = None) -> list[Path]:
        return write_demo_catalog(settings.feeds_dir, demo_cdn.base_url, slugs)
    return make


@pytest.fixture
def podrun():
    """``podrun`` as an operator runs it, in-process through click's runner; ``ok=False`` to expect a failure."""
    from click.testing import CliRunner

    from podinsight_dagster.cli import main

    runner = CliRunner()

    def run(*args, ok=True):
        result = runner.invoke(main, list(args), catch_exceptions=False)
        if ok:
            assert result.exit_code == 0, result.output
        return result
    return run


@pytest.fixture
def aws_home(home, moto_server, monkeypatch):
    """``home`` with PODINSIGHT_DEPLOYMENT=aws against moto's server (boto3's own variables: region, keys)."""
    for var, value in (("PODINSIGHT_DEPLOYMENT", "aws"), ("AWS_ENDPOINT_URL", moto_server.url),
                       ("AWS_REGION", "us-east-1"), ("AWS_ACCESS_KEY_ID", "testing"),
                       ("AWS_SECRET_ACCESS_KEY", "testing")):
        monkeypatch.setenv(var, value)
    return home


def make_aws_stack(moto_server, settings: Settings) -> None:
    """What iac/ creates that the code needs: the four buckets and the status table."""
    from podinsight_dagster.store.dynamo import create_table

    s3 = moto_server.client("s3")
    for bucket in (settings.raw_bucket, settings.stage_bucket, settings.manifest_bucket, settings.archive_bucket):
        s3.create_bucket(Bucket=bucket)
    create_table(moto_server.client("dynamodb"), settings.status_table)


def reference(feed: str, ep: str) -> str:
    return (CONTENT / "texts" / feed / f"{ep}.txt").read_text()


def audio_bytes(feed: str, ep: str) -> bytes:
    return (CONTENT / "audio" / feed / f"{ep}.mp3").read_bytes()


_DYNAMODB_WRITES = ("put_item", "update_item", "delete_item", "transact_write_items", "batch_write_item")


def _serialise_dynamodb_writes() -> None:
    """Give moto's DynamoDB the atomicity of DynamoDB's conditional writes.

    DynamoDB checks a write's condition and applies it to the item as one step; moto's backend checks and
    writes without a lock, so two of the server's request threads can both pass the same condition (seen:
    two budget reservations both admitted under load). One lock around moto's writes restores the
    guarantee the claim and budget contracts rely on; reads stay concurrent.
    """
    from moto.dynamodb.models import DynamoDBBackend

    if getattr(DynamoDBBackend, "_podinsight_serialised", False):
        return
    lock = threading.RLock()
    for name in _DYNAMODB_WRITES:
        original = getattr(DynamoDBBackend, name)

        def locked(self, *args, _original=original, **kwargs):
            with lock:
                return _original(self, *args, **kwargs)
        setattr(DynamoDBBackend, name, functools.wraps(original)(locked))
    DynamoDBBackend._podinsight_serialised = True


class MotoServer:
    """moto in server mode on loopback: boto3 speaks real HTTP to it."""

    def __init__(self):
        from moto.server import ThreadedMotoServer

        _serialise_dynamodb_writes()
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.url = f"http://{host}:{port}"

    def client(self, service: str):
        import boto3

        return boto3.client(service, endpoint_url=self.url, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def stop(self) -> None:
        self._server.stop()


@pytest.fixture(scope="module")
def postgres():
    """A real PostgreSQL server (Debian's packages) for one test module: tests/support/postgres.py."""
    from tests.support.postgres import PostgresServer, pg_binaries_missing

    reason = pg_binaries_missing()
    if reason:
        pytest.skip(reason)
    server = PostgresServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def moto_server(tmp_path, monkeypatch):
    # moto's request recorder writes to a file in the working directory unless told otherwise.
    monkeypatch.setenv("MOTO_RECORDER_FILEPATH", str(tmp_path / "moto_recording"))
    server = MotoServer()
    # moto keeps its backends per process, not per server: start every test from an empty account.
    import requests

    requests.post(server.url + "/moto-api/reset", timeout=10).raise_for_status()
    try:
        yield server
    finally:
        server.stop()
