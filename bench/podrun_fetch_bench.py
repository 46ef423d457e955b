"""`podrun fetch`, the whole command, against aria2c with the same per-host caps on the same loopback files.

Not a test. Run from the repository root:

    .venv/bin/python bench/podrun_fetch_bench.py            # 200 x 5 MB, 3 rounds (~5 minutes on 2 cores)
    .venv/bin/python bench/podrun_fetch_bench.py --quick    # 40 x 1 MB, 1 round: checks the script works
    .venv/bin/python bench/podrun_fetch_bench.py --episodes 1000 --kb 20   # many small episodes: the command's share

The loopback CDN (tests/support/cdn.py) runs in its own process on 4 hosts (127.0.0.1..4).
Every request waits 20 ms and every connection is paced to 4 MB/s, so with 3 connections per
host the caps allow at most 4 x 3 x 4 MB/s = 48 MB/s: the caps bind, not the CPU.

  podrun  `.venv/bin/podrun fetch` as an operator runs it: interpreter start, feed poll, manifest,
          checkpoint writes, one Dagster run, the downloads (sha256 of every byte), metrics; the
          catalog sets host_limits 3 for each host.
  aria2c  one `aria2c -j 3` process per host (3 downloads at once per host, one connection each),
          all four at once, from a list of the same URLs.
  library (labelled) HttpClient.download from a 12-thread pool with the same caps: what the
          command's downloads cost without the command around them.

Rounds alternate; the median is reported, with the server's peak concurrency per host (a cap
violation is any host above 3). Prints a Markdown section (also written to --out).

    .venv/bin/python bench/podrun_fetch_bench.py --bad-feed --before 56290b1   # issue 22 item 8

``--bad-feed``: the issue's 14-item feed with 8 bad items (404, 410, an HTML page, JSON bytes, a file
over the cap, a redirect to 169.254.169.254, a body always cut, an always-500) and 6 good ones (two of
them flaky: 503 twice, one reset), on one loopback host, with the default retry settings. Times
`podrun fetch` of this tree against the same command of ``--before`` (a commit, checked out in a
temporary git worktree and run from it), and counts each item's requests at the server.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness  # noqa: E402  (bench/: timing, the CDN process, data roots, the machine's description)
from harness import DEMO, MB, REPO  # noqa: E402

HOSTS = ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"]
PER_HOST = 3
RATE = 4_000_000          # bytes per second per connection
LATENCY = 0.02
CPU_S: dict = {}  # CPU seconds of each podrun command, by tree (None: this virtualenv's podrun)


def episode_body(i: int, size: int, block: bytes) -> bytes:
    """A distinct, real MP3 stream of ``size`` bytes: an ID3 tag naming the episode, then MPEG frames."""
    head = b"ID3\x04\x00\x00\x00\x00\x00\x10" + f"episode-{i:07d}".encode().ljust(16, b" ")  # 16-byte tag
    return (head + block * (-(-size // len(block))))[:size]


def mpeg_frames() -> bytes:
    """The bundled demo episodes' MPEG audio, concatenated (a valid stream), as the block bodies repeat."""
    return b"".join(p.read_bytes() for p in DEMO)


def feed_xml(host: int, urls: list[str]) -> bytes:
    items = "".join(f'<item><title>Episode {k}</title><guid isPermaLink="false">h{host}-ep{k}</guid>'
                    f'<enclosure url="{u}" type="audio/mpeg"/></item>' for k, u in enumerate(urls))
    return (f'<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel><title>Show {host}</title>'
            f"{items}</channel></rss>").encode()


