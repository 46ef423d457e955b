"""Orchestration benchmark: Dagster overhead per episode, and 20,000 episode partitions.

Not a test. Run from the repository root:

    .venv/bin/python bench/orchestration_bench.py                 # everything, ~4-6 minutes on 2 cores
    .venv/bin/python bench/orchestration_bench.py --quick         # smaller sizes, to check the script works
    .venv/bin/python bench/orchestration_bench.py --only sensor   # only (b)(2), the sensor's ticks (~1 minute)

Everything runs against fresh, real SQLite Dagster instances in a temporary folder (each with a
dagster.yaml saying `telemetry: enabled: false`), never the user's DAGSTER_HOME.

(a) Overhead per episode of a backfill with trivial work. The script defines `bench_trivial`,
    partitioned by the project's `episodes_partitions`, with BackfillPolicy.multi_run(100), whose
    body is the project's `run_per_episode` with a step returning {"n": 1} (so the per-partition
    log line and metadata are paid as in the real assets). On an instance holding 500 partitions:
    (i)   as the project runs it (LocalLauncher, sensor, backfill policy): 5 runs of 100 partitions,
          `execute_in_process` with the dagster/asset_partition_range_start/end tags;
    (ii)  the baseline: one run per episode (`execute_in_process(partition_key=...)`), all 500
          unless --baseline-runs says fewer (then the total is extrapolated, and the report says so);
    (iii) the same 100-partition runs (and a few one-episode runs) on an instance holding 20,000
          partitions, because Dagster's `add_asset_metadata(partition_key=...)` lists every
          partition of the definition each time it is called;
    (iv)  a PROTOTYPE for comparison (not the project's code): (iii)'s runs of 100 with that list
          read once per run (`partition_list_cached`).
(b) Scale with 20,000 episode partitions:
    (1) adding 20,000 dynamic partitions to a fresh instance: one add_dynamic_partitions call, and
        20 calls of 1,000 on another fresh instance;
    (2) the project's `new_episodes_sensor`, evaluated with build_sensor_context on a fresh instance,
        20 feeds x 1,000 items (RSS 2.0 with enclosures) served by a PodcastCDN on loopback (in its
        own process): the first tick (finds 20,000 episodes, requests 200 runs; since issue 10 it
        registers them itself, in bulk), what the sensor daemon then does with any
        dynamic_partitions_requests it returned (Dagster's own `_handle_dynamic_partitions_requests`:
        the registration before issue 10), and a second tick where every feed answers 304; then the
        sensor with its default settings over 1,000 small feeds answering after 20 ms each, two ticks;
    (3) the UI's partition queries over GraphQL with 20,000 partitions of which 2,000 materialized:
        `dagster-webserver -w workspace.yaml` on that instance, in its own process group (killed at
        the end), the first (cold) query and the median of the following ones.

Prints a Markdown section (also written to --out) for docs/BENCHMARKS.md.
"""


import argparse
import json
import logging
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import warnings
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from podinsight_dagster.processes import free_port, kill_group

import harness  # noqa: E402  (bench/: the CDN process, data roots, the machine's description)
from harness import REPO  # noqa: E402

warnings.filterwarnings("ignore")  # Dagster's beta/deprecation notices, one per asset definition

DAGSTER_YAML = "telemetry:\n  enabled: false\n"
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sensor_root(data: Path) -> Path:
    """A data root for the sensor's ticks, which read their settings from this process's environment:
    point PODINSIGHT_* at it; returns its feeds folder (the catalog goes there)."""
    feeds_dir = data / "feeds"
    feeds_dir.mkdir(parents=True)
    os.environ.update(harness.settings_env(home=data, feeds_dir=feeds_dir, allow_private_networks="127.0.0.0/8",
                                           model="tiny.en"))
    return feeds_dir


def fresh_instance(root: Path, name: str):
    from dagster import DagsterInstance

    home = root / name
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text(DAGSTER_YAML)
    return home, DagsterInstance.from_config(str(home))


# ---------------------------------------------------------------------------
# Timers: wrap functions in place to see where a tick or a run spends its time
# ---------------------------------------------------------------------------
class Timers:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.totals: dict[str, list[float]] = {}  # name -> [calls, wall seconds, CPU seconds of the calling thread]

    @contextmanager
    def wrapped(self, targets: list[tuple[object, str, str]]):
        saved = []
        for owner, attr, name in targets:
            orig = getattr(owner, attr)
            saved.append((owner, attr, orig))
            setattr(owner, attr, self._timed(orig, name))
        try:
            yield self
        finally:
            for owner, attr, orig in reversed(saved):
                setattr(owner, attr, orig)

    def _timed(self, fn, name: str):
        def timed(*args, **kwargs):
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                dt, dc = time.perf_counter() - t0, time.thread_time() - c0
                with self.lock:
                    slot = self.totals.setdefault(name, [0, 0.0, 0.0])
                    slot[0] += 1
                    slot[1] += dt
                    slot[2] += dc
        return timed

    def reset(self) -> None:
        with self.lock:
            self.totals.clear()

    def get(self, name: str) -> tuple[int, float]:
        calls, secs, _ = self.totals.get(name, [0, 0.0, 0.0])
        return int(calls), secs

    def cpu(self, name: str) -> float:
        return self.totals.get(name, [0, 0.0, 0.0])[2]


def dagster_targets() -> list[tuple[object, str, str]]:
    from dagster import DagsterInstance
    from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

    return [(DagsterInstance, "get_dynamic_partitions", "get_dynamic_partitions"),
            (SqliteEventLogStorage, "store_event", "store_event")]


