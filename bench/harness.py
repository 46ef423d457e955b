"""What every benchmark in bench/ shares: paths, timing, the machine's description, child processes,
loopback servers, data roots and audio sets, and writing the report.

Not a benchmark. Each ``bench/*_bench.py`` imports it as ``import harness`` (``python bench/x.py`` puts
bench/ on sys.path); importing it puts the repository root on sys.path too, so the loopback CDN
(``tests.support.cdn``, test tooling outside the package) and the package itself can be imported
from a plain ``python bench/x.py``. See bench/README.md for the benchmarks themselves.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
for _p in (REPO, BENCH):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

OUT = BENCH / "out"  # git-ignored: audio sets, data roots, JSON and Markdown results
CONTENT = REPO / "podinsight_dagster" / "demo" / "content"
# The nine bundled demo episodes (espeak-ng speech, texts under CONTENT/texts); not the smaller alternate
# renditions beside them (`<episode>-low.mp3`, the demo's podcast:alternateEnclosure), which have no text of
# their own and would repeat an episode in the audio sets.
DEMO = sorted(p for p in (CONTENT / "audio").glob("*/*.mp3") if not p.stem.endswith("-low"))
MB = 1_000_000


# ---------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------
def timed(fn) -> tuple[float, object]:
    """(wall seconds, result) of ``fn()``."""
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def times_ms(fn, items) -> list[float]:
    """Milliseconds of ``fn(item)`` for each item, in order."""
    ms = []
    for item in items:
        t = time.perf_counter()
        fn(item)
        ms.append((time.perf_counter() - t) * 1000)
    return ms


def latency_stats(ms: list[float]) -> dict:
    """Median, 90th percentile (nearest rank below) and maximum of latencies in ms, rounded to 0.01."""
    ms = sorted(ms)
    return {"median_ms": round(statistics.median(ms), 2), "p90_ms": round(ms[int(0.9 * (len(ms) - 1))], 2),
            "max_ms": round(ms[-1], 2)}


def medians(times: dict[str, list[float]]) -> dict[str, float]:
    """The median of each variant's rounds."""
    return {k: statistics.median(v) for k, v in times.items()}


def pool_map(fn, items, threads: int) -> list:
    """``fn`` over ``items`` from a pool of ``threads`` threads, results in order."""
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(fn, items))


def timed_pool(fn, items, threads: int) -> tuple[float, list]:
    """(wall seconds, results) of ``fn`` over ``items`` from a pool of ``threads`` threads."""
    return timed(lambda: pool_map(fn, items, threads))


def run_timed(args: list[str], **kwargs) -> tuple[subprocess.CompletedProcess, float]:
    """``subprocess.run(args, capture_output=True, text=True, **kwargs)`` and its wall seconds."""
    t0 = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, **kwargs)
    return proc, time.perf_counter() - t0


# ---------------------------------------------------------------------------
# The machine: what docs/BENCHMARKS.md says a figure was measured on
# ---------------------------------------------------------------------------
def load1() -> float:
    """The 1-minute load average (above 0: other work competes for the cores)."""
    return os.getloadavg()[0]


def load_text() -> str:
    """The three load averages, "1.2 / 0.9 / 0.7"."""
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def lscpu(head: int | None = None, pattern: str | None = None) -> str:
    """``lscpu``'s output: its first ``head`` lines, or the lines matching ``pattern`` (a regex)."""
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.rstrip().splitlines()
    except OSError:
        return platform.platform()
    if pattern is not None:
        lines = [ln for ln in lines if re.search(pattern, ln)]
    return "\n".join(lines[:head] if head else lines).rstrip()


def cpu_model(default: str = "") -> str:
    """The CPU's model name (lscpu's "Model name", else /proc/cpuinfo's "model name")."""
    for line in lscpu(pattern="^Model name").splitlines():
        return line.split(":", 1)[1].strip()
    try:
        return next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                     if ln.startswith("model name")), default)
    except OSError:
        return default


def free_g() -> list[str]:
    """``free -g``'s lines (header, Mem:, Swap:)."""
    return subprocess.run(["free", "-g"], capture_output=True, text=True).stdout.rstrip().splitlines()


def versions(*modules: str) -> str:
    """"Python 3.x.y, faster-whisper 1.1.0, ...": the interpreter and each module's ``__version__``."""
    parts = [f"Python {platform.python_version()}"]
    for name in modules:
        parts.append(f"{name.replace('_', '-')} {importlib.import_module(name).__version__}")
    return ", ".join(parts)


