"""The checkpoint store: one row per episode, one row per feed.

Locally this is SQLite in WAL mode (readers never block the writer, and several
runs on one machine can share it); on AWS the same interface is backed by
DynamoDB (run-book: ``podinsights-status``). Checks and sensors that summarise
many episodes read this store instead of loading every partition's output.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Protocol

DISCOVERED = "discovered"
DOWNLOADED = "downloaded"
TRANSCRIBED = "transcribed"
FAILED = "failed"
STATES = (DISCOVERED, DOWNLOADED, TRANSCRIBED, FAILED)


def now() -> float:
    return time.time()


@dataclass
class EpisodeRecord:
    partition_key: str
    feed_slug: str
    guid_key: str
    guid: str | None = None
    title: str | None = None
    enclosure_url: str | None = None
    enclosure_type: str | None = None
    enclosure_length: int | None = None
    published: str | None = None
    duration_hint_sec: float | None = None
    transcripts_json: str | None = None  # the feed's podcast:transcript links, JSON list
    persons_json: str | None = None      # the feed's podcast:person entries (item, else channel), JSON list
    chapters_url: str | None = None      # the feed's podcast:chapters link
    state: str = DISCOVERED
    failed_stage: str | None = None
    attempts: int = 0
    bytes: int | None = None
    sha256: str | None = None
    last_error: str | None = None
    quality_issue: str | None = None  # why a transcript looks wrong (empty despite speech, disordered)
    speaker_issue: str | None = None  # diarization found fewer voices than the feed lists
    discovered_at: float = field(default_factory=now)
    updated_at: float = field(default_factory=now)
    downloaded_at: float | None = None
    transcribed_at: float | None = None
    cost_usd: float | None = None


@dataclass
class FeedRecord:
    slug: str
    url: str                          # the URL the catalog names
    effective_url: str | None = None  # where the feed lives now (after a 301/308 or itunes:new-feed-url)
    tier: int | None = None
    etag: str | None = None
    last_modified: str | None = None
    last_status: str | None = None
    last_error: str | None = None
    episodes: int = 0
    checked_at: float | None = None


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


class CheckpointStore(Protocol):
    """Episode and feed state that every step and process of a deployment shares."""

    def register_episodes(self, records: Iterable[EpisodeRecord]) -> list[str]: ...
    def get(self, partition_key: str) -> EpisodeRecord | None: ...
    def require(self, partition_key: str) -> EpisodeRecord: ...
    def update(self, partition_key: str, **fields: object) -> None: ...
    def mark_attempt(self, partition_key: str) -> None: ...
    def mark_downloaded(self, partition_key: str, *, bytes: int, sha256: str) -> None: ...
    def mark_transcribed(self, partition_key: str, *, cost_usd: float | None = None) -> None: ...
    def mark_failed(self, partition_key: str, stage: str, error: str) -> None: ...
    def episodes(self, state: str | None = None, feed_slug: str | None = None,
                 limit: int | None = None) -> list[EpisodeRecord]: ...
    def counts(self) -> dict[str, int]: ...
    def counts_by_feed(self) -> dict[str, dict[str, int]]: ...
    def get_feed(self, slug: str) -> FeedRecord | None: ...
    def upsert_feed(self, rec: FeedRecord) -> None: ...
    def feeds(self) -> list[FeedRecord]: ...
    def close(self) -> None: ...


class SqliteCheckpointStore:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []   # every thread's connection, so close() reaches them all
        self._all_lock = threading.Lock()
        with self._conn() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(SCHEMA)
            self._add_missing_columns(conn)

    @staticmethod
    def _add_missing_columns(conn: sqlite3.Connection) -> None:
        # A data root made by an older version lacks newer (nullable) columns: add them in place.
        for table, columns in (("episodes", _EPISODE_COLUMNS), ("feeds", _FEED_COLUMNS)):
            have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
            for col in columns:
                if col not in have:
                    conn.execute(f"ALTER TABLE {table} ADD COLUMN {col}")

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
                self._all.append(conn)
        yield conn

    def close(self) -> None:
        """Close every thread's connection (sqlite3 allows closing from another thread)."""
        with self._all_lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()
        self._local = threading.local()

    # ---- episodes -------------------------------------------------------
    def register_episodes(self, records: Iterable[EpisodeRecord]) -> list[str]:
        """Insert episodes not seen before; return the partition keys that were new.

        Known episodes keep their state; their descriptive fields (title, enclosure)
        are refreshed, since publishers fix typos and move files between CDNs.
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
                        conn.execute(
                            "UPDATE episodes SET title=?, enclosure_url=?, enclosure_type=?, "
                            "enclosure_length=?, published=?, duration_hint_sec=?, transcripts_json=?, "
                            "persons_json=?, chapters_url=? WHERE partition_key=?",
                            (rec.title, rec.enclosure_url, rec.enclosure_type, rec.enclosure_length,
                             rec.published, rec.duration_hint_sec, rec.transcripts_json, rec.persons_json,
                             rec.chapters_url, rec.partition_key),
                        )
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
        self.update(partition_key, state=DOWNLOADED, bytes=bytes, sha256=sha256, last_error=None,
                    failed_stage=None, downloaded_at=now())

    def mark_transcribed(self, partition_key: str, *, cost_usd: float | None = None) -> None:
        self.update(partition_key, state=TRANSCRIBED, last_error=None, failed_stage=None,
                    transcribed_at=now(), cost_usd=cost_usd)

    def mark_failed(self, partition_key: str, stage: str, error: str) -> None:
        self.update(partition_key, state=FAILED, failed_stage=stage, last_error=error[:2000])

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