# ---------------------------------------------------------------------------
# (a) overhead per episode
# ---------------------------------------------------------------------------
@contextmanager
def partition_list_cached(instance):
    """A PROTOTYPE, not the project's code: one partition-list read per run instead of one per episode.

    Dagster's add_asset_metadata(partition_key=...) checks the key against the run's range by listing
    every partition of the definition (instance.get_dynamic_partitions) on each call; this serves the
    list from one read while the block runs (the run's range is fixed when the run is created).
    """
    orig = instance.get_dynamic_partitions
    cache: dict[str, object] = {}

    def cached(partitions_def_name: str):
        if partitions_def_name not in cache:
            cache[partitions_def_name] = orig(partitions_def_name)
        return cache[partitions_def_name]

    instance.get_dynamic_partitions = cached
    try:
        yield
    finally:
        del instance.get_dynamic_partitions


def trivial_jobs():
    from dagster import AssetExecutionContext, BackfillPolicy, Definitions, asset, define_asset_job

    from podinsight_dagster.assets.episodes import each_episode, run_per_episode
    from podinsight_dagster.partitions import episodes_partitions

    policy = BackfillPolicy.multi_run(max_partitions_per_run=100)

    @asset(partitions_def=episodes_partitions, backfill_policy=policy, group_name="bench")
    def bench_trivial(context: AssetExecutionContext):
        yield from run_per_episode(context, each_episode(list(context.partition_keys), lambda pk: {"n": 1}))

    @asset(partitions_def=episodes_partitions, backfill_policy=policy, group_name="bench")
    def bench_trivial_cached(context: AssetExecutionContext):
        with partition_list_cached(context.instance):
            yield from run_per_episode(context, each_episode(list(context.partition_keys), lambda pk: {"n": 1}))

    defs = Definitions(assets=[bench_trivial, bench_trivial_cached],
                       jobs=[define_asset_job("bench_trivial_job", selection=[bench_trivial]),
                             define_asset_job("bench_cached_job", selection=[bench_trivial_cached])])
    return defs.resolve_job_def("bench_trivial_job"), defs.resolve_job_def("bench_cached_job")


def timed_runs(job, instance, runs: list[tuple[str, dict]]) -> list[float]:
    """Wall seconds of each in-process run of ``job``, given as (label, execute_in_process keywords); one that
    fails raises, naming its label."""
    times = []
    for label, kwargs in runs:
        dt, res = harness.timed(lambda: job.execute_in_process(instance=instance, raise_on_error=False,
                                                                run_config=QUIET, **kwargs))
        times.append(dt)
        if not res.success:
            raise RuntimeError(f"{label} failed")
    return times


def range_runs(job, instance, keys: list[str], size: int, timers: Timers) -> dict:
    from podinsight_dagster.launch import contiguous_ranges
    from podinsight_dagster.partitions import EPISODES, RANGE_END_TAG, RANGE_START_TAG
    from podinsight_dagster.sensors import batched_ranges

    ordered = instance.get_dynamic_partitions(EPISODES)
    ranges = batched_ranges(ordered, keys, size)
    assert len(contiguous_ranges(ordered, keys)) == 1
    pos = {k: i for i, k in enumerate(ordered)}
    sizes = [pos[end] - pos[start] + 1 for start, end in ranges]
    timers.reset()
    times = timed_runs(job, instance, [(f"range run {start}..{end}", {"tags": {
        RANGE_START_TAG: start, RANGE_END_TAG: end, "podinsight/trigger": "bench"}}) for start, end in ranges])
    n_gdp, t_gdp = timers.get("get_dynamic_partitions")
    n_ev, t_ev = timers.get("store_event")
    total = sum(times)
    return {"episodes": len(keys), "runs": len(ranges), "total_s": total, "ms_per_episode": 1000 * total / len(keys),
            "run_s": times, "median_ms_per_episode": 1000 * statistics.median(t / n for t, n in zip(times, sizes)),
            "gdp_calls": n_gdp, "gdp_s": t_gdp, "events": n_ev, "event_s": t_ev}


def single_runs(job, instance, keys: list[str], timers: Timers) -> dict:
    timers.reset()
    times = timed_runs(job, instance, [(f"single run {pk}", {"partition_key": pk, "tags": {"podinsight/trigger": "bench"}})
                                       for pk in keys])
    n_gdp, t_gdp = timers.get("get_dynamic_partitions")
    n_ev, t_ev = timers.get("store_event")
    total = sum(times)
    return {"episodes": len(keys), "runs": len(keys), "total_s": total, "ms_per_episode": 1000 * total / len(keys),
            "median_run_s": statistics.median(times), "median_ms_per_episode": 1000 * statistics.median(times),
            "gdp_calls": n_gdp, "gdp_s": t_gdp, "events": n_ev,
            "event_s": t_ev}