# ---------------------------------------------------------------------------
# Child processes: CPU of the machine, a quiet start, wall time and peak RSS of a child
# ---------------------------------------------------------------------------
def cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def wait_quiet(threshold: float = 0.15, window: float = 2.0, max_wait: float = 240.0) -> float:
    """Wait (up to max_wait) until the machine's CPU is under ``threshold`` busy over ``window`` s."""
    deadline = time.monotonic() + max_wait
    while True:
        b0, t0 = cpu_jiffies()
        time.sleep(window)
        b1, t1 = cpu_jiffies()
        busy = (b1 - b0) / max(1, t1 - t0)
        if busy < threshold or time.monotonic() > deadline:
            return busy


LAST_OTHERS: list[float] = []  # per run_child call: the share of the machine's CPU other processes used
LAST_CPU: list[float] = []     # per run_child call: the child's CPU seconds (user + system)


def run_child(args: list[str], env: dict | None = None, cwd: Path = REPO) -> tuple[str, float, int]:
    """(stdout, wall seconds, peak RSS in KiB) of a child process; raises with its stderr if it fails.

    Also appends to LAST_OTHERS the share of the machine's CPU that other processes used
    while the child ran (busy CPU of the machine minus the child's own CPU time), and to LAST_CPU
    the child's own CPU seconds (user + system: its work, less bent by a shared machine than its wall time).
    """
    hz = os.sysconf("SC_CLK_TCK")
    busy0, total0 = cpu_jiffies()
    started = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=cwd, text=True)
    # Read the pipes in threads so a chatty child never blocks, then reap it with wait4 for its rusage.
    out, err = [], []
    readers = [threading.Thread(target=lambda: out.append(proc.stdout.read())),
               threading.Thread(target=lambda: err.append(proc.stderr.read()))]
    for r in readers:
        r.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    busy1, total1 = cpu_jiffies()
    others = (busy1 - busy0) / hz - (usage.ru_utime + usage.ru_stime)
    LAST_OTHERS.append(max(0.0, others) / max(1e-9, (total1 - total0) / hz))
    LAST_CPU.append(usage.ru_utime + usage.ru_stime)
    for r in readers:
        r.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{args[:4]} failed ({proc.returncode}):\n{''.join(err)[-4000:]}")
    return "".join(out), wall, usage.ru_maxrss


def podrun_bin() -> str:
    """The ``podrun`` command of the virtualenv this script runs in."""
    return str(Path(sys.executable).parent / "podrun")


def settings_env(**settings) -> dict[str, str]:
    """PODINSIGHT_* variables from settings given by name: ``model="tiny.en"`` -> PODINSIGHT_MODEL."""
    return {f"PODINSIGHT_{k.upper()}": str(v) for k, v in settings.items()}


def podrun_env(home: Path, extra: dict | None = None, **settings) -> dict[str, str]:
    """The environment of a ``podrun`` child on data root ``home``: this process's, the settings, ``extra``."""
    return {**os.environ, **settings_env(home=home, **settings), **(extra or {})}


# ---------------------------------------------------------------------------
# Loopback servers
# ---------------------------------------------------------------------------
class ServerProcess:
    """A loopback server (the test CDN, mostly) in its own spawned process, driven over a Pipe, so that
    serving never competes with the measured client for this process's GIL.

    ``target(conn, *args)`` runs in the child; with ``hello`` the first thing it sends (its URLs, say) is
    read at start into ``self.hello``. ``call`` sends one message and returns the answer.
    """

    def __init__(self, target, *args, hello: bool = False) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=target, args=(child, *args), daemon=True)
        self.proc.start()
        self.hello = self.conn.recv() if hello else None

    def call(self, message):
        self.conn.send(message)
        return self.conn.recv()

    def close(self, message="quit") -> None:
        """Send ``message`` as it is (a subclass's ``call`` may wrap what it sends), read the answer, join."""
        try:
            self.conn.send(message)
            self.conn.recv()
        finally:
            self.proc.join(10)


def start_moto() -> tuple[subprocess.Popen, str]:
    """moto's server on a free loopback port, once it answers: (process, URL). Terminate the process after."""
    import socket

    import requests

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            requests.get(url + "/moto-api/", timeout=1)
            return proc, url
        except requests.ConnectionError:
            time.sleep(0.1)
    raise RuntimeError("moto did not start")


# ---------------------------------------------------------------------------
# Data roots and audio sets
# ---------------------------------------------------------------------------
def write_catalog(feeds_dir: Path, feeds: list[dict], host_limits: dict | None = None) -> Path:
    """``feeds_dir/tier1_feeds.yaml`` listing ``feeds`` ({slug, url, tier}) and optional host limits."""
    import yaml

    feeds_dir.mkdir(parents=True, exist_ok=True)
    catalog: dict = {"feeds": feeds}
    if host_limits is not None:
        catalog["host_limits"] = host_limits
    path = feeds_dir / "tier1_feeds.yaml"
    path.write_text(yaml.safe_dump(catalog, sort_keys=False))
    return path


