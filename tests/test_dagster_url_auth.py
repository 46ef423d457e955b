"""podrun --dagster-url: work launched on a running `dagster dev` (through its GraphQL API) behind a loopback
proxy that wants credentials.

The proxy (http.server in a thread) answers 401 to any request without the expected header and
forwards the others to `dagster dev`. It plays both deployments podrun must reach: an
open-source webserver behind an authenticating proxy (``Authorization: Bearer``, token from
PODINSIGHT_DAGSTER_TOKEN) and Dagster+ (``Dagster-Cloud-Api-Token``, token from
DAGSTER_CLOUD_API_TOKEN). Not exercised: Dagster+ itself (its GraphQL schema is the
webserver's; only the header differs) and TLS.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from click.testing import CliRunner
from dagster import AssetKey, DagsterInstance

from podinsight_dagster.cli import _launcher, main
from podinsight_dagster.launch import Credentials, GraphQLError, GraphQLLauncher
from podinsight_dagster.processes import free_port
from podinsight_dagster.settings import Settings
from podinsight_dagster.store.checkpoints import SqliteCheckpointStore
from tests.support.dagster_dev import dagster_dev_server

BEARER, CLOUD = "s3cret-bearer", "org:cloud-token"
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "host"}


class AuthProxy:
    """Forwards to ``upstream`` only requests whose ``header`` is ``value``; 401 otherwise."""

    def __init__(self, upstream: str, header: str, value: str):
        self.upstream, self.header, self.value = upstream, header, value
        self.refused = self.forwarded = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _handle(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get(proxy.header) != proxy.value:
                    proxy.refused += 1
                    payload = b'{"error": "unauthorized"}'
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", "Bearer")
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                proxy.forwarded += 1
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                resp = requests.request(self.command, proxy.upstream + self.path, data=body or None,
                                        headers=headers, timeout=60)
                self.send_response(resp.status_code)
                for k, v in resp.headers.items():
                    if k.lower() not in HOP_BY_HOP:
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(resp.content)))
                self.end_headers()
                self.wfile.write(resp.content)

            do_GET = do_POST = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="auth-proxy", daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _podrun(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _one_sentence(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1 and "Traceback" not in output, output
    return lines[0]


def test_podrun_reaches_a_deployment_only_with_its_token(settings, demo_catalog, tmp_path, monkeypatch):
    monkeypatch.delenv("PODINSIGHT_DAGSTER_TOKEN", raising=False)
    monkeypatch.delenv("DAGSTER_CLOUD_API_TOKEN", raising=False)
    demo_catalog(["tech-talk"])  # 3 episodes
    store = SqliteCheckpointStore(settings.checkpoint_db)
    with dagster_dev_server(settings, tmp_path / "dagster-dev.log") as upstream:
        # An open-source webserver behind a proxy that wants a bearer token.
        proxy = AuthProxy(upstream, "Authorization", f"Bearer {BEARER}")
        try:
            result = _podrun("fetch", "--limit", "1", "--dagster-url", proxy.url)
            assert result.exit_code == 1
            error = _one_sentence(result.output)
            assert "wants credentials (401 Unauthorized)" in error
            assert "PODINSIGHT_DAGSTER_TOKEN" in error and "DAGSTER_CLOUD_API_TOKEN" in error

            monkeypatch.setenv("PODINSIGHT_DAGSTER_TOKEN", "stale")
            result = _podrun("fetch", "--limit", "1", "--dagster-url", proxy.url)
            assert result.exit_code == 1
            assert "refused the token in PODINSIGHT_DAGSTER_TOKEN (401 Unauthorized)" in _one_sentence(result.output)
            assert "stale" not in result.output
            assert store.counts()["downloaded"] == 0 and proxy.forwarded == 0

            # With the token: the work is launched on the running deployment as a UI-style backfill.
            monkeypatch.setenv("PODINSIGHT_DAGSTER_TOKEN", BEARER)
            result = _podrun("fetch", "--dagster-url", proxy.url)
            assert result.exit_code == 0, result.output
            assert "backfill" in result.output and "COMPLETED" in result.output
            assert store.counts()["downloaded"] == 3 and proxy.forwarded > 0
            with DagsterInstance.from_config(str(settings.dagster_home)) as instance:
                assert len(instance.get_materialized_partitions(AssetKey("raw_audio"))) == 3
                backfill_runs = [r for r in instance.get_runs() if r.tags.get("dagster/backfill")]
                assert len(backfill_runs) == 1  # its 3 episodes share one run
                assert backfill_runs[0].job_name == "fetch_episodes"  # the named job, not __ASSET_JOB
        finally:
            proxy.close()
        monkeypatch.delenv("PODINSIGHT_DAGSTER_TOKEN")

        # Dagster+: the API token in its own header. (One backfill above is enough: here podrun's
        # launcher, built from the environment as `podrun fetch` builds it, adds a partition.)
        proxy = AuthProxy(upstream, "Dagster-Cloud-Api-Token", CLOUD)
        try:
            result = _podrun("transcribe", "--limit", "1", "--dagster-url", proxy.url)
            assert result.exit_code == 1 and "wants credentials" in _one_sentence(result.output)
            monkeypatch.setenv("DAGSTER_CLOUD_API_TOKEN", CLOUD)
            launcher = _launcher(Settings.from_env(), proxy.url)
            launcher.ensure_partitions(["tech-talk/added-through-cloud-header"])
            assert "tech-talk/added-through-cloud-header" in launcher._partition_keys()
            assert proxy.forwarded > 0
            # A backfill the deployment does not know (another instance's, say): said at once, not waited for.
            launcher.timeout_s = 300
            gone = launcher.wait("nosuchbackfill")
            assert not gone.success and gone.runs == 0
            assert gone.detail.startswith("backfill nosuchbackfill: ") and "after timeout" not in gone.detail
        finally:
            proxy.close()


def test_an_unreachable_deployment_is_one_sentence(settings, demo_catalog):
    demo_catalog(["tech-talk"])
    url = f"http://127.0.0.1:{free_port()}"
    result = _podrun("fetch", "--limit", "1", "--dagster-url", url)
    assert result.exit_code == 1
    assert f"cannot reach the Dagster deployment at {url}/graphql: " in _one_sentence(result.output)


def test_credentials_go_in_headers_and_never_in_reprs():
    creds = Credentials(cloud_api_token=CLOUD, bearer_token=BEARER)
    assert creds.headers() == {"Dagster-Cloud-Api-Token": CLOUD, "Authorization": f"Bearer {BEARER}"}
    assert CLOUD not in repr(creds) and BEARER not in repr(creds)
    assert Credentials().headers() == {}
    launcher = GraphQLLauncher("http://127.0.0.1:1/", credentials=creds)
    assert launcher._session.headers["Authorization"] == f"Bearer {BEARER}"
    with pytest.raises(GraphQLError, match="cannot reach"):
        launcher.ensure_partitions(["a/b"])