def part_a(root: Path, n: int, baseline_runs: int, big_instance, big_keys: list[str], big_runs: int,
           big_singles: int) -> dict:
    from podinsight_dagster.partitions import EPISODES

    job, cached_job = trivial_jobs()
    _, instance = fresh_instance(root, "a_instance")
    keys = [f"bench-show/ep-{i:05d}" for i in range(n)]
    instance.add_dynamic_partitions(EPISODES, keys)
    instance.add_dynamic_partitions(EPISODES, ["warmup/w1", "warmup/w2"])
    timers = Timers()
    out: dict = {"n": n}
    with timers.wrapped(dagster_targets()):
        # Warm-up (imports, first connections, the job's plan): not timed.
        single_runs(job, instance, ["warmup/w1"], timers)
        range_runs(job, instance, ["warmup/w2"], 100, timers)
        log(f"(a)(i) {n} episodes in runs of 100 partitions")
        out["multi"] = range_runs(job, instance, keys, 100, timers)
        log(f"      {out['multi']['total_s']:.1f} s, {out['multi']['ms_per_episode']:.1f} ms/episode")
        sample = keys if baseline_runs >= n else keys[:: max(1, n // baseline_runs)][:baseline_runs]
        log(f"(a)(ii) one run per episode: {len(sample)} runs" + ("" if len(sample) == n else f" (sample of {n})"))
        out["single"] = single_runs(job, instance, sample, timers)
        out["single"]["extrapolated"] = len(sample) != n
        out["single"]["total_for_n_s"] = out["single"]["ms_per_episode"] * n / 1000
        log(f"      {out['single']['total_s']:.1f} s, {out['single']['ms_per_episode']:.1f} ms/episode")
        if big_instance is not None:
            total = len(big_instance.get_dynamic_partitions(EPISODES))
            log(f"(a)(iii) the same on an instance holding {total} partitions")
            chunk = big_keys[len(big_keys) // 2: len(big_keys) // 2 + 100 * big_runs]
            out["multi_big"] = range_runs(job, big_instance, chunk, 100, timers)
            out["multi_big"]["partitions"] = total
            log(f"      {out['multi_big']['total_s']:.1f} s, {out['multi_big']['ms_per_episode']:.1f} ms/episode")
            out["single_big"] = single_runs(job, big_instance, big_keys[-big_singles:], timers)
            log(f"      one-episode runs: {out['single_big']['ms_per_episode']:.1f} ms/episode")
            single_runs(cached_job, big_instance, big_keys[:1], timers)  # warm-up of the other job
            out["cached_big"] = range_runs(cached_job, big_instance, chunk, 100, timers)
            out["cached_big"]["partitions"] = total
            log(f"(a)(iv) prototype: partition list read once per run: "
                f"{out['cached_big']['ms_per_episode']:.1f} ms/episode")
    instance.dispose()
    return out


# ---------------------------------------------------------------------------
# (b)(1) adding partitions
# ---------------------------------------------------------------------------
def part_b1(root: Path, n: int, batch: int) -> tuple[dict, object, list[str]]:
    from podinsight_dagster.partitions import EPISODES

    keys = [f"show-{i // 1000:02d}/ep-{i % 1000:04d}" for i in range(n)]
    out: dict = {"n": n, "batch": batch}
    _, one = fresh_instance(root, "b1_one_call")
    t0 = time.perf_counter()
    one.add_dynamic_partitions(EPISODES, keys)
    out["one_call_s"] = time.perf_counter() - t0
    _, batched = fresh_instance(root, "b1_batches")
    t0 = time.perf_counter()
    for i in range(0, n, batch):
        batched.add_dynamic_partitions(EPISODES, keys[i:i + batch])
    out["batched_s"] = time.perf_counter() - t0
    batched.dispose()
    got = one.get_dynamic_partitions(EPISODES)
    assert len(got) == n, len(got)
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        one.get_dynamic_partitions(EPISODES)
        times.append(time.perf_counter() - t0)
    out["list_ms"] = 1000 * statistics.median(times)
    t0 = time.perf_counter()
    for k in keys[:1000]:
        one.has_dynamic_partition(EPISODES, k)
    out["has_ms"] = (time.perf_counter() - t0)  # seconds per 1,000 = ms per call
    log(f"(b)(1) add {n}: one call {out['one_call_s']:.2f} s, {n // batch} calls {out['batched_s']:.2f} s; "
        f"list {out['list_ms']:.1f} ms; has_dynamic_partition {out['has_ms']:.2f} ms")
    return out, one, keys


# ---------------------------------------------------------------------------
# (b)(2) the sensor
# ---------------------------------------------------------------------------
def feed_xml(j: int, items: int) -> bytes:
    base = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)
    parts = []
    for k in range(items):
        when = (base - timedelta(days=k)).strftime("%a, %d %b %Y %H:%M:%S +0000")
        parts.append(
            f"<item><title>Show {j} episode {items - k}</title>"
            f"<description>Episode {items - k} of bench show {j}: a few words about it.</description>"
            f"<pubDate>{when}</pubDate>"
            f'<enclosure url="{{base_url}}/audio/show-{j:02d}/ep{k:04d}.mp3" type="audio/mpeg" '
            f'length="{20_000_000 + k}"/>'
            f"<itunes:duration>{30 + k % 30}:00</itunes:duration>"
            f'<guid isPermaLink="false">show{j:02d}-ep{k:04d}</guid></item>')
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<rss version="2.0" '
            'xmlns:itunes="http://www.itunes.com/dtds/podcast-1.0.dtd"><channel>'
            f"<title>Bench show {j}</title><link>{{base_url}}/feeds/show-{j:02d}.xml</link>"
            f"<description>Bench show {j}</description>{''.join(parts)}</channel></rss>").encode()


def cdn_main(conn, feeds: int, items: int) -> None:
    from tests.support.cdn import PodcastCDN

    cdn = PodcastCDN(name="bench-feeds").start()
    size = 0
    for j in range(feeds):
        body = feed_xml(j, items)
        size += len(body)
        cdn.add_file(f"/feeds/show-{j:02d}.xml", body)
    conn.send((cdn.base_url, size))
    while True:
        cmd = conn.recv()
        if cmd == "stats":
            conn.send([(r.path, r.status) for r in cdn.requests])
            cdn.reset_stats()
        elif cmd == "quit":
            cdn.stop()
            conn.send("ok")
            return


def part_b2(root: Path, feeds: int, items: int) -> tuple[dict, Path, Path]:
    from dagster import SensorResult, build_sensor_context
    from dagster import DagsterInstance

    from podinsight_dagster import sensors as sensors_mod
    from podinsight_dagster.fetch import discover as pipeline
    from podinsight_dagster.store.checkpoints import SqliteCheckpointStore
    from podinsight_dagster.fetch.http import HttpClient
    from podinsight_dagster.partitions import EPISODES
    from podinsight_dagster.definitions import resources_for

    data = root / "data"
    feeds_dir = sensor_root(data)
    home, instance = fresh_instance(root, "b_instance")
    cdn = harness.ServerProcess(cdn_main, feeds, items, hello=True)
    base_url, size = cdn.hello
    harness.write_catalog(feeds_dir, [{"slug": f"show-{j:02d}", "url": f"{base_url}/feeds/show-{j:02d}.xml", "tier": 1}
                                      for j in range(feeds)])

    timers = Timers()
    statuses: list[str] = []
    orig_poll = pipeline._poll_feed

    def poll(*args, **kwargs):
        result, records = orig_poll(*args, **kwargs)
        statuses.append(result.status)
        return result, records

    # The sensor polls through discover() (before issue 10) or poll_feeds() (since): time whichever it calls.
    poll_fn = "poll_feeds" if hasattr(sensors_mod, "poll_feeds") else "discover"
    targets = [(sensors_mod, poll_fn, "discover"), (sensors_mod, "batched_ranges", "batched_ranges"),
               (pipeline, "_poll_feed", "poll_feed"), (HttpClient, "fetch_bytes", "fetch_bytes"),
               (pipeline, "parse_feed", "parse_feed"),
               (SqliteCheckpointStore, "register_episodes", "register_episodes"),
               (SqliteCheckpointStore, "episodes", "checkpoint_episodes"),
               (DagsterInstance, "get_dynamic_partitions", "get_dynamic_partitions"),
               (DagsterInstance, "add_dynamic_partitions", "add_dynamic_partitions")]
    out: dict = {"feeds": feeds, "items": items, "feed_bytes": size, "poll_fn": poll_fn}

    def tick(cursor=None) -> tuple[object, float, dict]:
        statuses.clear()
        timers.reset()
        pipeline._poll_feed = poll
        try:
            with timers.wrapped(targets):
                with build_sensor_context(instance=instance, cursor=cursor,
                                          resources=resources_for("local")) as sctx:
                    t0 = time.perf_counter()
                    result = sensors_mod.new_episodes_sensor(sctx)
                    wall = time.perf_counter() - t0
        finally:
            pipeline._poll_feed = orig_poll
        parts = {name: timers.get(name) for name in
                 ("discover", "poll_feed", "fetch_bytes", "parse_feed", "register_episodes", "checkpoint_episodes",
                  "get_dynamic_partitions", "batched_ranges", "add_dynamic_partitions")}
        # Discovery's 8 threads share the GIL: their wall times overlap, their CPU times add up.
        parts["cpu"] = {name: timers.cpu(name) for name in ("poll_feed", "fetch_bytes", "parse_feed")}
        parts["statuses"] = {s: statuses.count(s) for s in sorted(set(statuses))}
        return result, wall, parts

    try:
        log(f"(b)(2) first tick: {feeds} feeds x {items} items ({size / 1e6:.1f} MB of RSS)")
        first, wall1, parts1 = tick()
        assert isinstance(first, SensorResult), first
        # Before issue 10 the tick returned its new partitions as dynamic_partitions_requests for the daemon
        # to apply; since, it registers them itself (one bulk add) and returns none.
        requests_out = list(first.dynamic_partitions_requests or [])
        in_tick = len(instance.get_dynamic_partitions(EPISODES))
        new = sum(len(r.partition_keys) for r in requests_out) + in_tick
        out["first"] = {"wall_s": wall1, "parts": parts1, "new": new, "registered_in_tick": in_tick,
                        "partition_requests": sum(len(r.partition_keys) for r in requests_out),
                        "run_requests": len(first.run_requests)}
        log(f"      {wall1:.2f} s: {new} new partitions ({in_tick} registered by the tick itself), "
            f"{len(first.run_requests)} run requests; "
            f"{json.dumps({k: [v[0], round(v[1], 2)] for k, v in parts1.items() if k not in ('statuses', 'cpu')})}; "
            f"CPU {json.dumps({k: round(v, 2) for k, v in parts1['cpu'].items()})}")
        # What the sensor daemon does with the result (dagster/_daemon/sensor.py).
        out["apply"] = apply_like_daemon(instance, requests_out)
        log(f"      daemon applies the partition request: {out['apply']['wall_s']:.2f} s")
        assert len(instance.get_dynamic_partitions(EPISODES)) == feeds * items
        first_requests = cdn.call("stats")
        log("(b)(2) second tick: every feed unchanged")
        second, wall2, parts2 = tick(first.cursor)
        second_requests = cdn.call("stats")
        out["second"] = {"wall_s": wall2, "parts": parts2, "run_requests": len(second.run_requests or []),
                         "new": sum(len(r.partition_keys) for r in (second.dynamic_partitions_requests or [])),
                         "http_statuses": sorted({s for _, s in second_requests}),
                         "requests": len(second_requests)}
        out["first"]["requests"] = len(first_requests)
        log(f"      {wall2:.2f} s, HTTP statuses {out['second']['http_statuses']}, "
            f"{json.dumps({k: [v[0], round(v[1], 2)] for k, v in parts2.items() if k not in ('statuses', 'cpu')})}")
        if out["second"]["new"] or out["second"]["run_requests"]:
            raise RuntimeError("the second tick requested work")
    finally:
        cdn.close()
    instance.dispose()
    return out, home, data


def small_feed_xml(j: int) -> bytes:
    items = "".join(
        f"<item><title>Feed {j} episode {k}</title><guid isPermaLink=\"false\">f{j:04d}-e{k}</guid>"
        f"<pubDate>Mon, 0{k} Jun 2026 09:00:00 +0000</pubDate><enclosure url=\"{{base_url}}/audio/f{j:04d}-e{k}.mp3\" "
        f"type=\"audio/mpeg\" length=\"1000\"/></item>" for k in range(1, 2 + j % 2))
    return (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><rss version=\"2.0\"><channel><title>Feed {j}</title>"
            f"<link>{{base_url}}/</link><description>d</description>{items}</channel></rss>").encode()


def cdn_many_main(conn, feeds: int, latency_s: float) -> None:
    from tests.support.cdn import Fault, PodcastCDN

    cdn = PodcastCDN(name="bench-many-feeds").start()
    for j in range(feeds):
        cdn.add_file(f"/many/feed-{j:04d}.xml", small_feed_xml(j), content_type="application/rss+xml")
        cdn.set_fault(f"/many/feed-{j:04d}.xml", Fault(latency_s=latency_s))
    conn.send(cdn.base_url)
    conn.recv()
    cdn.stop()
    conn.send("ok")


def part_b2_many(root: Path, feeds: int, latency_s: float) -> dict:
    """The sensor with its default settings over many small feeds, each answering after ``latency_s``."""
    from dagster import build_sensor_context

    from podinsight_dagster import sensors as sensors_mod
    from podinsight_dagster.definitions import resources_for
    from podinsight_dagster.partitions import EPISODES

    feeds_dir = sensor_root(root / "data_many")
    _, instance = fresh_instance(root, "b_many_instance")
    cdn = harness.ServerProcess(cdn_many_main, feeds, latency_s, hello=True)
    harness.write_catalog(feeds_dir, [{"slug": f"feed-{j:04d}", "url": f"{cdn.hello}/many/feed-{j:04d}.xml", "tier": 1}
                                      for j in range(feeds)])
    out: dict = {"feeds": feeds, "latency_s": latency_s, "budget_s": getattr(sensors_mod, "TICK_BUDGET_S", None),
                 "workers": getattr(sensors_mod, "FEED_WORKERS", 8), "ticks": []}
    cursor = None
    try:
        for n in (1, 2):
            with build_sensor_context(instance=instance, cursor=cursor, resources=resources_for("local")) as sctx:
                t0 = time.perf_counter()
                result = sensors_mod.new_episodes_sensor(sctx)
                wall = time.perf_counter() - t0
            cursor = getattr(result, "cursor", None)
            state = json.loads(cursor) if cursor else {}
            reqs = list(getattr(result, "dynamic_partitions_requests", None) or [])
            if reqs:  # before issue 10: the daemon registers them
                apply_like_daemon(instance, reqs)
            out["ticks"].append({"wall_s": wall, "polled": state.get("last_polled", feeds),
                                 "carried_over": state.get("carried_over", 0), "new": state.get("last_new"),
                                 "partitions": len(instance.get_dynamic_partitions(EPISODES))})
            log(f"(b)(2) {feeds} feeds at {1000 * latency_s:.0f} ms, tick {n}: {wall:.2f} s, {out['ticks'][-1]}")
    finally:
        cdn.close()
    instance.dispose()
    return out


def apply_like_daemon(instance, requests) -> dict:
    """Dagster's own sensor-daemon handling of dynamic_partitions_requests, with a minimal launch context."""
    class Ctx:
        logger = logging.getLogger("bench.sensor_daemon")
        results: list = []

        def add_dynamic_partitions_request_result(self, r):
            self.results.append(r)

    Ctx.logger.addHandler(logging.NullHandler())
    Ctx.logger.propagate = False
    timers = Timers()
    from dagster import DagsterInstance
    with timers.wrapped([(DagsterInstance, "has_dynamic_partition", "has"),
                         (DagsterInstance, "add_dynamic_partitions", "add")]):
        t0 = time.perf_counter()
        try:
            from dagster._daemon.sensor import _handle_dynamic_partitions_requests
            _handle_dynamic_partitions_requests(requests, instance, Ctx())
            how = "dagster._daemon.sensor._handle_dynamic_partitions_requests"
        except ImportError:  # a Dagster without it: do the same by hand
            for req in requests:
                name = req.partitions_def_name
                missing = [k for k in req.partition_keys if not instance.has_dynamic_partition(name, k)]
                instance.add_dynamic_partitions(name, missing)
            how = "has_dynamic_partition per key, then add_dynamic_partitions"
        wall = time.perf_counter() - t0
    return {"wall_s": wall, "how": how, "has": timers.get("has"), "add": timers.get("add")}


# ---------------------------------------------------------------------------
# (b)(3) GraphQL
# ---------------------------------------------------------------------------
Q_KEYS = """{ assetNodeOrError(assetKey: {path: ["raw_audio"]}) { __typename
  ... on AssetNode { partitionKeysByDimension { name partitionKeys } } } }"""
Q_HEALTH = """query PartitionHealthQuery($assetKey: AssetKeyInput!) {
  assetNodeOrError(assetKey: $assetKey) { __typename ... on AssetNode { id
    partitionKeysByDimension { name type partitionKeys }
    assetPartitionStatuses { __typename
      ... on DefaultPartitionStatuses { materializedPartitions materializingPartitions failedPartitions } } } } }"""
Q_STATS = """{ assetNodeOrError(assetKey: {path: ["raw_audio"]}) { __typename
  ... on AssetNode { partitionStats { numMaterialized numPartitions numFailed numMaterializing } } } }"""
Q_PAGE = """{ assetNodeOrError(assetKey: {path: ["raw_audio"]}) { __typename
  ... on AssetNode { partitionKeyConnection(limit: 100, ascending: false) { results hasMore cursor } } } }"""
QUERIES = [
    ("all partition keys: `partitionKeysByDimension { partitionKeys }`", Q_KEYS, None),
    ("partition health (the asset page's partitions view): keys + `assetPartitionStatuses`", Q_HEALTH,
     {"assetKey": {"path": ["raw_audio"]}}),
    ("counts: `partitionStats` (asset catalog, graph nodes)", Q_STATS, None),
    ("one page: `partitionKeyConnection(limit: 100)`", Q_PAGE, None),
]


def group_rss_mib(pgid: int) -> float:
    total = 0
    for pid in subprocess.run(["ps", "-o", "pid=", "-g", str(pgid)], capture_output=True, text=True).stdout.split():
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def part_b3(root: Path, home: Path, materialized: int, repeats: int) -> dict:
    import requests
    from dagster import AssetMaterialization, DagsterInstance

    from podinsight_dagster.partitions import EPISODES

    instance = DagsterInstance.from_config(str(home))
    keys = instance.get_dynamic_partitions(EPISODES)
    chosen = keys[:: max(1, len(keys) // materialized)][:materialized]
    report_s, _ = harness.timed(lambda: [instance.report_runless_asset_event(
        AssetMaterialization(asset_key="raw_audio", partition=k)) for k in chosen])
    log(f"(b)(3) reported {len(chosen)} materializations of raw_audio in {report_s:.1f} s")
    instance.dispose()

    port = free_port()
    logf = open(root / "webserver.log", "w")
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    proc = subprocess.Popen([str(Path(sys.executable).parent / "dagster-webserver"), "-w", str(REPO / "workspace.yaml"),
                             "-h", "127.0.0.1", "-p", str(port)],
                            cwd=REPO, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    base = f"http://127.0.0.1:{port}"
    out: dict = {"partitions": len(keys), "materialized": len(chosen), "report_s": report_s, "queries": []}
    try:
        t0 = time.perf_counter()
        deadline = time.monotonic() + 180
        session = requests.Session()

        def post(query, variables=None):
            t = time.perf_counter()
            resp = session.post(base + "/graphql", json={"query": query, "variables": variables or {}}, timeout=300)
            dt = time.perf_counter() - t
            resp.raise_for_status()
            body = resp.json()
            if body.get("errors"):
                raise RuntimeError(f"GraphQL error: {body['errors'][0].get('message')}")
            return body["data"], dt, len(resp.content)

        while True:  # the server, then the code location
            if proc.poll() is not None:
                raise RuntimeError(f"dagster-webserver exited: {(root / 'webserver.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(base + "/server_info", timeout=2) as resp:
                    if resp.status == 200:
                        data, _, _ = post('{ assetNodeOrError(assetKey: {path: ["raw_audio"]}) { __typename } }')
                        if data["assetNodeOrError"]["__typename"] == "AssetNode":
                            break
            except (OSError, RuntimeError, requests.RequestException):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("dagster-webserver did not serve the code location within 180 s")
            time.sleep(0.5)
        out["startup_s"] = time.perf_counter() - t0
        log(f"      webserver up in {out['startup_s']:.1f} s")
        for label, query, variables in QUERIES:
            times, size, data = [], 0, None
            for _ in range(1 + repeats):
                data, dt, size = post(query, variables)
                times.append(dt)
            node = data["assetNodeOrError"]
            check = ""
            if "partitionKeysByDimension" in node:
                check = f"{len(node['partitionKeysByDimension'][0]['partitionKeys'])} keys"
            if "assetPartitionStatuses" in node:
                check += f", {len(node['assetPartitionStatuses']['materializedPartitions'])} materialized"
            if "partitionStats" in node:
                check = json.dumps(node["partitionStats"])
            if "partitionKeyConnection" in node:
                check = f"{len(node['partitionKeyConnection']['results'])} keys"
            out["queries"].append({"label": label, "cold_ms": 1000 * times[0],
                                   "median_ms": 1000 * statistics.median(times[1:]),
                                   "all_ms": [round(1000 * t) for t in times], "kb": size / 1024, "check": check})
            log(f"      {label}: cold {1000 * times[0]:.0f} ms, median {1000 * statistics.median(times[1:]):.0f} ms "
                f"({size / 1024:.0f} KiB; {check})")
        out["rss_mib"] = group_rss_mib(proc.pid)
    finally:
        kill_group(proc)
        logf.close()
    return out


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------
def machine() -> dict:
    import dagster

    mem = harness.free_g()
    total = next((ln.split()[1] for ln in mem if ln.startswith("Mem:")), "?")
    return {"cpu": harness.cpu_model("?"), "cores": os.cpu_count(), "mem_gib": total,
            "python": platform.python_version(), "load": harness.load_text(),
            "dagster": dagster.__version__, "date": time.strftime("%Y-%m-%d"), "free": "\n".join(mem)}


def sensor_rows(b2: dict) -> list[str]:
    """The sensor's rows of the (b) table: tick 1 (registration included), the daemon's share, tick 2."""
    f1, f2, ap = b2["first"], b2["second"], b2["apply"]
    fn = "discover()" if b2.get("poll_fn", "discover") == "discover" else "poll_feeds()"

    def parts(p: dict) -> str:
        add = p.get("add_dynamic_partitions", (0, 0.0))
        return (f"`{fn}` {p['discover'][1]:.2f} s: feed parsing {p['cpu']['parse_feed']:.2f} CPU-s "
                f"({p['parse_feed'][0]} feeds), checkpoint inserts {p['register_episodes'][1]:.2f} s, "
                f"checkpoint reads {p['checkpoint_episodes'][1]:.2f} s; instance reads and ranges "
                f"{p['get_dynamic_partitions'][1] + p['batched_ranges'][1]:.2f} s"
                + (f"; `add_dynamic_partitions` x{add[0]} {add[1]:.2f} s" if add[0] else ""))

    if f1.get("partition_requests", f1["new"]):
        daemon = (f"| the sensor daemon applying tick 1's {f1.get('partition_requests', f1['new']):,} "
                  f"`dynamic_partitions_requests` keys (Dagster's `_handle_dynamic_partitions_requests`: "
                  f"{ap['has'][0]:,} `has_dynamic_partition` calls, then one add) | "
                  f"**{ap['wall_s']:.1f} s** (the add itself {ap['add'][1]:.2f} s) |")
    else:
        daemon = (f"| the sensor daemon after tick 1: no `dynamic_partitions_requests` to apply (the tick "
                  f"registered its {f1['registered_in_tick']:,} partitions itself) | **{ap['wall_s']:.2f} s** |")
    return [
        f"| `new_episodes_sensor` tick 1: {b2['feeds']} feeds x {b2['items']:,} items "
        f"({b2['feed_bytes'] / 1e6:.1f} MB of RSS on a loopback PodcastCDN); finds {f1['new']:,} new episodes, "
        f"requests {f1['run_requests']} runs | **{f1['wall_s']:.2f} s** ({parts(f1['parts'])}) |",
        daemon,
        f"| tick 1 and the daemon's registration together: {f1['new']:,} new episodes registered | "
        f"**{f1['wall_s'] + ap['wall_s']:.1f} s** |",
        f"| tick 2: every feed answers {', '.join(map(str, f2['http_statuses']))} ({f2['requests']} requests), "
        f"nothing new | **{f2['wall_s']:.2f} s** ({parts(f2['parts'])}) |",
    ] + ([many_row(b2["many"])] if "many" in b2 else [])


def many_row(m: dict) -> str:
    t1, t2 = m["ticks"]
    budget = f"{m['budget_s']:g} s budget, " if m.get("budget_s") else ""
    return (f"| `new_episodes_sensor` with its defaults ({budget}{m['workers']} feeds at a time) over "
            f"{m['feeds']:,} small feeds (1-2 items), each answering after {1000 * m['latency_s']:.0f} ms: tick 1 "
            f"polls {t1['polled']:,} ({t1['carried_over']:,} carried over), registers {t1['new']:,}; tick 2 "
            f"(all 304) | **{t1['wall_s']:.2f} s**; **{t2['wall_s']:.2f} s** |")


def report(m: dict, a: dict, b1: dict, b2: dict, b3: dict, total_s: float, peak_mib: float, load_end: str) -> str:
    mu, si = a["multi"], a["single"]
    ratio = si["ms_per_episode"] / mu["ms_per_episode"]
    ratio_med = si["median_ms_per_episode"] / mu["median_ms_per_episode"]
    single_note = (f"{si['runs']} of {a['n']} runs made, total extrapolated" if si["extrapolated"]
                   else f"all {a['n']} runs made")

    def row(label: str, r: dict, runs: int, total_s: float, ms: float, events: int, event_s: float,
            bold: bool = True) -> str:
        star = "**" if bold else ""
        return (f"| {label} | {runs} | {total_s:.1f} s | {star}{ms:.1f}{star} | {r['median_ms_per_episode']:.1f} | "
                f"{events:,} ({event_s:.1f} s) | {r['gdp_calls']:,} ({r['gdp_s']:.1f} s) |")

    scale = a["n"] / si["runs"]
    lines = [
        f"Measured by `bench/orchestration_bench.py` on {m['date']}: {m['cpu']}, {m['cores']} cores, "
        f"{m['mem_gib']} GiB RAM, Python {m['python']}, Dagster {m['dagster']}; fresh SQLite instances in a "
        f"temporary folder (telemetry off). Whole run {total_s / 60:.1f} min, benchmark process peak RSS "
        f"{peak_mib:.0f} MiB. Load average {m['load']} at the start, {load_end} at the end (a shared machine: "
        "absolute times move between runs, ratios within a run much less).",
        "",
        f"**(a) Overhead per episode, {a['n']}-episode backfill, trivial work**: `bench_trivial` (partitioned by "
        "`episodes_partitions`, `BackfillPolicy.multi_run(100)`) runs the project's `run_per_episode` with a step "
        "returning `{\"n\": 1}`, so each episode still pays its log line and its partition's materialization with "
        "metadata; `execute_in_process` on the instance, as `LocalLauncher` does. Events are SQLite event-log "
        "writes; partition-list loads are `DagsterInstance.get_dynamic_partitions` calls.",
        "",
        "| how | runs | wall | ms/episode | ms/episode, median run | events written (time) | partition-list loads "
        "(time) |",
        "|---|---|---|---|---|---|---|",
        row(f"(i) project: 100 partitions per run (range tags), {a['n']} partitions", mu, mu["runs"],
            mu["total_s"], mu["ms_per_episode"], mu["events"], mu["event_s"]),
        row(f"(ii) baseline: one run per episode ({single_note})", si, a["n"], si["total_for_n_s"],
            si["ms_per_episode"], round(si["events"] * scale), si["event_s"] * scale, bold=False),
    ]
    if "multi_big" in a:
        mb, sb = a["multi_big"], a["single_big"]
        lines += [
            row(f"(iii) as (i), instance of {mb['partitions']:,} partitions ({mb['episodes']} episodes)", mb,
                mb["runs"], mb["total_s"], mb["ms_per_episode"], mb["events"], mb["event_s"]),
            row(f"(iii) as (ii), instance of {mb['partitions']:,} partitions ({sb['runs']} episodes)", sb,
                sb["runs"], sb["total_s"], sb["ms_per_episode"], sb["events"], sb["event_s"], bold=False),
        ]
    if "cached_big" in a:
        cb = a["cached_big"]
        lines.append(row("(iv) prototype: as (iii) runs of 100, partition list read once per run "
                         "(`partition_list_cached` in the script, not project code)", cb, cb["runs"],
                         cb["total_s"], cb["ms_per_episode"], cb["events"], cb["event_s"]))
    big = a.get("multi_big")
    lines += [
        "",
        f"One run per episode / runs of 100: **{ratio:.1f}x** ({ratio_med:.1f}x from median runs). Target <= 50 ms "
        f"per episode for (i): **{'met' if mu['ms_per_episode'] <= 50 else 'NOT met'}** at {a['n']} partitions"
        + (f", **{'met' if big['ms_per_episode'] <= 50 else 'NOT met'}** at {big['partitions']:,}." if big else "."),
        "",
        f"**(b) {b1['n']:,} episode partitions.**",
        "",
        "| what | time |",
        "|---|---|",
        f"| add {b1['n']:,} dynamic partitions: one `add_dynamic_partitions` call / {b1['n'] // b1['batch']} calls "
        f"of {b1['batch']:,} | {b1['one_call_s']:.2f} s / {b1['batched_s']:.2f} s |",
        f"| `get_dynamic_partitions` (all {b1['n']:,}) / `has_dynamic_partition` (one key) | "
        f"{b1['list_ms']:.1f} ms / {b1['has_ms']:.2f} ms |",
    ]
    lines += sensor_rows(b2)
    lines += [
        f"| setup for the queries: {b3['materialized']:,} `report_runless_asset_event` materializations | "
        f"{b3['report_s']:.1f} s ({1000 * b3['report_s'] / b3['materialized']:.1f} ms each) |",
        "",
        f"GraphQL with {b3['partitions']:,} `raw_audio` partitions, {b3['materialized']:,} materialized "
        "(`dagster-webserver -w workspace.yaml` in its own process group; POST /graphql timed at the client; the "
        f"first request after start-up, then the median of {len(b3['queries'][0]['all_ms']) - 1}; webserver + code "
        f"server RSS {b3['rss_mib']:.0f} MiB):",
        "",
        "| query | first | median | response |",
        "|---|---|---|---|",
    ]
    for q in b3["queries"]:
        lines.append(f"| {q['label']} | {q['cold_ms']:.0f} ms | **{q['median_ms']:.0f} ms** | {q['kb']:.0f} KiB |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, to check the script")
    ap.add_argument("--episodes", type=int, default=500, help="(a): episodes in the backfill")
    ap.add_argument("--baseline-runs", type=int, default=500,
                    help="(a)(ii): one-episode runs actually made; fewer than --episodes extrapolates")
    ap.add_argument("--partitions", type=int, default=20_000, help="(b): partitions (feeds x 1,000 items)")
    ap.add_argument("--materialized", type=int, default=2_000)
    ap.add_argument("--repeats", type=int, default=9, help="(b)(3): timed repeats per query after the first")
    ap.add_argument("--out", type=Path, default=None, help="also write the Markdown section here")
    ap.add_argument("--raw", type=Path, default=None, help="also write the raw figures (JSON) here")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("--only", choices=["sensor"], default=None,
                    help="sensor: only (b)(2), the new_episodes_sensor ticks (about a minute)")
    args = ap.parse_args()
    if args.quick:
        args.episodes, args.baseline_runs, args.partitions, args.materialized, args.repeats = 200, 50, 2_000, 200, 2
    items = 1000 if args.partitions >= 1000 else args.partitions
    feeds = max(1, args.partitions // items)

    started = time.perf_counter()
    m = machine()
    log(f"{m['cpu']}, {m['cores']} cores, {m['mem_gib']} GiB, Python {m['python']}, Dagster {m['dagster']}")
    root = Path(tempfile.mkdtemp(prefix="podinsight-orch-bench-"))
    saved_env = dict(os.environ)
    os.environ.pop("DAGSTER_HOME", None)
    if args.only == "sensor":
        try:
            b2, _, _ = part_b2(root, feeds, items)
            b2["many"] = part_b2_many(root, 1000, 0.02)
        finally:
            os.environ.clear()
            os.environ.update(saved_env)
            if not args.keep:
                shutil.rmtree(root, ignore_errors=True)
        text = "\n".join([f"Measured by `bench/orchestration_bench.py --only sensor` on {m['date']}: {m['cpu']}, "
                          f"{m['cores']} cores, load average {m['load']} at the start, "
                          f"{harness.load_text()} at the end.", "",
                          "| what | time |", "|---|---|"] + sensor_rows(b2))
        print()
        harness.emit(text, args.out)
        print("\nraw figures:", json.dumps({"machine": m, "b2": b2}, default=str))
        if args.raw:
            args.raw.write_text(json.dumps({"machine": m, "b2": b2}, default=str, indent=1) + "\n")
        return 0
    try:
        b1, big_instance, big_keys = part_b1(root, feeds * items, 1000)
        a = part_a(root, args.episodes, args.baseline_runs, big_instance, big_keys,
                   big_runs=2 if not args.quick else 1, big_singles=20 if not args.quick else 5)
        big_instance.dispose()
        b2, home, _ = part_b2(root, feeds, items)
        b2["many"] = part_b2_many(root, 1000 if not args.quick else 100, 0.02)
        b3 = part_b3(root, home, args.materialized, args.repeats)
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        if args.keep:
            log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    load_end = harness.load_text()
    text = report(m, a, b1, b2, b3, time.perf_counter() - started, peak, load_end)
    print()
    harness.emit(text, args.out)
    raw = {"machine": m, "a": a, "b1": b1, "b2": b2, "b3": b3, "total_s": time.perf_counter() - started,
           "peak_mib": peak, "load_end": load_end}
    print("\nraw figures:", json.dumps(raw, default=str))
    if args.raw:
        args.raw.write_text(json.dumps(raw, default=str, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
