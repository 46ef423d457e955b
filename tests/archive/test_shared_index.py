"""One archive index for every machine of the aws deployment (issue 17, item 2), against moto's server on loopback.

Two processes, each a task with its own data root and Dagster instance, materialize ``transcript_index`` for
different episodes at the same moment; then a third, on a fresh data root, runs ``podrun search`` (words and
``--meaning``) and finds both. Counted at the server: one entry object per episode in the stage bucket.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import sys
from pathlib import Path

from podinsight_dagster.archive.index import MEANING_FLOOR
from podinsight_dagster.archive.shared import LOG_PREFIX

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
    entries = [o["Key"] for o in s3.list_objects_v2(Bucket="pod-insights-stage", Prefix=LOG_PREFIX)["Contents"]]
    assert sorted(k.split("/", 4)[4] for k in entries) == [
        "garden-hour/gh-0001.npz", "tech-talk/tt-0001.npz"]  # one entry per episode, in the log

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

    # Searches are shared too: machine D searches once more; any machine's report counts all three.
    from podinsight_dagster.archive.shared import SEARCH_PREFIX, SharedTranscriptIndex
    from podinsight_dagster.services import build_services

    services = build_services(aws_staged)
    machine_d = SharedTranscriptIndex(services.stage, tmp_path / "machine-d.sqlite")
    machine_d.search("Memory, borrow!")
    logged = s3.list_objects_v2(Bucket="pod-insights-stage", Prefix=SEARCH_PREFIX).get("Contents", [])
    assert len(logged) == 3  # one object per search, whichever machine made it
    expected = [("memory borrow", 2), ("remembering what we borrowed", 1)]
    assert machine_d.top_searches() == expected
    assert machine_d.sync_searches() == 0  # nothing fetched twice
    machine_e = SharedTranscriptIndex(services.stage, tmp_path / "machine-e.sqlite")
    assert machine_e.top_searches() == expected
    for index in (machine_d, machine_e):
        index.close()
    services.close()
    assert all(h["similarity"] >= MEANING_FLOOR for h in meaning)
    assert (fresh / "transcript_index.sqlite").exists()  # the replica, under that machine's data root


def test_a_reader_lists_from_its_last_listing_and_catches_late_entries(aws_staged, tmp_path):
    """The replica's sync: one listing from its last one (not the whole log); an entry that shows up late
    within the skew margin is still found, and one later than that by the next whole listing."""
    from podinsight_dagster.archive.passages import episode_doc
    from podinsight_dagster.archive.shared import SKEW_MARGIN_SEC, SharedTranscriptIndex, _hour, encode_entry
    from podinsight_dagster.services import build_services

    services = build_services(aws_staged)
    listed: list[tuple[str, str, int]] = []  # (prefix, start_after, keys returned) per listing
    real_list = services.stage.list_keys

    def counting_list(prefix: str = "", start_after: str = ""):
        keys = list(real_list(prefix, start_after=start_after))
        listed.append((prefix, start_after, len(keys)))
        return iter(keys)

    services.stage.list_keys = counting_list  # the real store, its LIST calls counted
    writer = SharedTranscriptIndex(services.stage, tmp_path / "writer.sqlite")
    writer.index([episode_doc(services, "tech-talk/tt-0001")])
    reader = SharedTranscriptIndex(services.stage, tmp_path / "reader.sqlite")
    listed.clear()
    assert reader.sync() == {"fetched": 1, "removed": 0} and listed == [(LOG_PREFIX, "", 1)]  # a new machine: all
    for n in range(3):  # old entries: written more than the margin before the reader's last listing
        services.stage.put_bytes(f"{LOG_PREFIX}2000010100/{n:020d}-000000000000/old/ep{n}.gone", b"")

    def late_entry(pk: str, seconds_ago: float) -> None:
        """An entry whose key time lies in the past: a slow upload, or a writer whose clock is behind."""
        doc = episode_doc(services, pk)
        rows = reader.replica.passage_vectors(doc)
        at = time.time_ns() - int(seconds_ago * 1e9)
        services.stage.put_bytes(f"{LOG_PREFIX}{_hour(at)}/{at:020d}-000000000000/{pk}.npz", encode_entry(doc, rows))

    late_entry("tech-talk/tt-0002", SKEW_MARGIN_SEC / 2)
    listed.clear()
    assert reader.sync()["fetched"] == 1
    [(prefix, start_after, returned)] = listed  # one listing, from the last one less the margin
    assert prefix == LOG_PREFIX and start_after > f"{LOG_PREFIX}2000" and returned == 2  # not the old entries
    assert len(reader.search("columnar databases", log=False)) == 1

    late_entry("garden-hour/gh-0001", 3 * 3600)  # later than the margin: missed ...
    assert reader.sync()["fetched"] == 0
    with reader.replica.conn:
        reader.replica.conn.execute("UPDATE shared_sync SET full_ns = full_ns - ?", (3600 * 10**9,))
    assert reader.sync()["fetched"] == 1  # ... until the hourly whole listing
    assert {h.partition_key for h in reader.search("memory borrow", log=False)} == {
        "tech-talk/tt-0001", "garden-hour/gh-0001"}
    assert writer.remove("garden-hour/gh-0001") and reader.sync()["removed"] == 1
    assert reader.stats()["episodes"] == 2
    writer.close()
    reader.close()
    services.close()
