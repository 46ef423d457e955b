"""`podrun fetch` as 1, 2 and 4 tasks on one AWS stack (moto): episodes/s, and no episode fetched twice.

Not a test. Run from the repository root:

    .venv/bin/python bench/fetch_tasks_bench.py              # 20 episodes answered 3 s late, host limit 4
    .venv/bin/python bench/fetch_tasks_bench.py --episodes 40 --latency 2 --limit 8

The scenario of tests/test_download_claims.py: each task is a real `podrun fetch` process with its own
data root and Dagster instance (PODINSIGHT_DEPLOYMENT=aws), all on one moto server (a fresh stack per
case: buckets, status table, the host-limit slots) and one loopback CDN whose audio answers
``--latency`` seconds late (bytes small) under one host limit. All tasks start at once; the case's time
is from the start to the last task's exit. Counted at the servers: GETs per episode (CDN), puts per
episode (versions of the raw bucket's audio keys at moto), peak requests in flight at the CDN. The
floor is episodes x latency / limit (the host limit binds); the ratio is against 1 task in this run.
Prints a Markdown section (also written to --out).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import harness  # noqa: E402  (bench/: the repository on sys.path, the report)


def run_case(tasks: int, moto, args, tmp: Path) -> dict:
    from tests.assets.test_concurrent_fetch import peak_concurrency
    from tests.support.cdn import PodcastCDN
    from tests.support.fetch_tasks import Stack, audio_gets, finish, slow_catalog, start_fetch, task_env

    with PodcastCDN(name=f"bench-{tasks}") as cdn:
        feeds = tmp / f"feeds-{tasks}"
        paths = slow_catalog(cdn, feeds, "slow", args.episodes, args.latency, args.limit)
        stack = Stack(moto.url, f"b{tasks}-{int(time.time())}").create(moto.client)
        envs = [task_env(tmp / f"task-{tasks}-{i}", feeds, stack.env()) for i in range(tasks)]
        start = time.monotonic()
        results = finish([start_fetch(env) for env in envs], timeout_s=1800)
        wall = time.monotonic() - start
        failed = [out + err for rc, out, err in results if rc != 0]
        gets = audio_gets(cdn, paths)
        audio = [r for r in cdn.requests if r.path in set(paths) and r.finished is not None]
        transfer = max(r.finished for r in audio) - min(r.started for r in audio) if audio else float("nan")
        puts = stack.puts(moto.client)
        return {"tasks": tasks, "wall": wall, "eps": args.episodes / wall, "transfer": transfer,
                "gets": sum(gets.values()), "puts": sum(puts.values()), "peak": peak_concurrency(cdn, "/audio/"),
                "failed": len(failed), "first_failure": failed[0][-2000:] if failed else ""}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--latency", type=float, default=3.0)
    ap.add_argument("--limit", type=int, default=4)
    ap.add_argument("--tasks", default="1,2,4")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("MOTO_RECORDER_FILEPATH", os.path.join(tempfile.gettempdir(), "bench_moto_recording"))
    from tests.conftest import MotoServer

    moto = MotoServer()
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for tasks in [int(t) for t in args.tasks.split(",")]:
                row = run_case(tasks, moto, args, Path(tmp))
                rows.append(row)
                print(f"{tasks} task(s): {row['wall']:.1f} s, {row['eps']:.2f} episodes/s, GETs {row['gets']}, "
                      f"puts {row['puts']}, peak {row['peak']}, failed tasks {row['failed']}", flush=True)
                if row["failed"]:
                    print(row["first_failure"], file=sys.stderr)
    finally:
        moto.stop()
    floor = args.episodes * args.latency / args.limit
    base = rows[0]["eps"]
    load = os.getloadavg()
    lines = [f"### `podrun fetch` as several tasks on one stack ({args.episodes} episodes, {args.latency:g} s each, "
             f"host limit {args.limit})", "",
             f"Machine: {os.cpu_count()} cores ({platform.processor() or platform.machine()}), load average "
             f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at the end (shared with other work). Transfer floor "
             f"(episodes x latency / limit): {floor:.1f} s.", "",
             "| tasks | wall s | episodes/s | vs 1 task | transfer window s | audio GETs | S3 puts | peak at CDN |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['tasks']} | {r['wall']:.1f} | {r['eps']:.2f} | {r['eps'] / base:.2f}x | "
                     f"{r['transfer']:.1f} | {r['gets']} | {r['puts']} | {r['peak']} |")
    harness.emit("\n".join(lines) + "\n", args.out, end="")


if __name__ == "__main__":
    main()
