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
