"""The checkpoint store: one row per episode (with one status per stage), one row per feed.

Each episode has a summary ``state`` that only moves forward (discovered -> downloaded ->
transcribed; ``failed`` only for an episode whose download failed before it was ever
downloaded), and one ``StageStatus`` per stage (download, transcribe, segments, kpis):
status, attempts, last error, whether it is retryable, timestamps, and for a stage being
worked on a lease (owner and expiry: ``claim``). A failure in one stage never erases what
an earlier stage achieved: a failed transcription leaves the episode ``downloaded`` with
its transcribe stage ``failed``.

Locally this is SQLite in WAL mode (readers never block the writer, and several
runs on one machine can share it); on AWS the same interface is backed by
DynamoDB (run-book: ``podinsights-status``). Checks and sensors that summarise
many episodes read this store instead of loading every partition's output.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Iterable, Iterator

# The store's vocabulary (store/records.py), also imported from here by the steps, checks and commands.
from podinsight_dagster.store.records import (DISCOVERED, DONE, DOWNLOAD, DOWNLOADED, FAILED, KPIS,  # noqa: F401
                                              PENDING, REQUIRES, RUNNING, SEGMENTS, STAGE_STATUSES, STAGES, STATES,
                                              TRANSCRIBE, TRANSCRIBED, CheckpointStore, EpisodeRecord, FeedRecord,
                                              StageStatus, _apply, carried_fields, claim_refusal, now)
from podinsight_dagster.store.sqlite_wal import add_missing_columns, enable_wal

_EPISODE_COLUMNS = [f for f in EpisodeRecord.__dataclass_fields__]
_FEED_COLUMNS = [f for f in FeedRecord.__dataclass_fields__]

SCHEMA = """
CREATE TABLE IF NOT EXISTS episodes (
    partition_key TEXT PRIMARY KEY,
    feed_slug TEXT NOT NULL,
    guid_key TEXT NOT NULL,
    guid TEXT,
    title TEXT,
    enclosure_url TEXT,
    enclosure_type TEXT,
    enclosure_length INTEGER,
    published TEXT,
    duration_hint_sec REAL,
    transcripts_json TEXT,
    persons_json TEXT,
    chapters_url TEXT,
    description TEXT,
    state TEXT NOT NULL CHECK (state IN ('discovered','downloaded','transcribed','failed')),
    failed_stage TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER,
    sha256 TEXT,
    last_error TEXT,
    quality_issue TEXT,
    speaker_issue TEXT,
    discovered_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    downloaded_at REAL,
    transcribed_at REAL,
    cost_usd REAL
);
CREATE INDEX IF NOT EXISTS episodes_state ON episodes(state);
CREATE INDEX IF NOT EXISTS episodes_feed ON episodes(feed_slug);
CREATE TABLE IF NOT EXISTS stages (
    partition_key TEXT NOT NULL,
    stage TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    retryable INTEGER,
    owner TEXT,
    lease_until REAL,
    code_version TEXT,
    started_at REAL,
    finished_at REAL,
    updated_at REAL,
    PRIMARY KEY (partition_key, stage)
);
CREATE INDEX IF NOT EXISTS stages_stage ON stages(stage, status);
CREATE TABLE IF NOT EXISTS feeds (
    slug TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    effective_url TEXT,
    tier INTEGER,
    etag TEXT,
    last_modified TEXT,
    last_status TEXT,
    last_error TEXT,
    episodes INTEGER NOT NULL DEFAULT 0,
    checked_at REAL
);
"""


class SqliteCheckpointStore:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        # Every live thread's connection, so close() reaches them all; a dead thread's is closed when the
        # next one is opened (download pools come and go per run: their files must not pile up).
        self._all: dict[threading.Thread, sqlite3.Connection] = {}
        self._all_lock = threading.Lock()
        with self._conn() as conn:
            enable_wal(conn)
            conn.executescript(SCHEMA)
            self._add_missing_columns(conn)

    @staticmethod
    def _add_missing_columns(conn: sqlite3.Connection) -> None:
        # A data root made by an older version lacks newer (nullable) columns: add them in place.
        for table, columns in (("episodes", _EPISODE_COLUMNS), ("feeds", _FEED_COLUMNS)):
            add_missing_columns(conn, table, list(columns))

    @contextlib.contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        # One connection per thread: sqlite3 connections must not cross threads.
        conn = getattr(self._local, "conn", None)
        if conn is None:
            # check_same_thread=False only so close() may close it from another thread; each thread uses its own.
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
            with self._all_lock:
                for thread in [t for t in self._all if not t.is_alive()]:
                    self._all.pop(thread).close()
                self._all[threading.current_thread()] = conn
        yield conn

    def close(self) -> None:
        """Close every thread's connection (sqlite3 allows closing from another thread)."""
        with self._all_lock:
            conns, self._all = list(self._all.values()), {}
        for conn in conns:
            conn.close()
        self._local = threading.local()

    # ---- episodes -------------------------------------------------------
    def register_episodes(self, records: Iterable[EpisodeRecord], *, from_feed: bool = False) -> list[str]:
        """Insert episodes not seen before; return the partition keys that were new.

        Known episodes keep their state; the descriptive fields a record carries (title, enclosure,
        show notes, persons, ...) are refreshed, since publishers fix typos and move files between
        CDNs. A field the record does not carry (None: a manifest row has no show notes) never
        erases what is known, except the alternate download (``FEED_ONLY``) on a feed's own poll
        (``from_feed``): only the feed says it, so a feed that dropped it drops it here too.
        """
        new: list[str] = []
        with self._conn() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for rec in records:
                    cur = conn.execute(
                        f"INSERT OR IGNORE INTO episodes ({','.join(_EPISODE_COLUMNS)}) "
                        f"VALUES ({','.join('?' * len(_EPISODE_COLUMNS))})",
                        [getattr(rec, c) for c in _EPISODE_COLUMNS],
                    )
                    if cur.rowcount:
                        new.append(rec.partition_key)
                    else:
                        carried = carried_fields(rec, from_feed)
                        if carried:
                            conn.execute(f"UPDATE episodes SET {', '.join(f'{k}=?' for k in carried)} "
                                         "WHERE partition_key=?", [*carried.values(), rec.partition_key])
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return new

    def get(self, partition_key: str) -> EpisodeRecord | None:
        with self._conn() as conn:
            row = conn.execute("SELECT * FROM episodes WHERE partition_key=?", (partition_key,)).fetchone()
        return EpisodeRecord(**dict(row)) if row else None

    def require(self, partition_key: str) -> EpisodeRecord:
        rec = self.get(partition_key)
        if rec is None:
            raise KeyError(f"episode {partition_key} is not in the checkpoint store; run episode_manifest first")
        return rec

    def update(self, partition_key: str, **fields: object) -> None:
        unknown = set(fields) - set(_EPISODE_COLUMNS)
        if unknown:
            raise ValueError(f"unknown episode fields: {sorted(unknown)}")
        fields["updated_at"] = now()
        cols = ", ".join(f"{k}=?" for k in fields)
        with self._conn() as conn:
            conn.execute(f"UPDATE episodes SET {cols} WHERE partition_key=?", [*fields.values(), partition_key])

    def mark_attempt(self, partition_key: str) -> None:
        with self._conn() as conn:
            conn.execute("UPDATE episodes SET attempts=attempts+1, updated_at=? WHERE partition_key=?",
                         (now(), partition_key))

    def mark_downloaded(self, partition_key: str, *, bytes: int, sha256: str) -> None:
        rec = self.get(partition_key)
        state = TRANSCRIBED if rec is not None and rec.state == TRANSCRIBED else DOWNLOADED  # never backwards
        self.update(partition_key, state=state, bytes=bytes, sha256=sha256, last_error=None,
                    failed_stage=None, downloaded_at=now())
        self.mark_stage(partition_key, DOWNLOAD, DONE)

    def mark_transcribed(self, partition_key: str, *, cost_usd: float | None = None) -> None:
        self.update(partition_key, state=TRANSCRIBED, last_error=None, failed_stage=None,
                    transcribed_at=now(), cost_usd=cost_usd)
        self.mark_stage(partition_key, KPIS, DONE)

    def mark_failed(self, partition_key: str, stage: str, error: str, *, retryable: bool = False) -> None:
        """The stage failed; the summary state turns ``failed`` only for an episode never downloaded."""
        rec = self.get(partition_key)
        fields: dict = {"failed_stage": stage, "last_error": error[:2000]}
        if rec is not None and rec.state == DISCOVERED and stage == DOWNLOAD:
            fields["state"] = FAILED
        self.update(partition_key, **fields)
        self.mark_stage(partition_key, stage, FAILED, error=error, retryable=retryable)

    # ---- stages ---------------------------------------------------------
    @staticmethod
    def _stage_row(row) -> StageStatus:
        d = dict(row)
        d["retryable"] = None if d["retryable"] is None else bool(d["retryable"])
        return StageStatus(**d)

    def stage(self, partition_key: str, stage: str) -> StageStatus:
        with self._conn() as conn:
            row = conn.execute("SELECT * FROM stages WHERE partition_key=? AND stage=?",
                               (partition_key, stage)).fetchone()
        return self._stage_row(row) if row else StageStatus(partition_key, stage)

    def stages(self, stage: str) -> dict[str, StageStatus]:
        with self._conn() as conn:
            rows = conn.execute("SELECT * FROM stages WHERE stage=?", (stage,)).fetchall()
        return {r["partition_key"]: self._stage_row(r) for r in rows}

    def stage_counts(self) -> dict[str, dict[str, int]]:
        out = {st: {s: 0 for s in STAGE_STATUSES} for st in STAGES}
        with self._conn() as conn:
            total = conn.execute("SELECT COUNT(*) FROM episodes").fetchone()[0]
            for stage, status, n in conn.execute("SELECT stage, status, COUNT(*) FROM stages GROUP BY stage, status"):
                out.setdefault(stage, {s: 0 for s in STAGE_STATUSES})[status] = n
        for counts in out.values():
            counts[PENDING] += total - sum(counts.values())
        return out

    def _write_stage(self, conn: sqlite3.Connection, st: StageStatus) -> None:
        st.updated_at = now()
        cols = list(StageStatus.__dataclass_fields__)
        conn.execute(f"INSERT OR REPLACE INTO stages ({','.join(cols)}) VALUES ({','.join('?' * len(cols))})",
                     [getattr(st, c) for c in cols])

    def mark_stage(self, partition_key: str, stage: str, status: str, *, error: str | None = None,
                   retryable: bool | None = None, code_version: str | None = None) -> None:
        if stage not in STAGES or status not in STAGE_STATUSES:
            raise ValueError(f"unknown stage or status: {stage!r} {status!r}")
        with self._conn() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute("SELECT * FROM stages WHERE partition_key=? AND stage=?",
                                   (partition_key, stage)).fetchone()
                st = self._stage_row(row) if row else StageStatus(partition_key, stage)
                _apply(st, status, error=error, retryable=retryable, code_version=code_version)
                self._write_stage(conn, st)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def claim(self, partition_key: str, stage: str, owner: str, ttl_s: float, *,
              unless_done_version: str | None = None) -> str | None:
        """Take the stage for ``owner`` for ``ttl_s`` seconds; None when taken, else why not (one transaction)."""
        with self._conn() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                rec = conn.execute("SELECT * FROM episodes WHERE partition_key=?", (partition_key,)).fetchone()
                row = conn.execute("SELECT * FROM stages WHERE partition_key=? AND stage=?",
                                   (partition_key, stage)).fetchone()
                st = self._stage_row(row) if row else StageStatus(partition_key, stage)
                at = now()
                why = claim_refusal(EpisodeRecord(**dict(rec)) if rec else None, st, owner, at=at,
                                    unless_done_version=unless_done_version)
                if why is None:
                    _apply(st, RUNNING)
                    st.owner, st.lease_until = owner, at + ttl_s
                    self._write_stage(conn, st)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return why

    def release_claims(self, owner: str, reason: str) -> int:
        """Every stage ``owner`` still holds fails (retryable) now: its run is known dead."""
        t = now()
        with self._conn() as conn:
            cur = conn.execute("UPDATE stages SET status=?, last_error=?, retryable=1, owner=NULL, lease_until=NULL, "
                               "finished_at=?, updated_at=? WHERE owner=? AND status=?",
                               (FAILED, reason[:2000], t, t, owner, RUNNING))
        return cur.rowcount

    def renew(self, partition_key: str, stage: str, owner: str, ttl_s: float) -> bool:
        with self._conn() as conn:
            cur = conn.execute("UPDATE stages SET lease_until=?, updated_at=? WHERE partition_key=? AND stage=? "
                               "AND owner=? AND status=?", (now() + ttl_s, now(), partition_key, stage, owner,
                                                              RUNNING))
        return cur.rowcount == 1

    def episodes(self, state: str | None = None, feed_slug: str | None = None,
                 limit: int | None = None) -> list[EpisodeRecord]:
        sql, args = "SELECT * FROM episodes WHERE 1=1", []
        if state:
            sql += " AND state=?"
            args.append(state)
        if feed_slug:
            sql += " AND feed_slug=?"
            args.append(feed_slug)
        sql += " ORDER BY discovered_at, partition_key"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        with self._conn() as conn:
            return [EpisodeRecord(**dict(r)) for r in conn.execute(sql, args)]

    def counts(self) -> dict[str, int]:
        with self._conn() as conn:
            rows = conn.execute("SELECT state, COUNT(*) FROM episodes GROUP BY state").fetchall()
        out = {s: 0 for s in STATES}
        out.update({r[0]: r[1] for r in rows})
        return out

    def counts_by_feed(self) -> dict[str, dict[str, int]]:
        with self._conn() as conn:
            rows = conn.execute("SELECT feed_slug, state, COUNT(*) FROM episodes GROUP BY feed_slug, state")
            out: dict[str, dict[str, int]] = {}
            for slug, state, n in rows:
                out.setdefault(slug, {s: 0 for s in STATES})[state] = n
        return out

    # ---- feeds ----------------------------------------------------------
    def get_feed(self, slug: str) -> FeedRecord | None:
        with self._conn() as conn:
            row = conn.execute("SELECT * FROM feeds WHERE slug=?", (slug,)).fetchone()
        return FeedRecord(**dict(row)) if row else None

    def upsert_feed(self, rec: FeedRecord) -> None:
        data = asdict(rec)
        cols = ",".join(_FEED_COLUMNS)
        updates = ",".join(f"{c}=excluded.{c}" for c in _FEED_COLUMNS if c != "slug")
        with self._conn() as conn:
            conn.execute(
                f"INSERT INTO feeds ({cols}) VALUES ({','.join('?' * len(_FEED_COLUMNS))}) "
                f"ON CONFLICT(slug) DO UPDATE SET {updates}",
                [data[c] for c in _FEED_COLUMNS],
            )

    def feeds(self) -> list[FeedRecord]:
        with self._conn() as conn:
            return [FeedRecord(**dict(r)) for r in conn.execute("SELECT * FROM feeds ORDER BY slug")]