def server_main(conn, n: int, size: int) -> None:
    from tests.support.cdn import Fault, PodcastCDN

    block = mpeg_frames()
    cdns = [PodcastCDN(h, name=f"bench-{h}").start() for h in HOSTS]
    urls: list[list[str]] = [[] for _ in HOSTS]
    for i in range(n):
        h = i % len(HOSTS)
        path = f"/audio/ep{i}.mp3"
        cdns[h].add_file(path, episode_body(i, size, block), content_type="audio/mpeg")
        cdns[h].set_fault(path, Fault(latency_s=LATENCY, bandwidth_bps=RATE))
        urls[h].append(cdns[h].url(path))
    for h, cdn in enumerate(cdns):
        cdn.add_file("/feed.xml", feed_xml(h, urls[h]), content_type="application/rss+xml")
    conn.send(([c.base_url for c in cdns], urls))
    while True:
        cmd = conn.recv()
        if cmd == "reset":
            for c in cdns:
                c.reset_stats()
            conn.send("ok")
        elif cmd == "stats":
            conn.send([c.max_concurrent for c in cdns])
        elif cmd == "quit":
            for c in cdns:
                c.stop()
            conn.send("ok")
            return


class Server(harness.ServerProcess):
    """The CDN process of server_main: ``bases`` (one base URL per host) and ``urls`` (each host's episodes)."""

    def __init__(self, n: int, size: int):
        super().__init__(server_main, n, size, hello=True)
        self.bases, self.urls = self.hello


def run_podrun(server: Server, work: Path, tree: Path | None = None) -> float:
    """``podrun fetch`` on a fresh data root; with ``tree``, that checkout's code (``--before``: both run this way)."""
    home = harness.data_root(work / "podrun-home", [{"slug": f"show-{h}", "url": f"{base}/feed.xml", "tier": 1}
                                                    for h, base in enumerate(server.bases)],
                             host_limits={h: PER_HOST for h in HOSTS})
    env = harness.podrun_env(home, allow_private_networks="127.0.0.0/8")
    argv, cwd = [harness.podrun_bin(), "fetch"], None
    if tree is not None:  # as --bad-feed runs it: the checkout's own package first on sys.path
        env["PYTHONPATH"] = str(tree)
        argv, cwd = [sys.executable, "-c", "import sys; from podinsight_dagster.cli import main; "
                     "sys.argv[0] = 'podrun'; main()", "fetch"], tree
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    out, wall = harness.run_timed(argv, env=env, cwd=cwd)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU_S.setdefault(tree, []).append(after.ru_utime + after.ru_stime - used.ru_utime - used.ru_stime)
    if out.returncode != 0:
        raise RuntimeError(f"podrun fetch failed:\n{out.stdout}\n{out.stderr}")
    files = list((home / "pod-insights-raw").rglob("episode.mp3"))
    if len(files) != sum(len(u) for u in server.urls):
        raise RuntimeError(f"podrun fetch left {len(files)} files")
    return wall


def run_aria2c(server: Server, work: Path) -> float:
    out = work / "aria2c"
    shutil.rmtree(out, ignore_errors=True)
    procs = []
    t0 = time.perf_counter()
    for h, urls in enumerate(server.urls):
        folder = out / f"host{h}"
        folder.mkdir(parents=True)
        listing = folder / "urls.txt"
        listing.write_text("".join(f"{u}\n  out=ep{i}.mp3\n" for i, u in enumerate(urls)))
        procs.append(subprocess.Popen(
            ["aria2c", "-q", "-j", str(PER_HOST), "-x", "1", "-s", "1", "--file-allocation=none",
             "--allow-overwrite=true", "--auto-file-renaming=false", "-d", str(folder), "-i", str(listing)]))
    codes = [p.wait() for p in procs]
    wall = time.perf_counter() - t0
    if any(codes):
        raise RuntimeError(f"aria2c failed: {codes}")
    return wall


def run_library(server: Server, work: Path) -> float:
    from podinsight_dagster.fetch.http import HttpClient, HttpConfig
    from podinsight_dagster.fetch.limits import LocalHostLimiter
    from podinsight_dagster.fetch.netpolicy import NetworkPolicy

    out = work / "library"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    config = HttpConfig(default_host_limit=PER_HOST)
    client = HttpClient(config, NetworkPolicy.parse("127.0.0.0/8"), LocalHostLimiter({}, PER_HOST))
    # Hosts interleaved, as the command's scheduler interleaves them (a host-by-host list would leave
    # 9 of the 12 threads queued behind one host's cap).
    urls = [u for group in zip(*server.urls) for u in group]
    return harness.timed_pool(lambda iu: client.download(iu[1], out / f"{iu[0]}.mp3"), enumerate(urls),
                              PER_HOST * len(HOSTS))[0]


