"""Switching to WAL while another process holds the file: waited out, not "database is locked" at once."""

import sqlite3
import threading
import time

from podinsight_dagster.store.sqlite_wal import enable_wal


def test_wal_switch_waits_for_another_connections_lock(tmp_path):
    path = tmp_path / "index.sqlite"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")  # as a process creating the same file's schema holds it
    release = threading.Timer(0.6, lambda: holder.execute("COMMIT"))
    release.start()
    opener = sqlite3.connect(path, timeout=0.05, isolation_level=None)
    t0 = time.monotonic()
    enable_wal(opener, timeout_s=30)
    assert time.monotonic() - t0 >= 0.5  # it waited for the lock rather than failing
    assert opener.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    release.join()
    holder.close()
    opener.close()


def test_wal_switch_gives_up_after_its_timeout(tmp_path):
    path = tmp_path / "index.sqlite"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    opener = sqlite3.connect(path, timeout=0.05, isolation_level=None)
    try:
        enable_wal(opener, timeout_s=0.3)
    except sqlite3.OperationalError as exc:
        assert "locked" in str(exc)
    else:
        raise AssertionError("the switch succeeded while the file was locked")
    finally:
        holder.execute("COMMIT")
        holder.close()
        opener.close()


def test_a_column_added_by_another_process_meanwhile_is_not_added_twice(tmp_path):
    """Two processes upgrading one file: the second waits for the first's write lock and then sees the column
    (reading the table's columns before that lock, it would ALTER again: "duplicate column name")."""
    from podinsight_dagster.store.sqlite_wal import add_missing_columns

    path = tmp_path / "old.sqlite"
    first = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    enable_wal(first)
    first.execute("CREATE TABLE spend (ts REAL)")
    first.execute("BEGIN IMMEDIATE")  # the first process is adding the column right now
    first.execute("ALTER TABLE spend ADD COLUMN audio_sec REAL")
    release = threading.Timer(0.5, lambda: first.execute("COMMIT"))
    release.start()
    second = sqlite3.connect(path, timeout=30, isolation_level=None)
    add_missing_columns(second, "spend", ["audio_sec REAL", "device TEXT"])
    assert [r[1] for r in second.execute("PRAGMA table_info(spend)")] == ["ts", "audio_sec", "device"]
    release.join()
    first.close()
    second.close()


def _open_stores(path: str, barrier) -> None:
    from podinsight_dagster.costs.budget import SqliteSpendLedger
    from podinsight_dagster.store.checkpoints import SqliteCheckpointStore

    barrier.wait()
    SqliteCheckpointStore(path + ".checkpoints").close()
    SqliteSpendLedger(path + ".ledger")


def test_processes_opening_a_new_data_roots_stores_at_once_all_succeed(tmp_path):
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    for attempt in range(3):
        barrier = ctx.Barrier(4)
        procs = [ctx.Process(target=_open_stores, args=(str(tmp_path / f"root{attempt}"), barrier)) for _ in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0, 0, 0, 0], attempt
