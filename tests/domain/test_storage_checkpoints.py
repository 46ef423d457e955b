import os
import threading

import pytest

from podinsight_dagster.store.checkpoints import (DISCOVERED, DOWNLOADED, FAILED, TRANSCRIBED, EpisodeRecord,
                                                   FeedRecord, SqliteCheckpointStore)
from podinsight_dagster.store.objects import LocalObjectStore, ObjectNotFound, atomic_writer


def test_atomic_writer_leaves_old_file_on_failure(tmp_path):
    dest = tmp_path / "a" / "f.json"
    with atomic_writer(dest) as fh:
        fh.write(b"old")
    with pytest.raises(RuntimeError):
        with atomic_writer(dest) as fh:
            fh.write(b"half of the new")
            raise RuntimeError("crash mid-write")
    assert dest.read_bytes() == b"old"
    assert os.listdir(dest.parent) == ["f.json"]  # no temporary file left behind


def test_local_store_round_trip_and_listing(tmp_path):
    store = LocalObjectStore(tmp_path / "pod-insights-raw")
    store.put_json("feed/g1/meta/meta.json", {"transcript_key": None})
    store.put_bytes("feed/g1/audio/episode.mp3", b"ID3...")
    (store.staging_dir() / "partial").write_bytes(b"x")
    assert store.get_json("feed/g1/meta/meta.json") == {"transcript_key": None}
    assert sorted(store.list_keys("feed/")) == ["feed/g1/audio/episode.mp3", "feed/g1/meta/meta.json"]
    assert store.size("feed/g1/audio/episode.mp3") == 6
    with pytest.raises(ObjectNotFound):
        store.get_bytes("feed/none")
    with pytest.raises(ValueError):
        store.put_bytes("../escape", b"x")


def _rec(pk):
    slug, g = pk.split("/")
    return EpisodeRecord(partition_key=pk, feed_slug=slug, guid_key=g, title="t", enclosure_url="https://x/a.mp3")


def test_checkpoint_states_and_idempotent_registration(tmp_path):
    store = SqliteCheckpointStore(tmp_path / "c.sqlite")
    assert store.register_episodes([_rec("f/a"), _rec("f/b")]) == ["f/a", "f/b"]
    assert store.register_episodes([_rec("f/a"), _rec("f/c")]) == ["f/c"]  # a repeated tick adds only new ones
    store.mark_attempt("f/a")
    store.mark_downloaded("f/a", bytes=10, sha256="ab")
    store.mark_failed("f/b", "download", "HTTP 404")
    store.mark_transcribed("f/c", cost_usd=0.5)
    assert store.counts() == {DISCOVERED: 0, DOWNLOADED: 1, TRANSCRIBED: 1, FAILED: 1}
    a, b = store.get("f/a"), store.get("f/b")
    assert (a.state, a.attempts, a.bytes, a.sha256) == (DOWNLOADED, 1, 10, "ab")
    assert (b.state, b.failed_stage, b.last_error) == (FAILED, "download", "HTTP 404")
    assert store.get("f/c").cost_usd == 0.5
    store.register_episodes([_rec("f/a")])
    assert store.get("f/a").state == DOWNLOADED  # re-discovery never resets progress
    store.upsert_feed(FeedRecord(slug="f", url="https://x/feed", etag='"e1"'))
    assert store.get_feed("f").etag == '"e1"'
    with store._conn() as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_checkpoint_store_is_safe_across_threads(tmp_path):
    store = SqliteCheckpointStore(tmp_path / "c.sqlite")
    store.register_episodes([_rec(f"f/e{i}") for i in range(50)])

    def work(i):
        store.mark_attempt(f"f/e{i}")
        store.mark_downloaded(f"f/e{i}", bytes=i, sha256="x")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(50)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert store.counts()[DOWNLOADED] == 50


def test_older_checkpoint_database_gains_new_columns(tmp_path):
    import sqlite3

    db = tmp_path / "old.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE episodes (partition_key TEXT PRIMARY KEY, feed_slug TEXT NOT NULL, "
                     "guid_key TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, "
                     "discovered_at REAL NOT NULL, updated_at REAL NOT NULL)")
        conn.execute("INSERT INTO episodes VALUES ('f/a', 'f', 'a', 'downloaded', 1, 0, 0)")
    store = SqliteCheckpointStore(db)
    rec = store.get("f/a")
    assert rec.state == DOWNLOADED and rec.quality_issue is None and rec.transcripts_json is None
    store.update("f/a", quality_issue="x")
    assert store.get("f/a").quality_issue == "x"