BAD_FEED_GOOD = ["ok1", "ok2", "ok3", "ok4", "flaky503", "cutonce"]
BAD_FEED_PERMANENT = ["gone404", "gone410", "html", "notaudio", "oversize", "private"]
BAD_FEED_RETRYABLE = ["alwayscut", "always500"]


def _arm_bad_feed(cdn, path: dict[str, str]) -> None:
    from tests.support.cdn import Fault

    cdn.reset_stats()
    faults = {"flaky503": Fault(status=503, times=2), "cutonce": Fault(reset_after_bytes=50_000, times=1),
              "gone404": Fault(status=404), "gone410": Fault(status=410), "html": Fault(html_200=True),
              "private": Fault(redirect_to="http://169.254.169.254/latest/ep.mp3"),
              "alwayscut": Fault(truncate_after_bytes=1000), "always500": Fault(status=500)}
    for guid, fault in faults.items():
        cdn.set_fault(path[guid], fault)  # re-armed: counts of `times` start again


def bad_feed_main(args) -> int:
    """``--bad-feed``: this tree's ``podrun fetch`` against ``--before``'s on the 14-item feed."""
    from tests.support.cdn import PodcastCDN

    load = os.getloadavg()
    demo = DEMO
    guids = BAD_FEED_GOOD + BAD_FEED_PERMANENT + BAD_FEED_RETRYABLE
    rows = []
    with tempfile.TemporaryDirectory(prefix="podrun-bad-feed-") as tmp, PodcastCDN(name="bad-feed") as cdn:
        work = Path(tmp)
        bodies = {g: demo[i].read_bytes() for i, g in enumerate(BAD_FEED_GOOD)}
        bodies.update({g: demo[-1].read_bytes() for g in BAD_FEED_PERMANENT + BAD_FEED_RETRYABLE})
        bodies["notaudio"] = b'{"error": "episode moved"}' + b" " * 2000
        bodies["oversize"] = b"".join(p.read_bytes() for p in demo[:3])  # ~570 kB, over the 500 kB cap set below
        path = {g: f"/audio/{g}.mp3" for g in guids}
        for g in guids:
            if g != "gone404":
                cdn.add_file(path[g], bodies[g], content_type="audio/mpeg")
        items = "".join(f'<item><title>{g}</title><guid isPermaLink="false">{g}</guid>'
                        f'<enclosure url="{cdn.url(path[g])}" type="audio/mpeg"/></item>' for g in guids)
        cdn.add_file("/feed.xml", f'<?xml version="1.0"?><rss version="2.0"><channel><title>mixed</title>{items}'
                     "</channel></rss>".encode(), content_type="application/rss+xml")
        good_items = "".join(f'<item><title>{g}</title><guid isPermaLink="false">{g}</guid>'
                             f'<enclosure url="{cdn.url(path[g])}" type="audio/mpeg"/></item>' for g in BAD_FEED_GOOD)
        cdn.add_file("/good.xml", f'<?xml version="1.0"?><rss version="2.0"><channel><title>good</title>{good_items}'
                     "</channel></rss>".encode(), content_type="application/rss+xml")
        # The command's own cost (start, feed poll, Dagster run) on the 6 good items alone, as a floor.
        trees = [("after, the 6 good items alone", REPO, "/good.xml"), ("after", REPO, "/feed.xml")]
        if args.before:
            before = work / "before"
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(before), args.before],
                           check=True)
            trees.append((f"before ({args.before})", before, "/feed.xml"))
        try:
            for label, tree, feed in trees:
                home = harness.data_root(work / f"home-{len(rows)}", [{"slug": "mixed", "url": cdn.url(feed), "tier": 1}])
                env = harness.podrun_env(home, {"PYTHONPATH": str(tree)}, allow_private_networks="127.0.0.0/8",
                                         max_audio_bytes=500000)
                where = subprocess.run([sys.executable, "-c", "import podinsight_dagster as p; print(p.__file__)"],
                                       cwd=tree, env=env, capture_output=True, text=True).stdout.strip()
                if not where.startswith(str(tree)):
                    raise RuntimeError(f"{label}: podinsight_dagster comes from {where}, not {tree}")
                _arm_bad_feed(cdn, path)
                out, wall = harness.run_timed([sys.executable, "-c", "import sys; from podinsight_dagster.cli import "
                                               "main; sys.argv[0] = 'podrun'; main()", "fetch"], cwd=tree, env=env)
                got = len(list((home / "pod-insights-raw").rglob("episode.mp3")))
                counts = {g: cdn.request_count(path[g]) for g in guids}
                rows.append((label, wall, out.returncode, got, counts))
                print(f"{label}: {wall:.1f} s, exit {out.returncode}, {got} downloaded, requests {counts}", flush=True)
        finally:
            if args.before:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(work / "before")])
    lines = ["<!-- section: podrun fetch, a feed with bad items (bench/podrun_fetch_bench.py --bad-feed) -->",
             f"Measured by `bench/podrun_fetch_bench.py --bad-feed{' --before ' + args.before if args.before else ''}`"
             f" on {time.strftime('%Y-%m-%d')}: the issue-22 feed of 14 items on one loopback host, 8 of them bad "
             "(404, 410, an HTML page, JSON bytes, 570 kB over a 500 kB cap, a redirect to 169.254.169.254, a body "
             "always cut after 1000 bytes, an always-500) and 6 good (one 503 twice, one reset once), default "
             f"retry settings; one run each; 1-minute load average {load[0]:.2f} before it started (2 shared cores: "
             "other work competes).", "",
             "| `podrun fetch` | wall time | exit | downloaded | requests per permanent failure | "
             "requests: always cut, always 500 | requests: 503 twice, reset once |", "|---|---|---|---|---|---|---|"]
    for label, wall, code, got, counts in rows:
        perm = sorted({counts[g] for g in BAD_FEED_PERMANENT})
        lines.append(f"| {label} | {wall:.1f} s | {code} | {got} of 6 | {', '.join(map(str, perm)) if any(perm) else '-'} | "
                     f"{counts['alwayscut']}, {counts['always500']} | {counts['flaky503']}, {counts['cutonce']} |")
    if len(rows) == 3:
        lines += ["", f"**after / before = {rows[1][1] / rows[2][1]:.2f}x** the wall time; beyond the command's own "
                  f"cost (the good items alone): {rows[1][1] - rows[0][1]:.1f} s after, {rows[2][1] - rows[0][1]:.1f} s "
                  "before."]
    lines += ["", "Machine:", "", *harness.fenced(harness.lscpu()), ""]
    harness.emit("\n".join(lines), args.out, end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--bad-feed", action="store_true", help="the issue-22 feed with 8 bad items (see above)")
    ap.add_argument("--before", default=None, help="a commit whose podrun fetch alternates with this tree's "
                    "(a temporary git worktree; with --bad-feed: its run of the bad feed)")
    ap.add_argument("--episodes", type=int, default=None, help="episodes (default 200; --quick 40)")
    ap.add_argument("--kb", type=int, default=None, help="size of each episode in KB (default 5000; --quick 1000)")
    args = ap.parse_args(argv)
    args.out = args.out or harness.OUT / ("podrun_fetch_bad_feed.md" if args.bad_feed else "podrun_fetch.md")
    if args.bad_feed:
        return bad_feed_main(args)
    n, size, rounds = (40, 1 * MB, 1) if args.quick else (200, 5 * MB, 3)
    rounds = args.rounds or rounds
    n = args.episodes or n
    size = args.kb * 1000 if args.kb else size
    load = os.getloadavg()
    server = Server(n, size)
    # --before: this tree's podrun and the commit's alternate in each round (both run from their checkout, the
    # same way), then aria2c; the library figure is left out to keep rounds short.
    kinds = ["podrun", "before", "aria2c"] if args.before else ["podrun", "aria2c", "library"]
    times: dict[str, list[float]] = {k: [] for k in kinds}
    peaks: dict[str, list[int]] = {k: [] for k in kinds}
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="podrun-fetch-bench-", dir="/dev/shm"
                                         if Path("/dev/shm").is_dir() else None) as tmp:
            work = Path(tmp)
            before = work / "before"
            if args.before:
                subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(before),
                                args.before], check=True)
            fns = {"podrun": (lambda s, w: run_podrun(s, w, REPO)) if args.before else run_podrun,
                   "before": lambda s, w: run_podrun(s, w, before), "aria2c": run_aria2c, "library": run_library}
            try:
                for r in range(rounds):
                    for kind in kinds:
                        server.call("reset")
                        times[kind].append(fns[kind](server, work))
                        peaks[kind].append(max(server.call("stats")))
                        print(f"round {r + 1} {kind}: {times[kind][-1]:.2f} s, peak per host {peaks[kind][-1]}, "
                              f"1-min load {os.getloadavg()[0]:.1f}", flush=True)
            finally:
                if args.before:
                    subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(before)])
    finally:
        server.close()
    total_mb = n * size / MB
    med = harness.medians(times)
    cap = len(HOSTS) * PER_HOST * RATE / MB
    lines = [
        "<!-- section: podrun fetch (bench/podrun_fetch_bench.py) -->",
        f"Measured by `bench/podrun_fetch_bench.py` on {time.strftime('%Y-%m-%d')} ({n} episodes x "
        f"{size / MB:g} MB on {len(HOSTS)} loopback hosts, {PER_HOST} connections per host, {RATE / MB:g} MB/s per "
        f"connection, {LATENCY * 1000:g} ms per request, so the caps allow {cap:g} MB/s; median of {rounds} "
        f"alternating rounds; whole run {(time.perf_counter() - started) / 60:.1f} min; 1-minute load average "
        f"{load[0]:.2f} before it started).",
        "",
        "| command | wall time, median (rounds) | MB/s | share of the caps' 48 MB/s | peak connections per host |",
        "|---|---|---|---|---|",
    ]
    labels = {"podrun": "`podrun fetch` (whole command: start, feed poll, Dagster run, sha256, checkpoints)",
              "before": f"`podrun fetch` of {args.before}",
              "aria2c": "`aria2c -j 3`, one process per host",
              "library": "library figure: `HttpClient.download`, 12 threads (no command around it)"}
    for k in kinds:
        lines.append(f"| {labels[k]} | {med[k]:.2f} s ({', '.join(f'{t:.2f}' for t in times[k])}) | "
                     f"{total_mb / med[k]:.1f} | {total_mb / med[k] / cap:.0%} | {max(peaks[k])} |")
    if args.before:
        cpu = harness.medians({"podrun": CPU_S[REPO], "before": CPU_S[before]})
        lines += ["", f"**this tree / {args.before} = {med['podrun'] / med['before']:.3f}x** the wall time (medians "
                  f"{med['podrun']:.2f} s and {med['before']:.2f} s); CPU of the command, median: {cpu['podrun']:.2f} "
                  f"and {cpu['before']:.2f} CPU-s; 1-minute load after the last round {os.getloadavg()[0]:.2f}."]
    violations = sum(p > PER_HOST for p in peaks["podrun"])
    lines += ["", f"**podrun fetch / aria2c throughput = {med['aria2c'] / med['podrun']:.2f}x** (target >= 0.8x); "
              f"cap violations counted by the server in podrun's rounds: {violations}.", "", "Machine:", "",
              *harness.fenced(harness.lscpu()), ""]
    harness.emit("\n".join(lines), args.out, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
