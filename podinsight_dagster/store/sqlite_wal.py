"""Opening a SQLite file that several processes may open (and create, or upgrade) at the same moment:
switching it to WAL mode, and adding the columns a newer version needs.

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


def add_missing_columns(conn: sqlite3.Connection, table: str, columns: list[str]) -> None:
    """``ALTER TABLE table ADD COLUMN c`` for each column definition whose name the table lacks.

    Read and altered under the write lock (BEGIN IMMEDIATE): two processes opening a file made by an older
    version (or a fresh one) at once would both see a column missing and the second ALTER would fail with
    "duplicate column name". ``conn`` must have no transaction open.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        for column in columns:
            if column.split()[0] not in have:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
