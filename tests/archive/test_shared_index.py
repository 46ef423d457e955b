"""One archive index for every machine of the aws deployment (issue 17, item 2), against moto's server on loopback.

Two processes, each a task with its own data root and Dagster instance, materialize ``transcript_index`` for
different episodes at the same moment; then a third, on a fresh data root, runs ``podrun search`` (words and
``--meaning``) and finds both. Counted at the server: one entry object per episode in the stage bucket.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from podinsight_dagster.archive.index import MEANING_FLOOR
from podinsight_dagster.archive.shared import ENTRIES_PREFIX

from .test_archive_aws import aws_staged  # noqa: F401  (the fixture: the stack, three episodes staged in S3)

ROOT = Path(__file__).resolve().parents[2]

# A task: its own Dagster instance; once loaded it says so and waits for the other, so both index at once.
TASK = """
import sys, time
from pathlib import Path
from dagster import DagsterInstance, materialize
from podinsight_dagster.assets import transcript_index
from podinsight_dagster.definitions import resources_for
from podinsight_dagster.partitions import EPISODES

barrier, key = Path(sys.argv[1]), sys.argv[2]
with DagsterInstance.ephemeral() as instance:
    instance.add_dynamic_partitions(EPISODES, [key])
    (barrier / key.replace("/", "_")).touch()
    deadline = time.time() + 120
    while len(list(barrier.iterdir())) < 2 and time.time() < deadline:
        time.sleep(0.05)
    ok = materialize([transcript_index], instance=instance, resources=resources_for("aws"), partition_key=key).success
sys.exit(0 if ok else 1)
"""


def _env(data_root: Path) -> dict:
    return {**os.environ, "PODINSIGHT_HOME": str(data_root), "DAGSTER_HOME": str(data_root / "dagster"),
            "PODINSIGHT_FEEDS_DIR": str(data_root / "feeds")}


def test_two_tasks_index_at_once_and_a_third_machine_finds_both(aws_staged, moto_server, tmp_path):
    barrier = tmp_path / "ready"
    barrier.mkdir()
    tasks = [subprocess.Popen([sys.executable, "-c", TASK, str(barrier), key], cwd=ROOT, env=_env(tmp_path / name),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for name, key in (("task-a", "tech-talk/tt-0001"), ("task-b", "garden-hour/gh-0001"))]
    for task in tasks:
        out, _ = task.communicate(timeout=300)
        assert task.returncode == 0, out[-3000:]
    assert len(list(barrier.iterdir())) == 2  # both were loaded before either indexed: they indexed at once

    s3 = moto_server.client("s3")
    entries = [o["Key"] for o in s3.list_objects_v2(Bucket="pod-insights-stage", Prefix=ENTRIES_PREFIX)["Contents"]]
    assert sorted(k.rsplit("/", 1)[0] for k in entries) == [
        "_index/entries/garden-hour/gh-0001", "_index/entries/tech-talk/tt-0001"]  # one entry per episode

    fresh = tmp_path / "machine-c"  # another machine: nothing on its disk yet

    def search(*args: str) -> list[dict]:
        run = subprocess.run([sys.executable, "-m", "podinsight_dagster.cli", "search", *args, "--json"], cwd=ROOT,
                             env=_env(fresh), capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stdout + run.stderr
        return json.loads(run.stdout)

    words = search("memory borrow")
    assert sorted(h["partition_key"] for h in words) == ["garden-hour/gh-0001", "tech-talk/tt-0001"]
    assert {h["audio"].split("#")[0] for h in words} == {
        "s3://pod-insights-raw/tech-talk/tt-0001/audio/episode.mp3",
        "s3://pod-insights-raw/garden-hour/gh-0001/audio/episode.mp3"}
    meaning = search("--meaning", "remembering what we borrowed")
    assert sorted(h["partition_key"] for h in meaning) == ["garden-hour/gh-0001", "tech-talk/tt-0001"]
    assert all(h["similarity"] >= MEANING_FLOOR for h in meaning)
    assert (fresh / "transcript_index.sqlite").exists()  # the replica, under that machine's data root
