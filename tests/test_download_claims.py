"""Download claims across tasks: several `podrun fetch` processes on one stack download each episode once.

Each task is a real ``podrun fetch`` process with its own data root and Dagster instance (as ECS tasks
are), on one moto server (PODINSIGHT_DEPLOYMENT=aws): the buckets, the status table with the episodes'
claims and the host-limit slots. The catalog's 20 episodes are answered 3 s late by the loopback CDN
under one host limit of 4. Counted at the servers: GETs per episode at the CDN, puts per episode at
moto (the raw bucket is versioned, so every put is a version), the CDN's peak of requests in flight,
and the claims in the DynamoDB items (all ended). Then a task killed (SIGKILL of its process group)
mid-download: the next task takes its episodes over once their lease has run out. Locally, two
processes on one data root share the SQLite checkpoints and the host-lock folder.
"""

from __future__ import annotations

import time

import pytest
import requests

from podinsight_dagster.services import build_checkpoints
from podinsight_dagster.settings import Settings
from podinsight_dagster.store.checkpoints import DOWNLOAD, DOWNLOADED
from tests.assets.test_concurrent_fetch import peak_concurrency
from tests.conftest import MotoServer
from tests.support.cdn import PodcastCDN
from tests.support.fetch_tasks import Stack, audio_gets, finish, kill_task, slow_catalog, start_fetch, task_env

EPISODES, LATENCY_S, HOST_LIMIT = 20, 3.0, 4
LEASE_S = "10"  # short, so a killed task's episodes come back within the test; a live one's are renewed


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MOTO_RECORDER_FILEPATH", str(tmp_path_factory.mktemp("moto") / "recording"))
        for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # the test's own reads of the stack
            mp.setenv(var, "testing")
        server = MotoServer()
        requests.post(server.url + "/moto-api/reset", timeout=10).raise_for_status()
        try:
            yield server
        finally:
            server.stop()


def _checkpoints(stack: Stack, home):
    env = {**stack.env(), "PODINSIGHT_HOME": str(home)}
    return build_checkpoints(Settings.from_env(env))


@pytest.mark.timeout(300)
def test_two_and_four_tasks_and_two_local_ones_download_each_episode_once(moto, tmp_path):
    """Three scenes at once (each its own CDN and stack, so their counts stay apart): 2 and 4 tasks on the aws
    deployment, 2 processes on one local data root (SQLite checkpoints, the host-lock folder)."""
    scenes = []
    for name, tasks, episodes in (("aws-2", 2, EPISODES), ("aws-4", 4, EPISODES), ("local-2", 2, 8)):
        cdn = PodcastCDN(name=f"slow-{name}").start()
        feeds = tmp_path / f"feeds-{name}"
        paths = slow_catalog(cdn, feeds, "slow", episodes, LATENCY_S, HOST_LIMIT)
        if name.startswith("aws"):
            stack = Stack(moto.url, name).create(moto.client)
            envs = [task_env(tmp_path / f"{name}-{i}", feeds, {**stack.env(), "PODINSIGHT_CLAIM_LEASE_SEC": LEASE_S})
                    for i in range(tasks)]
        else:
            stack = None
            envs = [task_env(tmp_path / name, feeds, {"PODINSIGHT_CLAIM_LEASE_SEC": LEASE_S})] * tasks
        scenes.append((name, cdn, paths, stack, envs))
    procs = {name: [start_fetch(env) for env in envs] for name, _, _, _, envs in scenes}
    said = []
    try:
        for name, cdn, paths, stack, envs in scenes:
            for rc, out, err in finish(procs[name]):
                assert rc == 0, f"{name}: {out}{err}"
                assert "Traceback" not in err and "Stack Trace" not in err
                said.append(out)
            # Each episode fetched once at the CDN, the host limit never exceeded.
            assert audio_gets(cdn, paths) == dict.fromkeys(paths, 1), name
            assert peak_concurrency(cdn, "/audio/") <= HOST_LIMIT, name
            home = envs[0]["PODINSIGHT_HOME"]
            if stack is not None:
                # Stored once in S3 (versions of the raw bucket's audio keys, at moto).
                assert stack.puts(moto.client) == {f"slow/ep{i:02d}/audio/episode.mp3": 1 for i in range(len(paths))}
                store = _checkpoints(stack, home)
            else:
                store = build_checkpoints(Settings.from_env({"PODINSIGHT_HOME": home}))
            # Done, every claim ended (a live holder's lease was renewed past the short lease while it waited for a
            # host slot and downloaded: otherwise another task would have taken it over and fetched it again).
            assert [r.state for r in store.episodes()] == [DOWNLOADED] * len(paths), name
            assert {(st.status, st.owner) for st in store.stages(DOWNLOAD).values()} == {("done", None)}, name
    finally:
        for name, cdn, *_ in scenes:
            for p in procs[name]:
                if p.poll() is None:
                    kill_task(p)
            cdn.stop()
    # A task that found an episode claimed skipped it and said so (no failure of its run).
    assert any("skipped, claimed by" in out for out in said)


@pytest.mark.timeout(180)
def test_a_killed_tasks_episodes_are_taken_over_once_its_lease_runs_out(moto, tmp_path):
    with PodcastCDN(name="slow-kill") as cdn:
        feeds = tmp_path / "feeds"
        # A limit the killed task's host slots (their own 60 s leases) cannot exhaust.
        paths = slow_catalog(cdn, feeds, "slow", 4, LATENCY_S, 8)
        stack = Stack(moto.url, "kill").create(moto.client)
        env = {**stack.env(), "PODINSIGHT_CLAIM_LEASE_SEC": LEASE_S}
        first = start_fetch(task_env(tmp_path / "first", feeds, env))
        deadline = time.monotonic() + 120
        while not [r for r in cdn.requests if r.path in paths and r.finished is None]:
            assert first.poll() is None and time.monotonic() < deadline, "the first task never started a download"
            time.sleep(0.05)
        kill_task(first)
        killed_at = time.monotonic()
        in_flight = {r.path for r in cdn.requests if r.path in paths}
        assert audio_gets(cdn, paths) == {p: int(p in in_flight) for p in paths}
        assert stack.puts(moto.client) == {}  # killed mid-download: nothing stored

        time.sleep(max(0.0, float(LEASE_S) + 0.5 - (time.monotonic() - killed_at)))  # its leases run out
        [(rc, out, err)] = finish([start_fetch(task_env(tmp_path / "second", feeds, env))])
        assert rc == 0, out + err
        assert "skipped" not in out
        # The second task downloaded every episode, the killed task's included; each stored once.
        assert audio_gets(cdn, paths) == {p: 1 + (p in in_flight) for p in paths}
        assert stack.puts(moto.client) == {f"slow/ep{i:02d}/audio/episode.mp3": 1 for i in range(4)}
        store = _checkpoints(stack, tmp_path / "second")
        assert [r.state for r in store.episodes()] == [DOWNLOADED] * 4
        # Claimed twice: by the killed task, then by the second once the lease had run out (the killed task may
        # also have claimed some it had not started fetching).
        attempts = {pk: st.attempts for pk, st in store.stages(DOWNLOAD).items()}
        assert all(attempts[f"slow/{p.rsplit('/', 1)[1][:-4]}"] == 2 for p in in_flight)
        assert set(attempts.values()) <= {1, 2}
