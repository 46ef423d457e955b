"""Politeness: per-domain concurrency caps across threads and processes, slots and redirects."""

from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.cdn import Fault, PodcastCDN
from podinsight_dagster.fetch.limits import DEFAULT_HOST_LIMITS, LocalHostLimiter, registrable_domain

from .test_http_support import AUDIO, make_client, sha256

SMALL = AUDIO[:20_000]


@pytest.mark.parametrize("host, domain", [
    ("traffic.megaphone.fm", "megaphone.fm"), ("dts.podtrac.com", "podtrac.com"),
    ("MEGAPHONE.FM.", "megaphone.fm"), ("traffic.libsyn.com", "libsyn.com"),
    ("cdn.simplecast.com", "simplecast.com"), ("media.bbc.co.uk", "bbc.co.uk"),
    ("127.0.0.1", "127.0.0.1"), ("::1", "::1"), ("localhost", "localhost"),
])
def test_registrable_domain(host, domain):
    assert registrable_domain(host) == domain


def test_default_limits_and_overrides():
    assert DEFAULT_HOST_LIMITS == {"megaphone.fm": 5, "libsyn.com": 3, "simplecast.com": 4}
    limiter = LocalHostLimiter()
    assert limiter.limit_for("traffic.megaphone.fm") == 5
    assert limiter.limit_for("traffic.libsyn.com") == 3 and limiter.limit_for("hwcdn.libsyn.com") == 3
    assert limiter.limit_for("cdn.simplecast.com") == 4
    assert limiter.limit_for("feeds.example.org") == 10
    over = LocalHostLimiter({"megaphone.fm": 2, "cdn.example.org": 7}, default=6)
    assert over.limit_for("traffic.megaphone.fm") == 2 and over.limit_for("cdn.example.org") == 7
    assert over.limit_for("libsyn.com") == 3 and over.limit_for("other.example") == 6


def _cdn_with_slow_files(host: str, n: int, latency: float = 0.05) -> PodcastCDN:
    cdn = PodcastCDN(host, name=f"limits-{host}").start()
    for i in range(n):
        cdn.add_file(f"/ep{i}.mp3", SMALL)
        cdn.set_fault(f"/ep{i}.mp3", Fault(latency_s=latency))
    return cdn


def test_limit_holds_across_threads(tmp_path):
    cdn = _cdn_with_slow_files("127.0.0.1", 16)
    try:
        client, _ = make_client(host_limits={"127.0.0.1": 3})
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda i: client.download(cdn.url(f"/ep{i}.mp3"), tmp_path / f"{i}.mp3"),
                                    range(16)))
        assert all(r.sha256 == sha256(SMALL) for r in results)
        assert cdn.max_concurrent == 3  # reached, never exceeded
    finally:
        cdn.stop()


def _process_worker(base_url: str, lock_dir: str | None, out_dir: str, tag: str, barrier) -> None:
    """One process: 4 threads, each downloading 3 files from the same host (limit 2)."""
    client, _ = make_client(lock_dir=Path(lock_dir) if lock_dir else None, host_limits={"127.0.0.1": 2})
    barrier.wait(timeout=60)  # both processes hit the host at the same time

    def fetch(i: int) -> str:
        return client.download(f"{base_url}/ep{i}.mp3", Path(out_dir) / f"{tag}-{i}.mp3").sha256

    with ThreadPoolExecutor(4) as pool:
        hashes = list(pool.map(fetch, range(12)))
    assert set(hashes) == {sha256(SMALL)}


def _run_two_processes(tmp_path: Path, lock_dir: Path | None) -> int:
    cdn = _cdn_with_slow_files("127.0.0.1", 12)
    try:
        ctx = multiprocessing.get_context("spawn")  # no fork of a process with server threads
        barrier = ctx.Barrier(2)
        procs = [ctx.Process(target=_process_worker,
                             args=(cdn.base_url, str(lock_dir) if lock_dir else None, str(tmp_path), tag, barrier))
                 for tag in ("a", "b")]
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
        assert [p.exitcode for p in procs] == [0, 0]
        assert cdn.request_count() == 24
        return cdn.max_concurrent
    finally:
        cdn.stop()


def test_limit_holds_across_processes(tmp_path):
    assert _run_two_processes(tmp_path, tmp_path / "locks") == 2
    assert len(list((tmp_path / "locks" / "hosts" / "127.0.0.1").glob("slot-*"))) == 2


def test_without_a_lock_dir_each_process_has_its_own_cap(tmp_path):
    # The control for the test above: it would catch a limiter that only works per process.
    assert _run_two_processes(tmp_path, None) > 2


