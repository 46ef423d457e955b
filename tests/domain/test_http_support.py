"""Shared helpers for the test_http_* files (no tests here).

Everything runs against the real loopback PodcastCDN (tests/support/cdn.py),
with tiny backoffs and a recording ``sleep`` so retries cost no wall time.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

from tests.support.cdn import PodcastCDN
from podinsight_dagster.fetch.http import HttpClient, HttpConfig
from podinsight_dagster.fetch.limits import LocalHostLimiter
from podinsight_dagster.fetch.netpolicy import NetworkPolicy

# An MP3-looking body (ID3 header) whose every offset is distinguishable.
AUDIO = b"ID3\x04\x00\x00\x00\x00\x00\x00" + random.Random(7).randbytes(300_000)
LOOPBACK = NetworkPolicy.parse("127.0.0.0/8")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class Sleeps(list):
    """A ``sleep`` for HttpClient that records the delays it was asked for and returns at once."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def make_client(policy: NetworkPolicy = LOOPBACK, lock_dir: Path | None = None, sleep=None,
                **config) -> tuple[HttpClient, Sleeps]:
    defaults = dict(backoff_base=0.01, backoff_max=0.05, connect_timeout=2.0, read_timeout=3.0,
                    low_speed_window_s=2.0)
    sleeps = Sleeps()
    cfg = HttpConfig(**{**defaults, **config})
    client = HttpClient(cfg, policy, LocalHostLimiter(cfg.host_limits, cfg.default_host_limit, lock_dir),
                        sleep=sleep if sleep is not None else sleeps)
    return client, sleeps


def serve_audio():
    """Body of the ``cdn`` fixture of each test file: a CDN serving AUDIO at /ep.mp3."""
    with PodcastCDN(name="http-test") as server:
        server.add_file("/ep.mp3", AUDIO)
        yield server
