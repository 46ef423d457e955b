"""Full-text search over every transcript: a SQLite FTS5 index (BM25), updated one episode at a time.

Why SQLite FTS5 and not DuckDB's FTS extension: DuckDB's ``create_fts_index`` rebuilds the whole
index on every change, while an FTS5 table takes inserts and deletes of single rows. Each episode's
text is cut into passages of about ``PASSAGE_CHARS`` characters (whole segments), one FTS5 row each;
a passage's rowid is ``episode_id << 20 | n``, so re-indexing an episode deletes a rowid range and
inserts its new passages without touching any other episode. A hit names its feed, episode and
start time: the start of the segment in which the first matched word lies, which becomes a deep
link into the audio (``<enclosure_url>#t=<seconds>``, Media Fragments).

Search by meaning: each passage also has a sentence embedding (int8 MiniLM, ``chapters/embed.py``),
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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Protocol

from podinsight_dagster.archive import vectors

PASSAGE_CHARS = 500
ROWID_SHIFT = 20          # up to 1,048,576 passages per episode
MARK_START, MARK_END = "\x02", "\x03"
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
RRF_K = 60                # reciprocal rank fusion: score = sum 1 / (RRF_K + rank)
HYBRID_DEPTH = 100        # candidates taken from each ranking before fusing
COMPACT_DEAD_SHARE = 0.25  # rewrite the vector file when this share of its rows is dead ...
COMPACT_MIN_DEAD = 50_000  # ... and at least this many (19 MB), so small indexes are left alone
# Search by meaning leaves out passages whose cosine similarity to the question is below this. Measured
# (bench/relevance_floor.py; docs/BENCHMARKS.md, "Relevance floor") on the demo's nine transcripts and the
# tests' five topic episodes: the episode a question is about had its best passage at 0.31-0.72 (16
# questions), while the best passage for a question no episode answers scored 0.07-0.19 (10 questions).
MEANING_FLOOR = 0.25


class SearchError(ValueError):
    """A search that cannot run (no index yet, an empty phrase, an unknown feed); one sentence."""


@dataclass
class EpisodeDoc:
    """What the index keeps of one episode: where it is, and its segments (text, start_sec, end_sec)."""

    partition_key: str
    feed_slug: str
    guid_key: str
    title: str | None
    published: str | None
    enclosure_url: str | None
    audio_uri: str | None
    duration_sec: float | None
    segments: list[dict]


@dataclass
class Hit:
    feed_slug: str
    partition_key: str
    title: str | None
    start_sec: float
    snippet: str
    link: str | None        # the enclosure URL with #t=<seconds>
    audio: str | None       # the stored audio (a local path as file://, or s3://) with #t=<seconds>
    score: float
    similarity: float | None = None  # search by meaning: the passage's cosine similarity to the question

    def to_dict(self) -> dict:
        return asdict(self)


def passages_of(segments: list[dict], size: int = PASSAGE_CHARS) -> list[tuple[str, float, list]]:
    """Whole segments grouped into passages of about ``size`` characters: (text, start_sec, [[offset, start]])."""
    out, parts, segs, length = [], [], [], 0
    for seg in segments:
        text = (seg.get("text") or "").strip()
        if not text:
            continue
        segs.append([length, float(seg.get("start_sec") or 0.0)])
        parts.append(text)
        length += len(text) + 1
        if length >= size:
            out.append((" ".join(parts), segs[0][1], segs))
            parts, segs, length = [], [], 0
    if parts:
        out.append((" ".join(parts), segs[0][1], segs))
    return out


def fts_phrase(phrase: str) -> str:
    """The words of ``phrase`` as one FTS5 phrase query (so no user input is read as FTS5 syntax)."""
    words = re.findall(r"\w+", phrase)
    if not words:
        raise SearchError(f"nothing to search for in {phrase!r}: give at least one word")
    return '"' + " ".join(words) + '"'


def fts_query(text: str) -> str:
    """A search as an FTS5 query: every word a BM25 term a passage must hold, ``"quoted words"`` a phrase.

    ``brain sleep`` finds a passage holding both words anywhere in it (stemmed: "sleeping" too);
    ``"brain sleep"`` only the two words side by side. Common words (the, of, how, ...) are left out
    of an unquoted search unless it has no other word, so a question's words still find a passage.
    Each term is quoted, so no user input is read as FTS5 syntax (AND, NEAR, *, column filters).
    """
    from podinsight_dagster.chapters.tiling import STOPWORDS

    phrases = [words for p in re.findall(r'"([^"]*)"', text) if (words := re.findall(r"\w+", p))]
    loose = re.findall(r"\w+", re.sub(r'"[^"]*"', " ", text))
    content = [w for w in loose if w.lower() not in STOPWORDS]
    if content or phrases:
        loose = content
    terms = ['"' + " ".join(p) + '"' for p in phrases] + [f'"{w}"' for w in dict.fromkeys(w.lower() for w in loose)]
    if not terms:
        raise SearchError(f"nothing to search for in {text!r}: give at least one word")
    return " AND ".join(terms)


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


def with_offset(uri: str | None, seconds: float) -> str | None:
    if not uri:
        return None
    if uri.startswith("/"):
        uri = "file://" + uri
    return f"{uri.split('#', 1)[0]}#t={int(seconds)}"


class TranscriptIndex:
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
        self.conn.execute("PRAGMA journal_mode=WAL")
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
            with self.conn:
                self.conn.execute("INSERT INTO searches (ts, query, hits) VALUES (?, ?, ?)",
                                  (time.time(), " ".join(re.findall(r"\w+", phrase.lower())), len(hits)))
        return hits

    def load_vectors(self):
        """(passage rowid per row, -1 for a dead row; the int8 rows, memory-mapped), read once per object."""
        import numpy as np

        for attempt in (1, 2):
            if self._matrix is not None:
                break
            # One read transaction: the generation and the episodes' rows of the same moment.
            self.conn.execute("BEGIN")
            try:
                generation, dim = self.conn.execute("SELECT generation, dim FROM vector_file").fetchone()
                ranges = np.array(self.conn.execute(
                    "SELECT id, vec_start, vec_count FROM episodes WHERE vec_count > 0").fetchall(),
                    dtype=np.int64).reshape(-1, 3)
            finally:
                self.conn.execute("COMMIT")
            ids, starts, counts = ranges.T
            size = int((starts + counts).max()) if len(ranges) else 0
            path = vectors.file_for(self.path, generation)
            try:
                mat = vectors.mapped(path, size, dim or 0)
            except FileNotFoundError:
                if attempt == 1:
                    continue  # compacted between the read and the open: read the new generation
                raise SearchError(f"the passage vectors file {path} is missing: search by meaning needs the "
                                  "index re-built (delete the index and materialize transcript_index)")
            except ValueError:  # mmap: shorter than the episodes' rows say
                raise SearchError(f"the passage vectors file {path} is shorter than the index says: search by "
                                  "meaning needs the index re-built (delete it and materialize transcript_index)")
            self._matrix = (vectors.slot_rowids(ids, starts, counts, ROWID_SHIFT, size), mat)
        return self._matrix

    def embed_question(self, question: str):
        return self.encoder().encode([question])[0]

    def meaning_ranking(self, question: str, feed: str | None = None, depth: int = HYBRID_DEPTH,
                        q=None) -> list[tuple[int, float]]:
        """(passage rowid, cosine similarity) of the ``depth`` passages closest in meaning to ``question``.

        ``q``: the question's embedding when already computed (``embed_question``).
        """
        import numpy as np

        ids, mat = self.load_vectors()
        if not len(ids):
            return []
        sims = vectors.scores(mat, self.embed_question(question) if q is None else q)
        live = ids >= 0
        if feed is not None:
            keep = [r[0] for r in self.conn.execute("SELECT id FROM episodes WHERE feed_slug = ?", (feed,))]
            live &= np.isin(ids >> ROWID_SHIFT, keep)
        sims[~live] = -np.inf
        k = min(depth, len(ids))
        top = np.argpartition(-sims, k - 1)[:k]
        top = top[np.argsort(-sims[top], kind="stable")]
        return [(int(ids[i]), float(sims[i])) for i in top if np.isfinite(sims[i])]

    def _similarities(self, rowids: list[int], q) -> dict[int, float]:
        """Cosine similarity to ``q`` of these passages (the BM25 candidates the meaning ranking left out)."""
        import numpy as np

        if not rowids:
            return {}
        _, mat = self.load_vectors()
        episodes = sorted({r >> ROWID_SHIFT for r in rowids})
        starts = dict(self.conn.execute(
            f"SELECT id, vec_start FROM episodes WHERE id IN ({','.join('?' * len(episodes))})", episodes).fetchall())
        mask = (1 << ROWID_SHIFT) - 1
        slots = [(r, starts[r >> ROWID_SHIFT] + (r & mask)) for r in rowids if starts.get(r >> ROWID_SHIFT) is not None]
        slots = [(r, slot) for r, slot in slots if slot < len(mat)]
        if not slots:
            return {}
        rows = np.ascontiguousarray(mat[[slot for _, slot in slots]])
        rows.flags.writeable = False  # the mapped file's array type: the scan compiled for it is reused
        sims = vectors.scores(rows, q)
        return {r: float(v) for (r, _), v in zip(slots, sims)}

    def words_ranking(self, question: str, feed: str | None = None, depth: int = HYBRID_DEPTH,
                      conn: sqlite3.Connection | None = None) -> list[int]:
        """Passage rowids by BM25 over any of the question's words (a question rarely matches as one phrase).

        ``conn``: another connection to the index (the hybrid runs this in a thread of its own).
        """
        from podinsight_dagster.chapters.tiling import STOPWORDS

        words = [w for w in re.findall(r"\w+", question.lower()) if len(w) > 2 and w not in STOPWORDS]
        if not words:
            return []
        where, params = "passages MATCH ?", [" OR ".join(f'"{w}"' for w in dict.fromkeys(words))]
        if feed is not None:
            where += " AND (rowid >> %d) IN (SELECT id FROM episodes WHERE feed_slug = ?)" % ROWID_SHIFT
            params.append(feed)
        return [r[0] for r in (conn or self.conn).execute(
            f"SELECT rowid FROM passages WHERE {where} ORDER BY rank LIMIT ?", [*params, depth])]

    def _words_ranking_in_thread(self, question: str, feed: str | None):
        """BM25 on its own connection in a thread: SQLite runs it while the vector scan (numba, GIL released)
        and the question's embedding (onnxruntime) run, so the hybrid costs about the longer of the two."""
        from concurrent.futures import ThreadPoolExecutor

        def run():
            conn = sqlite3.connect(self.path, timeout=60)
            try:
                return self.words_ranking(question, feed, conn=conn)
            finally:
                conn.close()

        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bm25")
        future = pool.submit(run)
        pool.shutdown(wait=False)
        return future

    def search_meaning(self, question: str, feed: str | None = None, limit: int = 10, hybrid: bool = True,
                       log: bool = True, floor: float = MEANING_FLOOR) -> list[Hit]:
        """Passages ranked by meaning (cosine similarity of embeddings), fused with BM25 when ``hybrid``.

        A hit's score is the cosine similarity (meaning only) or the fused reciprocal-rank score; its
        ``similarity`` is the cosine similarity either way, and passages below ``floor`` are left out
        (a question about nothing the archive holds finds nothing rather than ten unrelated passages).
        Its deep link is the start of the passage (the segment it begins with).
        """
        if not re.search(r"\w", question):
            raise SearchError(f"nothing to search for in {question!r}: give at least one word")
        if feed is not None and not self.conn.execute(
                "SELECT 1 FROM episodes WHERE feed_slug = ? LIMIT 1", (feed,)).fetchone():
            known = ", ".join(self.feeds()) or "none yet"
            raise SearchError(f"no feed {feed!r} in the search index (indexed feeds: {known})")
        words = self._words_ranking_in_thread(question, feed) if hybrid else None
        ids, _ = self.load_vectors()
        warm = vectors.warm_in_background() if len(ids) else None
        q = self.embed_question(question)  # loads the encoder on first use, while the scan loads
        if warm is not None:
            warm.join()
        meaning = self.meaning_ranking(question, feed, depth=max(limit, HYBRID_DEPTH), q=q)
        similarity = dict(meaning)
        if words is not None:
            fused: dict[int, float] = {}
            for ranking in ([r for r, _ in meaning], words.result()):
                for rank, rowid in enumerate(ranking, 1):
                    fused[rowid] = fused.get(rowid, 0.0) + 1.0 / (RRF_K + rank)
            similarity.update(self._similarities([r for r in fused if r not in similarity], q))
            ranked = sorted(((r, f) for r, f in fused.items() if similarity.get(r, -1.0) >= floor),
                            key=lambda x: -x[1])[:limit]
        else:
            ranked = [(r, s) for r, s in meaning if s >= floor][:limit]
        hits = []
        for rowid, score in ranked:
            row = self.conn.execute(
                f"""SELECT p.text, p.start_sec, e.feed_slug, e.partition_key, e.title, e.enclosure_url, e.audio_uri
                    FROM passages p JOIN episodes e ON e.id = (p.rowid >> {ROWID_SHIFT}) WHERE p.rowid = ?""",
                (rowid,)).fetchone()
            if row is None:
                continue
            text, start, feed_slug, pk, title, url, audio = row
            at = float(start)
            snippet = text if len(text) <= 160 else text[:157].rsplit(" ", 1)[0] + "…"
            hits.append(Hit(feed_slug, pk, title, at, snippet, with_offset(url, at), with_offset(audio, at),
                            round(score, 4), round(similarity[rowid], 4)))
        if log:
            with self.conn:
                self.conn.execute("INSERT INTO searches (ts, query, hits) VALUES (?, ?, ?)",
                                  (time.time(), " ".join(re.findall(r"\w+", question.lower())), len(hits)))
        return hits

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


