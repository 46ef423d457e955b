"""Search by meaning over the transcript index: passage embeddings ranked by cosine similarity, fused with BM25.

A mixin of ``TranscriptIndex`` (archive/index.py): it reads the index's connection and vector file.
"""

from __future__ import annotations

import re
import sqlite3

from podinsight_dagster.archive import vectors
from podinsight_dagster.archive.passages import ROWID_SHIFT, Hit, SearchError, with_offset

RRF_K = 60                # reciprocal rank fusion: score = sum 1 / (RRF_K + rank)
HYBRID_DEPTH = 100        # candidates taken from each ranking before fusing
# Search by meaning leaves out passages whose cosine similarity to the question is below this. Measured
# (bench/relevance_floor.py; docs/BENCHMARKS.md, "Relevance floor") on the demo's nine transcripts and the
# tests' five topic episodes: the episode a question is about had its best passage at 0.31-0.72 (16
# questions), while the best passage for a question no episode answers scored 0.07-0.19 (10 questions).
MEANING_FLOOR = 0.25


class MeaningSearch:
    """Search by meaning, for ``TranscriptIndex`` (which provides ``conn``, ``path`` and ``encoder``)."""

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
            self.log_search(question, len(hits))
        return hits