def test_redirects_across_hosts_at_limit_one_do_not_deadlock(tmp_path):
    one = _cdn_with_slow_files("127.0.0.1", 1, latency=0.02)
    two = PodcastCDN("127.0.0.2", name="limits-two").start()
    try:
        for i in range(8):
            two.set_fault(f"/go{i}", Fault(redirect_to=one.url("/ep0.mp3"), latency_s=0.01))
            one.set_fault(f"/self{i}", Fault(redirect_to="/ep0.mp3"))  # same-host hop too
        client, _ = make_client(host_limits={"127.0.0.1": 1, "127.0.0.2": 1})
        urls = [two.url(f"/go{i}") for i in range(8)] + [one.url(f"/self{i}") for i in range(8)]
        done: list = []

        def run() -> None:
            with ThreadPoolExecutor(4) as pool:
                done.extend(pool.map(lambda iu: client.download(iu[1], tmp_path / f"{iu[0]}.mp3"),
                                     enumerate(urls)))

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        worker.join(20)
        assert not worker.is_alive(), "deadlock: a slot was held across a redirect"
        assert len(done) == 16 and {d.sha256 for d in done} == {sha256(SMALL)}
        assert one.max_concurrent == 1 and two.max_concurrent == 1
    finally:
        one.stop()
        two.stop()


def test_retry_sleep_does_not_hold_the_slot(tmp_path):
    cdn = _cdn_with_slow_files("127.0.0.1", 1, latency=0)
    try:
        cdn.set_fault("/ep0.mp3", Fault(status=503, retry_after="1", times=1))
        free_during_sleep: list[bool] = []
        client = None

        def sleep(_seconds: float) -> None:
            # Another thread must be able to take the only slot while we wait.
            got = threading.Event()

            def take() -> None:
                with client.limiter.slot("127.0.0.1"):
                    got.set()

            t = threading.Thread(target=take, daemon=True)
            t.start()
            free_during_sleep.append(got.wait(2))

        client, _ = make_client(host_limits={"127.0.0.1": 1}, lock_dir=tmp_path / "locks", sleep=sleep)
        assert client.download(cdn.url("/ep0.mp3"), tmp_path / "a.mp3").attempts == 2
        assert free_during_sleep == [True]
    finally:
        cdn.stop()


def _leasing_worker(base_url: str, moto_url: str, out_dir: str, tag: str, barrier) -> None:
    """One process standing for one ECS task: 4 threads, slots leased from DynamoDB (limit 2 in total)."""
    import os

    from podinsight_dagster.fetch.http import HttpClient, HttpConfig
    from podinsight_dagster.fetch.netpolicy import NetworkPolicy
    from podinsight_dagster.services import build_limiter
    from podinsight_dagster.settings import Settings

    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")  # boto3's credential chain
    settings = Settings(home=Path(out_dir), feeds_dir=Path(out_dir), deployment="aws", aws_endpoint_url=moto_url)
    limiter = build_limiter(settings, {"127.0.0.1": 2})
    client = HttpClient(HttpConfig(backoff_base=0.01, backoff_max=0.05), NetworkPolicy.parse("127.0.0.0/8"), limiter)
    barrier.wait(timeout=60)

    def fetch(i: int) -> str:
        return client.download(f"{base_url}/ep{i}.mp3", Path(out_dir) / f"{tag}-{i}.mp3").sha256

    with ThreadPoolExecutor(4) as pool:
        hashes = list(pool.map(fetch, range(12)))
    assert set(hashes) == {sha256(SMALL)}


def test_dynamodb_leases_hold_the_limit_across_tasks(tmp_path, moto_server):
    """Two processes (two ECS tasks) share one cap through the status table, as the server counts."""
    from podinsight_dagster.store.dynamo import create_table

    create_table(moto_server.client("dynamodb"), "podinsights-status")
    cdn = _cdn_with_slow_files("127.0.0.1", 12)
    try:
        ctx = multiprocessing.get_context("spawn")
        barrier = ctx.Barrier(2)
        procs = [ctx.Process(target=_leasing_worker, args=(cdn.base_url, moto_server.url, str(tmp_path), tag, barrier))
                 for tag in ("a", "b")]
        for p in procs:
            p.start()
        for p in procs:
            p.join(180)
        assert [p.exitcode for p in procs] == [0, 0]
        assert cdn.request_count() == 24
        assert cdn.max_concurrent == 2
    finally:
        cdn.stop()
    items = moto_server.client("dynamodb").scan(TableName="podinsights-status")["Items"]
    slots = [i for i in items if i["feed_slug"]["S"] == "#lease#127.0.0.1"]
    assert len(slots) == 2 and not any("owner" in i for i in slots)  # every lease given back
