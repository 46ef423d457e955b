"""Switching a SQLite file to WAL mode when several processes may open it at the same moment.

Changing the journal mode takes an exclusive lock, and SQLite answers "database is locked" at once,
without waiting out the busy timeout, when another connection is opening (or creating) the same file.
So the switch is retried for as long as the connection's busy timeout would have waited. Once the
file is in WAL mode the switch is a no-op and never waits.
"""

from __future__ import annotations

import sqlite3
import time

POLL_S = 0.05


def enable_wal(conn: sqlite3.Connection, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(POLL_S)
