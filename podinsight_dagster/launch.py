"""Launching partitioned work: on the local instance in-process, or on a running Dagster deployment.

``LocalLauncher`` runs a job in this process over contiguous partition ranges (one
run each, the model loaded once for all of them). ``GraphQLLauncher`` asks a
running deployment (``dagster dev`` or Dagster+) for an asset backfill through its
GraphQL API, exactly what the UI's "Materialize" dialog does, so the runs show in
the UI and follow the assets' backfill policy. A deployment that wants credentials gets
them from the settings (the environment, never a flag): Dagster+ an API token in the
``Dagster-Cloud-Api-Token`` header, a webserver behind an authenticating proxy a bearer
token in ``Authorization``.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import requests

from podinsight_dagster.dagster_internals import execute_with_workspace_origin
from podinsight_dagster.partitions import EPISODES, RANGE_END_TAG, RANGE_START_TAG, contiguous_ranges

# Runs print nothing of Dagster's own to the terminal (an episode's failure would come with the step's
# stack trace, twice): podrun says what failed (failure_reasons) and each warning and error the steps
# logged (an episode skipped, claimed by another task; an episode's failure) in one line (run_warnings);
# the stack traces stay in the run's event log (the UI), and `podrun ... --verbose` shows Dagster's
# console log, traces included (VERBOSE).
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
VERBOSE = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
# The run config of the backfills podrun launches on a deployment: every step of a run in the run's own
# process. The default executor starts one process per step, each importing the code location and
# building the services again (~2 s on a small machine, more under load); the episode steps run one
# after another anyway, and several runs side by side are what use the machines. Also
# deploy/in_process.yaml, for `dagster job execute`.
IN_PROCESS = {"execution": {"config": {"in_process": {}}}}
# The assets of each job (definitions.py), for a backfill on a deployment: the same steps as the local run.
# Leaving out an intermediate asset (speakers) would also drop the order between its neighbours: Dagster
# orders only the steps a run selects. tests/test_definitions.py keeps these equal to the jobs.
TRANSCRIBE_ASSETS = ["transcript", "speakers", "chapters", "segments", "kpis", "transcript_index"]
JOB_ASSETS = {
    "fetch_episodes": ["raw_audio"],
    "transcribe_episodes": TRANSCRIBE_ASSETS,
    "episode_pipeline": ["raw_audio", *TRANSCRIBE_ASSETS],
}


@dataclass
class LaunchResult:
    runs: int
    success: bool
    detail: str = ""


PID_TAG = "podinsight/pid"
HOST_TAG = "podinsight/host"
# Liveness across machines: a thread of the podrun that runs a job rewrites this tag of its run (the run
# storage every machine of the deployment shares) every HEARTBEAT_INTERVAL_S; a run "started" whose
# heartbeat is older than HEARTBEAT_TIMEOUT_S is dead wherever it ran. The pid is only a fast path on
# the same host (a killed podrun is seen at once, not two minutes later).
HEARTBEAT_TAG = "podinsight/heartbeat"
HEARTBEAT_INTERVAL_S = 30.0
HEARTBEAT_TIMEOUT_S = 120.0


@contextmanager
def heartbeat(instance, run_id: str, interval_s: float = HEARTBEAT_INTERVAL_S):
    """Rewrite ``run_id``'s heartbeat tag every ``interval_s`` while the block runs (the run in it)."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval_s):
            try:
                instance.add_run_tags(run_id, {HEARTBEAT_TAG: f"{time.time():.3f}"})
            except Exception:  # noqa: BLE001 - a storage hiccup: the next beat tries again
                pass

    thread = threading.Thread(target=beat, name=f"heartbeat-{run_id[:8]}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


class LocalLauncher:
    """Runs jobs of ``defs`` (built for the caller's settings) in this process, on ``instance``."""

    def __init__(self, instance, defs, say: Callable[[str], None] = print, checkpoints=None, *,
                 heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S, heartbeat_timeout_s: float = HEARTBEAT_TIMEOUT_S,
                 verbose: bool = False):
        self.instance = instance
        self.verbose = verbose  # Dagster's console log (stack traces included) instead of podrun's lines
        self.defs = defs
        self.say = say
        self.checkpoints = checkpoints  # where a dead run's claims (stage leases) are released
        self.heartbeat_interval_s = heartbeat_interval_s
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self._reap_dead_runs()

    def close(self) -> None:
        """Close the instance's storage (its SQLite engines and connections); the launcher is not used after."""
        from podinsight_dagster.dagster_internals import dispose_event_log_connections

        dispose_event_log_connections(self.instance)
        self.instance.dispose()

    def _tags(self, extra: dict | None = None) -> dict:
        return {"podinsight/trigger": "podrun", PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname(),
                HEARTBEAT_TAG: f"{time.time():.3f}", **(extra or {})}

    def _execute(self, job, tags: dict):
        run_id = str(uuid.uuid4())
        with heartbeat(self.instance, run_id, self.heartbeat_interval_s):
            result = execute_with_workspace_origin(job, self.instance, run_config=VERBOSE if self.verbose else QUIET,
                                                   tags=self._tags(tags), run_id=run_id)
        if not self.verbose:
            for line in run_warnings(self.instance, run_id):
                self.say(f"  {line}")
        return result

    def dead_reason(self, run, at: float | None = None) -> str | None:
        """Why ``run`` (status started) is dead, or None while it may be alive."""
        at = time.time() if at is None else at
        pid = int(run.tags.get(PID_TAG, "0") or 0)
        host = run.tags.get(HOST_TAG)
        # Same host (or a run from before host tags): a pid that is gone is dead at once.
        if pid and host in (None, socket.gethostname()) and not _alive(pid):
            return f"podrun process {pid} on {host or 'this host'} died (killed or crashed)"
        beat = run.tags.get(HEARTBEAT_TAG)
        if beat is not None and at - float(beat) > self.heartbeat_timeout_s:
            # Another machine's podrun, or a pid reused by another process: the heartbeat decides.
            return (f"podrun process {pid} on {host}: no heartbeat for {at - float(beat):.0f} s "
                    f"(limit {self.heartbeat_timeout_s:.0f} s)")
        return None

    def _reap_dead_runs(self) -> None:
        """Mark failed the in-process runs whose podrun died: they would show "started" forever."""
        from dagster import DagsterRunStatus, RunsFilter

        runs = self.instance.get_runs(filters=RunsFilter(statuses=[DagsterRunStatus.STARTED],
                                                         tags={"podinsight/trigger": "podrun"}))
        for run in runs:
            why = self.dead_reason(run)
            if why is None:
                continue
            self.instance.report_run_failed(run, f"{why}; re-run the same command to finish the work")
            # Its concurrency-pool slots would otherwise stay claimed and block every later run.
            self.instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
            self.say(f"marked run {run.run_id} failed: {why}")
            if self.checkpoints is not None:
                # Its episodes' leases would otherwise hold them until they expire.
                n = self.checkpoints.release_claims(run.run_id, f"run {run.run_id} died ({why})")
                if n:
                    self.say(f"  released {n} episode claims it held")

    def ensure_partitions(self, keys: list[str]) -> None:
        from podinsight_dagster.assets.catalog import register_partitions

        register_partitions(self.instance, keys)

    def run_job(self, job_name: str, tags: dict | None = None) -> LaunchResult:
        result = self._execute(self.defs.resolve_job_def(job_name), tags or {})
        return LaunchResult(1, result.success, result.run_id)

    def run_partitions(self, job_name: str, keys: list[str]) -> LaunchResult:
        if not keys:
            return LaunchResult(0, True)
        self.ensure_partitions(keys)
        job = self.defs.resolve_job_def(job_name)
        ranges = contiguous_ranges(self.instance.get_dynamic_partitions(EPISODES), keys)
        ok = True
        for i, (start, end) in enumerate(ranges, 1):
            self.say(f"run {i}/{len(ranges)}: {job_name} {start} .. {end}")
            result = self._execute(job, {RANGE_START_TAG: start, RANGE_END_TAG: end})
            ok &= result.success
            if not result.success:
                self.say(f"  run {result.run_id} had failures (details: make ui)")
                for line in failure_reasons(result):
                    self.say(f"  {line}")
        return LaunchResult(len(ranges), ok)


# The workspace `dagster dev` and `dagster job launch -w` load (the code location's name and module).
def failure_reasons(result) -> list[str]:
    """Each failed step of an in-process run and why (its Failure's description, else the error's message).

    The console log shows them too, among the steps skipped after them and with stack traces; these are
    the lines an operator acts on (which episodes, which Batch job and why).
    """
    out = []
    for event in result.all_events:
        if event.event_type_value != "STEP_FAILURE":
            continue
        data = event.step_failure_data
        why = (data.user_failure_data.description if data.user_failure_data else None) or \
            (data.error.message.strip() if data.error else "no reason recorded")
        out.append(f"{event.step_key} failed: " + why.strip().replace("\n", "\n    "))
    return out


def run_warnings(instance, run_id: str) -> list[str]:
    """What the run's steps logged as warnings and errors (an episode skipped because another task holds it, an
    episode's failure and why), one line each, without Dagster's own events and their stack traces."""
    import logging

    from podinsight_dagster.dagster_internals import run_log_messages

    return [e.user_message.splitlines()[0] for e in run_log_messages(instance, run_id)
            if e.level >= logging.WARNING and e.user_message
            and not e.user_message.startswith("Dependencies for step")]  # the engine's: failure_reasons says why


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class GraphQLError(RuntimeError):
    """A deployment that cannot be used, in one sentence (podrun prints it and exits 1)."""


# Partition keys added per GraphQL request (aliased addDynamicPartition mutations, run in order by the server).
ADD_PARTITIONS_PER_REQUEST = 100
CLOUD_TOKEN_HEADER = "Dagster-Cloud-Api-Token"
CLOUD_TOKEN_VAR = "DAGSTER_CLOUD_API_TOKEN"
BEARER_TOKEN_VAR = "PODINSIGHT_DAGSTER_TOKEN"


@dataclass(frozen=True)
class Credentials:
    """What ``podrun --dagster-url`` sends: a Dagster+ API token, a bearer token for a proxy, or neither."""

    cloud_api_token: str | None = None
    bearer_token: str | None = None

    @classmethod
    def from_settings(cls, settings) -> "Credentials":
        return cls(settings.dagster_cloud_api_token, settings.dagster_token)

    def headers(self) -> dict[str, str]:
        headers = {}
        if self.cloud_api_token:
            headers[CLOUD_TOKEN_HEADER] = self.cloud_api_token
        if self.bearer_token:
            headers["Authorization"] = f"Bearer {self.bearer_token}"
        return headers

    def names(self) -> list[str]:
        return [var for var, value in ((CLOUD_TOKEN_VAR, self.cloud_api_token), (BEARER_TOKEN_VAR, self.bearer_token))
                if value]

    def __repr__(self) -> str:  # never print a token
        return f"Credentials({', '.join(self.names()) or 'none'})"


class GraphQLLauncher:
    """A running Dagster deployment, reached at ``url`` (e.g. http://127.0.0.1:3000, or
    https://ORG.dagster.cloud/DEPLOYMENT for Dagster+), with ``credentials`` if it wants them."""

    def __init__(self, url: str, say: Callable[[str], None] = print, timeout_s: float = 3600,
                 poll_s: float = 2.0, credentials: Credentials | None = None):
        self.url = url.rstrip("/") + "/graphql"
        self.say = say
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self.credentials = credentials or Credentials()
        self._session = requests.Session()
        self._session.headers.update(self.credentials.headers())

    def close(self) -> None:
        self._session.close()

    def _query(self, query: str, variables: dict | None = None) -> dict:
        try:
            resp = self._session.post(self.url, json={"query": query, "variables": variables or {}}, timeout=60)
        except requests.RequestException as exc:
            raise GraphQLError(f"cannot reach the Dagster deployment at {self.url}: {_reason(exc)}") from None
        if resp.status_code in (401, 403):
            status = f"{resp.status_code} {resp.reason or ''}".strip()
            sent = self.credentials.names()
            if sent:
                raise GraphQLError(f"the Dagster deployment at {self.url} refused the token in {' and '.join(sent)}"
                                   f" ({status}): check that it is current and allowed to launch runs")
            raise GraphQLError(f"the Dagster deployment at {self.url} wants credentials ({status}): set "
                               f"{CLOUD_TOKEN_VAR} for Dagster+ or {BEARER_TOKEN_VAR} for a webserver behind "
                               "an authenticating proxy")
        if resp.status_code >= 400:
            raise GraphQLError(f"the Dagster deployment at {self.url} answered {resp.status_code} {resp.reason or ''}"
                               .rstrip())
        try:
            body = resp.json()
        except ValueError:
            raise GraphQLError(f"{self.url} did not answer with JSON: is it a Dagster webserver?") from None
        if body.get("errors"):
            raise GraphQLError(f"{self.url}: {body['errors'][0].get('message')}")
        return body["data"]

    def ensure_partitions(self, keys: list[str]) -> None:
        """Add keys the deployment's instance lacks: the API adds one key per mutation, so each request
        carries up to ``ADD_PARTITIONS_PER_REQUEST`` of them (aliased), not one request per key."""
        known = set(self._partition_keys())
        missing = [key for key in dict.fromkeys(keys) if key not in known]
        if not missing:
            return
        repo = self._repository()
        for start in range(0, len(missing), ADD_PARTITIONS_PER_REQUEST):
            chunk = missing[start:start + ADD_PARTITIONS_PER_REQUEST]
            fields = " ".join(
                f"k{i}: addDynamicPartition(repositorySelector: $repo, partitionsDefName: $name, partitionKey: $key{i})"
                " { __typename ... on PythonError { message } ... on UnauthorizedError { message } }"
                for i in range(len(chunk)))
            params = "".join(f", $key{i}: String!" for i in range(len(chunk)))
            data = self._query(f"mutation($repo: RepositorySelector!, $name: String!{params}) {{ {fields} }}",
                               {"repo": repo, "name": EPISODES, **{f"key{i}": key for i, key in enumerate(chunk)}})
            for i, key in enumerate(chunk):
                res = data[f"k{i}"]
                if res["__typename"] not in ("AddDynamicPartitionSuccess", "DuplicateDynamicPartitionError"):
                    raise GraphQLError(f"adding partition {key} failed: {res.get('message', res['__typename'])}")

    def _partition_keys(self) -> list[str]:
        data = self._query("""{ assetNodeOrError(assetKey: {path: ["raw_audio"]}) { __typename
            ... on AssetNode { partitionKeys } } }""")
        return data["assetNodeOrError"].get("partitionKeys") or []

    def _repository(self) -> dict:
        data = self._query("""{ repositoriesOrError { __typename ... on RepositoryConnection {
            nodes { name location { name } } } } }""")
        nodes = data["repositoriesOrError"].get("nodes") or []
        if not nodes:
            raise GraphQLError(f"{self.url}: no code location loaded")
        return {"repositoryName": nodes[0]["name"], "repositoryLocationName": nodes[0]["location"]["name"]}

    def run_partitions(self, job_name: str, keys: list[str]) -> LaunchResult:
        if not keys:
            return LaunchResult(0, True)
        self.ensure_partitions(keys)
        mutation = """mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
            __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message }
            ... on InvalidSubsetError { message } ... on UnauthorizedError { message }
            ... on PartitionSetNotFoundError { message } } }"""
        # A backfill of the named job (its partition set), not of its assets: its runs then belong to the job
        # (the UI lists them on the job's pages; an asset backfill's go to the hidden __ASSET_JOB). Dagster
        # still cuts the keys into runs by the assets' backfill policy (PODINSIGHT_EPISODES_PER_RUN).
        selector = {"partitionSetName": f"{job_name}_partition_set", "repositorySelector": self._repository()}
        params = {"selector": selector, "partitionNames": keys,
                  "tags": [{"key": "podinsight/trigger", "value": "podrun"}], "runConfigData": IN_PROCESS}
        res = self._query(mutation, {"params": params})["launchPartitionBackfill"]
        if res["__typename"] != "LaunchBackfillSuccess":
            raise GraphQLError(f"backfill refused: {res.get('message', res['__typename'])}")
        backfill_id = res["backfillId"]
        self.say(f"backfill {backfill_id}: {len(keys)} episodes of {', '.join(JOB_ASSETS[job_name])}")
        return self.wait(backfill_id)

    def wait(self, backfill_id: str) -> LaunchResult:
        query = """query($id: String!) { partitionBackfillOrError(backfillId: $id) { __typename
            ... on PartitionBackfill { status numPartitions runs(limit: 1000) { runId status } }
            ... on BackfillNotFoundError { message } ... on PythonError { message } } }"""
        deadline = time.monotonic() + self.timeout_s
        last = None
        while True:
            data = self._query(query, {"id": backfill_id})["partitionBackfillOrError"]
            if data["__typename"] != "PartitionBackfill":  # gone (another instance?) or an error: waiting cannot help
                return LaunchResult(0, False, f"backfill {backfill_id}: {data.get('message', data['__typename'])}")
            status = data.get("status")
            runs = data.get("runs") or []
            summary = f"{status}: {len(runs)} runs, {sum(r['status'] == 'SUCCESS' for r in runs)} succeeded"
            if summary != last:
                self.say(f"  {summary}")
                last = summary
            if status in ("COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"):
                ok = status in ("COMPLETED", "COMPLETED_SUCCESS") and all(r["status"] == "SUCCESS" for r in runs)
                return LaunchResult(len(runs), ok, backfill_id)
            if time.monotonic() > deadline:
                return LaunchResult(len(runs), False, f"backfill {backfill_id} still {status} after timeout")
            time.sleep(self.poll_s)


def _reason(exc: requests.RequestException) -> str:
    """The innermost cause of a requests error, without urllib3's object reprs."""
    cause: BaseException = exc
    while cause.__cause__ is not None or cause.__context__ is not None:
        cause = cause.__cause__ or cause.__context__
    text = str(cause).split(": ", 1)[-1] if "object at 0x" in str(cause) else str(cause)
    return text.strip() or type(exc).__name__
