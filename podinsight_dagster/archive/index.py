"""Full-text search over every transcript: a SQLite FTS5 index (BM25), updated one episode at a time.

Why SQLite FTS5 and not DuckDB's FTS extension: DuckDB's ``create_fts_index`` rebuilds the whole
index on every change, while an FTS5 table takes inserts and deletes of single rows. Each episode's
text is cut into passages (archive/passages.py) of about ``PASSAGE_CHARS`` characters (whole segments), one FTS5 row each;
a passage's rowid is ``episode_id << 20 | n``, so re-indexing an episode deletes a rowid range and
inserts its new passages without touching any other episode. A hit names its feed, episode and
start time: the start of the segment in which the first matched word lies, which becomes a deep
link into the audio (``<enclosure_url>#t=<seconds>``, Media Fragments).

Search by meaning (archive/meaning.py): each passage also has a sentence embedding (int8 MiniLM, ``chapters/embed.py``),
stored as int8 (scaled by 127) in an append-only file beside the index (``archive/vectors.py``); the
episode's row says which of the file's rows are its own (``vec_start``, ``vec_count``), so re-indexing
an episode appends its new vectors and leaves the old ones dead until a compaction. A meaning query
ranks every passage by cosine similarity (an exact scan of the memory-mapped file); the hybrid fuses
that ranking with BM25 over the query's words (reciprocal rank fusion).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from pathlib import Path
from typing import Iterable, Protocol

from podinsight_dagster.archive import vectors
from podinsight_dagster.archive.meaning import MEANING_FLOOR, MeaningSearch
from podinsight_dagster.archive.passages import (ROWID_SHIFT, EpisodeDoc, Hit, SearchError, _match_start, fts_query,
                                                 passages_of, with_offset)
from podinsight_dagster.store.sqlite_wal import enable_wal

SCHEMA = """
CREATE TABLE IF NOT EXISTS episodes (
    id INTEGER PRIMARY KEY, partition_key TEXT UNIQUE NOT NULL, feed_slug TEXT NOT NULL, guid_key TEXT NOT NULL,
    title TEXT, published TEXT, enclosure_url TEXT, audio_uri TEXT, duration_sec REAL,
    passages INTEGER NOT NULL, segments INTEGER NOT NULL, indexed_at REAL NOT NULL,
    vec_start INTEGER, vec_count INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS episodes_feed ON episodes(feed_slug);
CREATE VIRTUAL TABLE IF NOT EXISTS passages USING fts5(
    text, start_sec UNINDEXED, segs UNINDEXED, tokenize='porter unicode61');
CREATE TABLE IF NOT EXISTS searches (ts REAL NOT NULL, query TEXT NOT NULL, hits INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS vector_file (
    id INTEGER PRIMARY KEY CHECK (id = 0), generation INTEGER NOT NULL, dim INTEGER);
INSERT OR IGNORE INTO vector_file (id, generation, dim) VALUES (0, 1, NULL);
"""
COMPACT_DEAD_SHARE = 0.25  # rewrite the vector file when this share of its rows is dead ...
COMPACT_MIN_DEAD = 50_000  # ... and at least this many (19 MB), so small indexes are left alone

def search_terms(phrase: str) -> str:
    """A search as ``podrun report`` counts it: its words, lower-cased, one space apart."""
    return " ".join(re.findall(r"\w+", phrase.lower()))

class ArchiveIndex(Protocol):
    """The search index seam: what ``transcript_index`` writes and ``podrun search``/``report`` read.

    Two implementations, picked in services.py: ``TranscriptIndex`` (one SQLite file under the data
    root: the local deployment) and ``archive.shared.SharedTranscriptIndex`` (the aws deployment: one
    immutable object per indexed episode in the stage bucket, read through a local replica).
    """

    location: str

    def index(self, docs: Iterable["EpisodeDoc"], embeddings: dict | None = None) -> dict[str, int]: ...
    def remove(self, partition_key: str) -> bool: ...
    def episode_count(self) -> int: ...
    def stats(self) -> dict: ...
    def feeds(self) -> list[str]: ...
    def search(self, phrase: str, feed: str | None = None, limit: int = 10, log: bool = True,
               mark: tuple[str, str] = ("**", "**")) -> list["Hit"]: ...
    def search_meaning(self, question: str, feed: str | None = None, limit: int = 10, hybrid: bool = True,
                       log: bool = True, floor: float = MEANING_FLOOR) -> list["Hit"]: ...
    def top_searches(self, n: int = 5) -> list[tuple[str, int]]: ...
    def hits_by_month(self, phrase: str) -> dict[str, int]: ...
    def close(self) -> None: ...


class TranscriptIndex(MeaningSearch):
    """The search index in one SQLite file (WAL; one writer at a time, readers never blocked)."""

    def __init__(self, path: Path, create: bool = True, encoder=None):
        self.path = Path(path)
        self._encoder = encoder  # a SentenceEncoder; None: the process's one, loaded when first needed
        self._matrix = None      # (rowid per slot, mapped int8 rows) read once per object for meaning searches
        self.compact_min_dead = COMPACT_MIN_DEAD
        if not create and not self.path.exists():
            raise SearchError(f"no search index yet at {self.path}: materialize transcript_index "
                              "(podrun transcribe or podrun demo build it)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        enable_wal(self.conn)  # three processes may open a new index at once
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(SCHEMA)
        self._upgrade()

    def _upgrade(self) -> None:
        """An index written before the vector file: add its columns, move its vectors out of SQLite."""
        columns = {r[1] for r in self.conn.execute("PRAGMA table_info(episodes)")}
        legacy = self.conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'passage_vectors'").fetchone()
        if "vec_start" in columns and not legacy:
            return
        import numpy as np

        cur = self.conn.cursor()
        cur.execute("BEGIN IMMEDIATE")  # re-checked under the write lock: another process may have done it
        try:
            columns = {r[1] for r in cur.execute("PRAGMA table_info(episodes)")}
            if "vec_start" not in columns:
                cur.execute("ALTER TABLE episodes ADD COLUMN vec_start INTEGER")
                cur.execute("ALTER TABLE episodes ADD COLUMN vec_count INTEGER NOT NULL DEFAULT 0")
            if cur.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'passage_vectors'"
                           ).fetchone():
                path = self._vector_path(cur)
                for episode_id, passages in cur.execute("SELECT id, passages FROM episodes ORDER BY id").fetchall():
                    base = episode_id << ROWID_SHIFT
                    blobs = [r[0] for r in cur.execute(
                        "SELECT vec FROM passage_vectors WHERE rowid BETWEEN ? AND ? ORDER BY rowid",
                        (base, base + passages - 1))]
                    if not blobs or len(blobs) != passages:
                        continue  # no complete set: found by meaning again once re-indexed
                    rows = np.frombuffer(b"".join(blobs), dtype=np.int8).reshape(passages, -1)
                    self._check_dim(cur, rows.shape[1])
                    cur.execute("UPDATE episodes SET vec_start = ?, vec_count = ? WHERE id = ?",
                                (vectors.append(path, rows), passages, episode_id))
                cur.execute("DROP TABLE passage_vectors")
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise

    def _vector_path(self, cur) -> Path:
        return vectors.file_for(self.path, cur.execute("SELECT generation FROM vector_file").fetchone()[0])

    def _check_dim(self, cur, dim: int) -> None:
        known = cur.execute("SELECT dim FROM vector_file").fetchone()[0]
        if known is None:
            cur.execute("UPDATE vector_file SET dim = ?", (dim,))
        elif known != dim:
            raise ValueError(f"{self.path}: passage vectors of {dim} dimensions, the index holds {known}: "
                             "the embedding model changed; delete the index and re-index")

    @property
    def location(self) -> str:
        return str(self.path)

    def close(self) -> None:
        self.conn.close()

    # -- writing ----------------------------------------------------------------------------------
    def index(self, docs: Iterable[EpisodeDoc], embeddings: dict | None = None,
              int8_rows: dict | None = None) -> dict[str, int]:
        """Index (or re-index) these episodes in one transaction; returns passages per episode.

        ``embeddings``: partition key -> (passages, dim) unit float vectors already computed (the
        benchmark's); ``int8_rows``: the same already quantized (a shared index's entries); the
        others are embedded here.
        """
        import numpy as np

        counts: dict[str, int] = {}
        docs = list(docs)
        embeddings = embeddings or {}
        int8_rows = int8_rows or {}
        # Embeddings outside the write transaction (the slow part): one vector per passage.
        rows = {doc.partition_key: int8_rows[doc.partition_key] if doc.partition_key in int8_rows
                else vectors.quantize(embeddings[doc.partition_key]) if doc.partition_key in embeddings
                else self.passage_vectors(doc) for doc in docs}
        self._matrix = None
        cur = self.conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            block = [rows[doc.partition_key] for doc in docs if len(rows[doc.partition_key])]
            slot = 0
            if block:
                block = np.concatenate(block)
                self._check_dim(cur, block.shape[1])
                # On disk before the transaction that points at them commits; under the write lock, so
                # no other writer appends between.
                slot = vectors.append(self._vector_path(cur), block)
            for doc in docs:
                counts[doc.partition_key] = self._index_one(cur, doc, slot, len(rows[doc.partition_key]))
                slot += len(rows[doc.partition_key])
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        self._compact_if_worth_it()
        return counts

    def encoder(self):
        if self._encoder is None:
            from podinsight_dagster.chapters.embed import encoder

            self._encoder = encoder()
        return self._encoder

    def passage_vectors(self, doc: EpisodeDoc):
        """The episode's passage vectors as stored: int8 rows, one per passage."""
        return self._embed([t for t, _, _ in passages_of(doc.segments)])

    def _embed(self, texts: list[str]):
        import numpy as np

        if not texts:
            return np.zeros((0, 0), dtype=np.int8)
        return vectors.quantize(self.encoder().encode(texts))

    def _index_one(self, cur: sqlite3.Cursor, doc: EpisodeDoc, vec_start: int, vec_count: int) -> int:
        passages = passages_of(doc.segments)
        if len(passages) >= 1 << ROWID_SHIFT:
            raise ValueError(f"{doc.partition_key}: {len(passages)} passages, more than one episode may have")
        if vec_count != len(passages):
            raise ValueError(f"{doc.partition_key}: {vec_count} vectors for {len(passages)} passages")
        row = cur.execute("SELECT id FROM episodes WHERE partition_key = ?", (doc.partition_key,)).fetchone()
        values = (doc.feed_slug, doc.guid_key, doc.title, doc.published, doc.enclosure_url, doc.audio_uri,
                  doc.duration_sec, len(passages), len(doc.segments), time.time(), vec_start, vec_count)
        if row:
            episode_id = row[0]
            base = episode_id << ROWID_SHIFT
            cur.execute("DELETE FROM passages WHERE rowid BETWEEN ? AND ?", (base, base + (1 << ROWID_SHIFT) - 1))
            # Its old vectors stay in the file, dead: no episode points at them any more.
            cur.execute("UPDATE episodes SET feed_slug=?, guid_key=?, title=?, published=?, enclosure_url=?, "
                        "audio_uri=?, duration_sec=?, passages=?, segments=?, indexed_at=?, vec_start=?, "
                        "vec_count=? WHERE id=?", (*values, episode_id))
        else:
            cur.execute("INSERT INTO episodes (partition_key, feed_slug, guid_key, title, published, enclosure_url,"
                        " audio_uri, duration_sec, passages, segments, indexed_at, vec_start, vec_count)"
                        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", (doc.partition_key, *values))
            episode_id = cur.lastrowid
        base = episode_id << ROWID_SHIFT
        cur.executemany("INSERT INTO passages (rowid, text, start_sec, segs) VALUES (?, ?, ?, ?)",
                        [(base + n, text, start, json.dumps(segs, separators=(",", ":")))
                         for n, (text, start, segs) in enumerate(passages)])
        return len(passages)

    def remove(self, partition_key: str) -> bool:
        row = self.conn.execute("SELECT id FROM episodes WHERE partition_key = ?", (partition_key,)).fetchone()
        if not row:
            return False
        base = row[0] << ROWID_SHIFT
        with self.conn:
            self.conn.execute("DELETE FROM passages WHERE rowid BETWEEN ? AND ?", (base, base + (1 << ROWID_SHIFT) - 1))
            self.conn.execute("DELETE FROM episodes WHERE id = ?", (row[0],))  # its vectors: dead rows
        self._matrix = None
        self._compact_if_worth_it()
        return True

    def vector_rows(self) -> tuple[int, int]:
        """(rows in the vector file, rows some episode points at)."""
        dim = self.conn.execute("SELECT dim FROM vector_file").fetchone()[0]
        path = self._vector_path(self.conn)
        total = path.stat().st_size // dim if dim and path.exists() else 0
        live = self.conn.execute("SELECT coalesce(sum(vec_count), 0) FROM episodes").fetchone()[0]
        return total, live

    def _compact_if_worth_it(self) -> None:
        total, live = self.vector_rows()
        dead = total - live
        if dead and dead >= self.compact_min_dead and dead >= COMPACT_DEAD_SHARE * total:
            self.compact()

    def compact(self) -> None:
        """Rewrite the live vectors into the next generation's file and drop the old one.

        Readers that mapped the old file keep reading it (it is unlinked, not overwritten); a reader
        that read the old generation's number but opens the file after it is gone reads again.
        """
        cur = self.conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        new = None
        try:
            generation, dim = cur.execute("SELECT generation, dim FROM vector_file").fetchone()
            old = vectors.file_for(self.path, generation)
            ranges = cur.execute("SELECT id, vec_start, vec_count FROM episodes WHERE vec_count > 0 "
                                 "ORDER BY vec_start").fetchall()
            new = vectors.file_for(self.path, generation + 1)
            new.unlink(missing_ok=True)
            moved, slot = [], 0
            if ranges:
                src = vectors.mapped(old, max(s + n for _, s, n in ranges), dim)
                with open(new, "wb") as f:
                    for episode_id, start, count in ranges:
                        f.write(src[start:start + count].tobytes())
                        moved.append((slot, episode_id))
                        slot += count
                    f.flush()
                    os.fsync(f.fileno())
                del src
            else:
                new.touch()
            cur.executemany("UPDATE episodes SET vec_start = ? WHERE id = ?", moved)
            cur.execute("UPDATE vector_file SET generation = ?", (generation + 1,))
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            if new is not None:
                new.unlink(missing_ok=True)
            raise
        old.unlink(missing_ok=True)
        self._matrix = None

    def optimize(self) -> None:
        """Merge the FTS5 segments into one b-tree (after a bulk load; searches get faster)."""
        self.conn.execute("INSERT INTO passages(passages) VALUES ('optimize')")

    # -- reading ----------------------------------------------------------------------------------
    def episode_count(self) -> int:
        return self.conn.execute("SELECT count(*) FROM episodes").fetchone()[0]

    def stats(self) -> dict:
        episodes, passages = self.conn.execute("SELECT count(*), coalesce(sum(passages), 0) FROM episodes").fetchone()
        feeds = self.conn.execute("SELECT count(DISTINCT feed_slug) FROM episodes").fetchone()[0]
        return {"episodes": episodes, "passages": passages, "feeds": feeds}

    def feeds(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT DISTINCT feed_slug FROM episodes ORDER BY 1")]

    def search(self, phrase: str, feed: str | None = None, limit: int = 10, log: bool = True,
               mark: tuple[str, str] = ("**", "**")) -> list[Hit]:
        """The best ``limit`` passages holding every word of ``phrase`` (BM25, ``fts_query``), maybe in one feed."""
        query = fts_query(phrase)
        if feed is not None and not self.conn.execute(
                "SELECT 1 FROM episodes WHERE feed_slug = ? LIMIT 1", (feed,)).fetchone():
            known = ", ".join(self.feeds()) or "none yet"
            raise SearchError(f"no feed {feed!r} in the search index (indexed feeds: {known})")
        where, params = "passages MATCH ?", [query]
        if feed is not None:
            where += " AND (rowid >> %d) IN (SELECT id FROM episodes WHERE feed_slug = ?)" % ROWID_SHIFT
            params.append(feed)
        rows = self.conn.execute(
            f"""SELECT p.rowid, p.start_sec, p.segs, p.snip, p.marked, p.score,
                       e.feed_slug, e.partition_key, e.title, e.enclosure_url, e.audio_uri
                FROM (SELECT rowid, start_sec, segs, snippet(passages, 0, ?, ?, '…', 24) AS snip,
                             highlight(passages, 0, char(2), char(3)) AS marked, bm25(passages) AS score
                      FROM passages WHERE {where} ORDER BY rank LIMIT ?) p
                JOIN episodes e ON e.id = (p.rowid >> {ROWID_SHIFT})
                ORDER BY p.score""", [mark[0], mark[1], *params, limit]).fetchall()
        hits = []
        for _rowid, start, segs, snip, marked, score, feed_slug, pk, title, url, audio in rows:
            at = _match_start(marked, json.loads(segs), float(start))
            snip = snip.replace(f"{mark[1]} {mark[0]}", " ")  # neighbouring matched words: one highlight
            hits.append(Hit(feed_slug, pk, title, at, snip, with_offset(url, at), with_offset(audio, at),
                            round(-score, 4)))
        if log:
            self.log_search(phrase, len(hits))
        return hits

    def log_search(self, phrase: str, hits: int, ts: float | None = None) -> None:
        """One search for ``podrun report``'s top terms: its words, lower-cased, and how many hits it had."""
        with self.conn:
            self.conn.execute("INSERT INTO searches (ts, query, hits) VALUES (?, ?, ?)",
                              (time.time() if ts is None else ts, search_terms(phrase), hits))

    def top_searches(self, n: int = 5) -> list[tuple[str, int]]:
        return [(q, c) for q, c in self.conn.execute(
            "SELECT query, count(*) FROM searches GROUP BY query ORDER BY count(*) DESC, query LIMIT ?", (n,))]

    def hits_by_month(self, phrase: str) -> dict[str, int]:
        """Passages matching ``phrase`` per month the episode was published (YYYY-MM; '?' unknown)."""
        rows = self.conn.execute(
            f"""SELECT coalesce(substr(e.published, 1, 7), '?'), count(*)
                FROM passages p JOIN episodes e ON e.id = (p.rowid >> {ROWID_SHIFT})
                WHERE p.passages MATCH ? GROUP BY 1 ORDER BY 1""", (fts_query(phrase),))
        return dict(rows.fetchall())