def _match_start(marked: str, segs: list, default: float) -> float:
    """The start time of the segment holding the first highlighted word of a passage."""
    at = marked.find(MARK_START)
    if at < 0:
        return default
    start = default
    for offset, seg_start in segs:
        if offset > at:
            break
        start = seg_start
    return float(start)


def episode_doc(services, partition_key: str) -> EpisodeDoc:
    """An episode as the index takes it: raw meta.json (title, enclosure) and its stage segments.json."""
    from podinsight_dagster.errors import StepError
    from podinsight_dagster.store import layout
    from podinsight_dagster.store.keys import EpisodeKey

    ek = EpisodeKey.parse(partition_key)
    try:
        lines = services.stage.get_bytes(layout.segments_key(ek)).decode().splitlines()
    except FileNotFoundError as exc:
        raise StepError(f"{partition_key}: no segments yet (materialize segments first)") from exc
    try:
        meta = services.raw.get_json(layout.meta_key(ek))
    except FileNotFoundError:
        meta = {}
    audio_key = meta.get("audio_key")
    return EpisodeDoc(partition_key=partition_key, feed_slug=ek.feed_slug, guid_key=ek.guid_key,
                      title=meta.get("title"), published=meta.get("published"),
                      enclosure_url=meta.get("enclosure_url"),
                      audio_uri=services.raw.uri(audio_key) if audio_key else None,
                      duration_sec=meta.get("duration_sec"),
                      segments=[json.loads(line) for line in lines if line.strip()])