def data_root(home: Path, feeds: list[dict], host_limits: dict | None = None) -> Path:
    """A fresh, empty data root at ``home`` whose feed catalog (home/feeds) lists ``feeds``."""
    shutil.rmtree(home, ignore_errors=True)
    write_catalog(home / "feeds", feeds, host_limits)
    return home


def duration(path: Path) -> float:
    """Seconds of audio in a file (ffprobe)."""
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0",
                          str(path)], capture_output=True, text=True, check=True).stdout
    return float(out.strip())


def build_long(folder: Path, episodes: int = 4, per_episode: int = 7) -> list[Path]:
    """``episodes`` files of ``per_episode`` demo episodes each, concatenated (16 kHz mono MP3, ffmpeg)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(episodes):
        dest = folder / f"long-{k + 1}.mp3"
        if not dest.exists():
            parts = [DEMO[(k * per_episode + j) % len(DEMO)] for j in range(per_episode)]
            listing = folder / f"long-{k + 1}.txt"
            listing.write_text("".join(f"file '{p}'\n" for p in parts))
            subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(listing),
                            "-ac", "1", "-ar", "16000", "-c:a", "libmp3lame", "-b:a", "32k", "-map_metadata", "-1",
                            str(dest)], check=True)
            listing.unlink()
        paths.append(dest)
    return paths


def build_short(folder: Path, count: int = 40, seed: int = 7, lo: float = 10.0, hi: float = 40.0,
                prefix: str = "short", digits: int = 2) -> list[Path]:
    """``count`` clips of ``lo``..``hi`` s cut from the demo episodes at seeded random offsets (16 kHz mono MP3)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    lengths = {p: duration(p) for p in DEMO}
    paths = []
    for i in range(count):
        src = DEMO[i % len(DEMO)]
        length = rng.uniform(lo, hi)
        start = rng.uniform(0, max(0.0, lengths[src] - length))
        dest = folder / f"{prefix}-{i + 1:0{digits}d}.mp3"
        if not dest.exists():
            subprocess.run(["ffmpeg", "-v", "error", "-y", "-ss", f"{start:.2f}", "-t", f"{length:.2f}", "-i",
                            str(src), "-ac", "1", "-ar", "16000", "-c:a", "libmp3lame", "-b:a", "32k",
                            "-map_metadata", "-1", str(dest)], check=True)
        paths.append(dest)
    return paths


def set_feed_xml(slug: str, paths: list[Path]) -> str:
    """RSS 2.0 of one show whose episodes are ``paths``, enclosures at ``{base_url}/audio/<slug>/<name>``."""
    items = "".join(
        f"<item><title>{p.stem}</title><guid isPermaLink=\"false\">{p.stem}</guid>"
        f"<pubDate>Mon, 05 Jan 2026 09:{i % 60:02d}:00 +0000</pubDate>"
        f"<enclosure url=\"{{base_url}}/audio/{slug}/{p.name}\" type=\"audio/mpeg\" length=\"{p.stat().st_size}\"/>"
        "</item>" for i, p in enumerate(paths))
    return (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><rss version=\"2.0\"><channel><title>{slug}</title>"
            f"<link>https://example.com/{slug}</link><description>bench</description>{items}</channel></rss>")


def fetched_root(slug: str, paths: list[Path], root: Path, env_for) -> Path:
    """A data root (under ``root``, reused once made) whose raw bucket holds ``paths``, downloaded by
    ``podrun fetch`` from a loopback CDN; ``env_for(home)`` gives the command's environment."""
    from tests.support.cdn import PodcastCDN

    home = root / f"home-{slug}"
    if (home / ".fetched").exists():
        return home
    with PodcastCDN(name="bench-cdn") as cdn:
        cdn.add_file(f"/feeds/{slug}.xml", set_feed_xml(slug, paths).encode(), content_type="application/rss+xml")
        for p in paths:
            cdn.add_file(f"/audio/{slug}/{p.name}", p)
        data_root(home, [{"slug": slug, "url": f"{cdn.base_url}/feeds/{slug}.xml", "tier": 1}])
        run_child([podrun_bin(), "fetch"], env=env_for(home))
    (home / ".fetched").write_text("ok\n")
    return home


# ---------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------
def emit(text: str, out: Path | None, end: str = "\n") -> None:
    """Print the report and, when ``out`` is given, write it there too (``text + end``)."""
    print(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + end)


def fenced(text: str) -> list[str]:
    """Markdown lines of a fenced block holding ``text`` (the machine's description)."""
    return ["```", text, "```"]
