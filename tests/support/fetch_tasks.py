"""Several `podrun fetch` tasks on one stack: a slow catalog on the test CDN, the stack's names, the processes.

Shared by tests/test_download_claims.py and bench/fetch_tasks_bench.py. Each task is a real
``podrun fetch`` process (its own process group) with its own data root and Dagster instance, as
ECS tasks have; on the aws deployment they share one moto server (buckets, the status table and
its host-limit slots), locally one data root (SQLite checkpoints, the host-lock folder).
Never imports dagster: the bench runs it in a plain interpreter.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.support.cdn import Fault, PodcastCDN

ROOT = Path(__file__).resolve().parents[2]
PODRUN = Path(sys.executable).parent / "podrun"
AUDIO = ROOT / "podinsight_dagster" / "demo" / "content" / "audio" / "tech-talk" / "ep1.mp3"


def slow_catalog(cdn: PodcastCDN, feeds_dir: Path, slug: str, episodes: int, latency_s: float,
                 host_limit: int) -> list[str]:
    """A feed of ``episodes`` small MP3s, each answered ``latency_s`` late, under one host limit; the audio paths."""
    body = AUDIO.read_bytes()
    paths, items = [], []
    for i in range(episodes):
        path = f"/audio/{slug}/ep{i:02d}.mp3"
        cdn.add_file(path, body, content_type="audio/mpeg")
        cdn.set_fault(path, Fault(latency_s=latency_s))
        paths.append(path)
        items.append(f'<item><title>Episode {i}</title><guid isPermaLink="false">ep{i:02d}</guid>'
                     f'<enclosure url="{cdn.url(path)}" type="audio/mpeg" length="{len(body)}"/></item>')
    cdn.add_file(f"/feeds/{slug}.xml", ('<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel>'
                                        f"<title>{slug}</title>{''.join(items)}</channel></rss>").encode(),
                 content_type="application/rss+xml")
    feeds_dir.mkdir(parents=True, exist_ok=True)
    (feeds_dir / "tier1_feeds.yaml").write_text(yaml.safe_dump({
        "feeds": [{"slug": slug, "url": cdn.url(f"/feeds/{slug}.xml"), "tier": 1}],
        "host_limits": {cdn.host: host_limit}}))
    return paths


def audio_gets(cdn: PodcastCDN, paths: list[str]) -> dict[str, int]:
    """GET requests per audio path, as the CDN recorded them."""
    wanted = set(paths)
    counts = dict.fromkeys(paths, 0)
    for r in cdn.requests:
        if r.method == "GET" and r.path in wanted:
            counts[r.path] += 1
    return counts


@dataclass
class Stack:
    """One aws deployment's names on a moto server: the buckets (raw versioned, so puts can be counted) and table."""

    endpoint: str
    suffix: str
    names: dict = field(default_factory=dict)

    def create(self, client) -> "Stack":
        from podinsight_dagster.store.dynamo import create_table

        s3 = client("s3")
        self.names = {"PODINSIGHT_RAW_BUCKET": f"raw-{self.suffix}", "PODINSIGHT_STAGE_BUCKET": f"stage-{self.suffix}",
                      "PODINSIGHT_MANIFEST_BUCKET": f"manifests-{self.suffix}",
                      "PODINSIGHT_ARCHIVE_BUCKET": f"all-in-{self.suffix}",
                      "PODINSIGHT_STATUS_TABLE": f"status-{self.suffix}"}
        for var, bucket in self.names.items():
            if var.endswith("_BUCKET"):
                s3.create_bucket(Bucket=bucket)
        # Every put of the raw bucket is a version: moto counts them for us.
        s3.put_bucket_versioning(Bucket=self.names["PODINSIGHT_RAW_BUCKET"],
                                 VersioningConfiguration={"Status": "Enabled"})
        create_table(client("dynamodb"), self.names["PODINSIGHT_STATUS_TABLE"])
        return self

    def env(self) -> dict[str, str]:
        return {"PODINSIGHT_DEPLOYMENT": "aws", "AWS_ENDPOINT_URL": self.endpoint, "AWS_REGION": "us-east-1",
                "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", **self.names}

    def puts(self, client, suffix: str = "/audio/episode.mp3") -> dict[str, int]:
        """Versions (= puts) per raw key ending with ``suffix``, as moto holds them."""
        counts: dict[str, int] = {}
        pages = client("s3").get_paginator("list_object_versions").paginate(Bucket=self.names["PODINSIGHT_RAW_BUCKET"])
        for page in pages:
            for v in page.get("Versions", []):
                if v["Key"].endswith(suffix):
                    counts[v["Key"]] = counts.get(v["Key"], 0) + 1
        return counts


def task_env(home: Path, feeds_dir: Path, extra: dict[str, str]) -> dict[str, str]:
    """A task's environment: its own data root and Dagster instance, the shared catalog, loopback allowed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PODINSIGHT_", "AWS_", "DAGSTER_"))}
    env.update({"PODINSIGHT_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"),
                "PODINSIGHT_FEEDS_DIR": str(feeds_dir), "PODINSIGHT_ALLOW_PRIVATE_NETWORKS": "127.0.0.0/8",
                "PYTHONUNBUFFERED": "1", **extra})
    (home / "dagster").mkdir(parents=True, exist_ok=True)
    return env


def start_fetch(env: dict[str, str], *args: str) -> subprocess.Popen:
    """``podrun fetch`` in a process group of its own (so a kill takes the whole task)."""
    return subprocess.Popen([str(PODRUN), "fetch", *args], cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)


def finish(procs: list[subprocess.Popen], timeout_s: float = 240) -> list[tuple[int, str, str]]:
    out = []
    deadline = time.monotonic() + timeout_s
    for p in procs:
        stdout, stderr = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
        out.append((p.returncode, stdout, stderr))
    return out


def kill_task(proc: subprocess.Popen) -> None:
    """SIGKILL the task's whole process group (as a Spot reclaim or an OOM kill ends a task)."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
