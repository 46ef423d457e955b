"""The search index every machine of the aws deployment shares: a log of immutable entry objects in the stage
bucket, one per indexed episode, read through a SQLite replica on each machine.

Why not one index file on S3, or an engine that reads S3 (LanceDB was tried: docs/BENCHMARKS.md, "Shared
index"): the SQLite FTS5 index and its int8 vector scan answer in milliseconds because they are local; an
engine on S3 pays its requests on every query. So only the log is shared, and each machine keeps the fast
engine as a replica of it:

- Writing (``transcript_index`` on any task): an episode's entry, its ``EpisodeDoc`` and int8 passage
  vectors, is a new object ``_index/log/<UTC hour>/<time ns>-<random>/<feed>/<guid>.npz``, written with a
  create-only PUT (``If-None-Match: *``). Nothing is ever rewritten, so concurrent writers cannot overwrite
  each other: nothing is lost. Removing an episode writes a ``.gone`` entry the same way.
- Reading (``podrun search``, ``podrun report`` on any machine): the replica lists the entries written since
  its last listing, less ``SKEW_MARGIN_SEC`` for upload time and clock skew between machines (keys sort by
  time: one LIST request from that point, ``StartAfter``), fetches only the entries newer than the ones it
  applied (GET, in parallel) and indexes them; every ``FULL_LIST_SEC``, and on a new machine, it lists the
  whole log instead. Then the replica answers as the local index does.

The newest entry of an episode (by its time and random part) wins; superseded entries stay in the log
(a re-indexed episode's earlier entries: tens of KB each). The replica lives at ``PODINSIGHT_INDEX_PATH``
(under the data root).

Searches (``podrun report``'s top terms) are shared the same way: each is a small create-only object
``_index/searches/<UTC hour>/<time ns>-<random>.json`` ({ts, query, hits}); a report lists the ones
written since its machine's last listing (less the margin) and fetches only those it has not seen.
"""

from __future__ import annotations

import fcntl
import io
import json
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Iterable

from podinsight_dagster.archive.index import (MEANING_FLOOR, EpisodeDoc, Hit, SearchError, TranscriptIndex,
                                              passages_of, search_terms)
from podinsight_dagster.store.objects import ObjectStore

LOG_PREFIX = "_index/log/"
SEARCH_PREFIX = "_index/searches/"
SKEW_MARGIN_SEC = 600   # an entry may appear in a listing this long after the time in its key
FULL_LIST_SEC = 3600    # list the whole log at least this often (a clock further off than the margin)
APPLY_BATCH = 200       # entries indexed into the replica per transaction while syncing
FETCH_THREADS = 16      # entries fetched at once
OPTIMIZE_AFTER = 1000   # entries applied in one sync after which the replica's FTS5 segments are merged


def _hour(ns: int) -> str:
    return time.strftime("%Y%m%d%H", time.gmtime(ns // 10**9))


def entry_key(partition_key: str, gone: bool = False) -> str:
    now = time.time_ns()
    return f"{LOG_PREFIX}{_hour(now)}/{now:020d}-{secrets.token_hex(6)}/{partition_key}.{'gone' if gone else 'npz'}"


def parse_key(key: str) -> tuple[str, str] | None:
    """(partition key, the entry's order: its time and random part) of a log key; None for anything else."""
    parts = key[len(LOG_PREFIX):].split("/")
    if len(parts) != 4 or not parts[3].endswith((".npz", ".gone")):
        return None
    return f"{parts[2]}/{parts[3].rsplit('.', 1)[0]}", parts[1]


def encode_entry(doc: EpisodeDoc, rows) -> bytes:
    """One episode's entry: its document as JSON and its int8 passage vectors, in one .npz (no pickles)."""
    import numpy as np

    buf = io.BytesIO()
    np.savez(buf, doc=np.frombuffer(json.dumps(asdict(doc), ensure_ascii=False).encode(), dtype=np.uint8),
             vectors=np.ascontiguousarray(rows, dtype=np.int8))
    return buf.getvalue()


def decode_entry(data: bytes):
    import numpy as np

    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        doc = EpisodeDoc(**json.loads(npz["doc"].tobytes().decode()))
        return doc, np.array(npz["vectors"], dtype=np.int8)


class SharedTranscriptIndex:
    """The ``ArchiveIndex`` of the aws deployment (see the module's docstring)."""

    def __init__(self, store: ObjectStore, replica_path: Path, create: bool = True, encoder=None,
                 skew_margin_sec: float = SKEW_MARGIN_SEC):
        self.store = store
        self.skew_margin_sec = skew_margin_sec
        self.replica_path = Path(replica_path)
        self._encoder = encoder
        self._replica: TranscriptIndex | None = None
        self._synced = False
        if not create:
            self.sync()
            if self.replica.episode_count() == 0:
                raise SearchError(f"no search index yet at {self.location}: materialize transcript_index "
                                  "(podrun transcribe or podrun demo build it)")

    @property
    def location(self) -> str:
        return self.store.uri(LOG_PREFIX)

    @property
    def replica(self) -> TranscriptIndex:
        if self._replica is None:
            self._replica = TranscriptIndex(self.replica_path, encoder=self._encoder)
            self._replica.conn.executescript(
                "CREATE TABLE IF NOT EXISTS shared_entries (partition_key TEXT PRIMARY KEY, entry_order TEXT NOT NULL);"
                "CREATE TABLE IF NOT EXISTS shared_sync (id INTEGER PRIMARY KEY CHECK (id = 0), "
                "listed_ns INTEGER NOT NULL, full_ns INTEGER NOT NULL);"
                "CREATE TABLE IF NOT EXISTS shared_searches (key TEXT PRIMARY KEY);"
                "CREATE TABLE IF NOT EXISTS shared_search_sync (id INTEGER PRIMARY KEY CHECK (id = 0), "
                "listed_ns INTEGER NOT NULL);")
        return self._replica

    def close(self) -> None:
        if self._replica is not None:
            self._replica.close()

    # -- writing ----------------------------------------------------------------------------------
    def index(self, docs: Iterable[EpisodeDoc], embeddings: dict | None = None) -> dict[str, int]:
        """Write each episode's entry (a new object in the log); passages per episode."""
        from podinsight_dagster.archive import vectors

        counts: dict[str, int] = {}
        embeddings = embeddings or {}
        for doc in docs:
            rows = (vectors.quantize(embeddings[doc.partition_key]) if doc.partition_key in embeddings
                    else self._passage_vectors(doc))
            passages = len(passages_of(doc.segments))
            if len(rows) != passages:
                raise ValueError(f"{doc.partition_key}: {len(rows)} vectors for {passages} passages")
            self._put(entry_key(doc.partition_key), encode_entry(doc, rows))
            counts[doc.partition_key] = passages
        self._synced = False
        return counts

    def _passage_vectors(self, doc: EpisodeDoc):
        """As ``TranscriptIndex.passage_vectors``, without opening a replica (a writing task needs none)."""
        import numpy as np

        from podinsight_dagster.archive import vectors

        texts = [t for t, _, _ in passages_of(doc.segments)]
        if not texts:
            return np.zeros((0, 0), dtype=np.int8)
        if self._encoder is None:
            from podinsight_dagster.chapters.embed import encoder

            self._encoder = encoder()
        return vectors.quantize(self._encoder.encode(texts))

    def _put(self, key: str, data: bytes) -> None:
        if not self.store.put_bytes_if_absent(key, data, content_type="application/octet-stream"):
            raise RuntimeError(f"index entry {key} exists already")  # a random 48-bit part: never seen

    def remove(self, partition_key: str) -> bool:
        """A ``.gone`` entry for the episode (readers drop it); False when the log has no entry for it."""
        newest = self._newest(self.store.list_keys(LOG_PREFIX))
        if partition_key not in newest or newest[partition_key][0].endswith(".gone"):
            return False
        self._put(entry_key(partition_key, gone=True), b"")
        self._synced = False
        return True

    def episode_count(self) -> int:
        """Episodes in the log (from a listing of the whole log: nothing is fetched)."""
        return sum(1 for key, _ in self._newest(self.store.list_keys(LOG_PREFIX)).values()
                   if not key.endswith(".gone"))

    # -- syncing ----------------------------------------------------------------------------------
    @staticmethod
    def _newest(keys: Iterable[str]) -> dict[str, tuple[str, str]]:
        """partition key -> (key, order) of its newest entry among ``keys``."""
        newest: dict[str, tuple[str, str]] = {}
        for key in keys:
            parsed = parse_key(key)
            if parsed is not None and parsed[1] > newest.get(parsed[0], ("", ""))[1]:
                newest[parsed[0]] = (key, parsed[1])
        return newest

    def _listing(self, now: int) -> tuple[dict[str, tuple[str, str]], bool]:
        """The newest entries listed, and whether the whole log was listed.

        Keys sort by time (hour, then nanoseconds), so the entries since the last listing, less the margin,
        are one LIST from that point (``StartAfter``), whatever the size of the log.
        """
        row = self.replica.conn.execute("SELECT listed_ns, full_ns FROM shared_sync").fetchone()
        if row is not None and now - row[1] < FULL_LIST_SEC * 10**9:
            since = row[0] - int(self.skew_margin_sec * 10**9)
            after = f"{LOG_PREFIX}{_hour(since)}/{since:020d}"
            return self._newest(self.store.list_keys(LOG_PREFIX, start_after=after)), False
        return self._newest(self.store.list_keys(LOG_PREFIX)), True

    def sync(self) -> dict[str, int]:
        """Bring the replica up to the log: {"fetched": n, "removed": n}.

        Under a file lock beside the replica, so two searches on one machine do not fetch the same entries.
        """
        replica = self.replica
        with self._machine_lock():
            now = time.time_ns()  # before listing: the next listing starts from here (less the margin)
            newest, whole = self._listing(now)
            applied = dict(replica.conn.execute("SELECT partition_key, entry_order FROM shared_entries"))
            todo = sorted(key for pk, (key, order) in newest.items() if order > applied.get(pk, ""))
            gone = [parse_key(k)[0] for k in todo if k.endswith(".gone")]
            if whole:  # in the replica, not in the log (a log emptied by hand): not in the archive any more
                gone += [pk for pk in applied if pk not in newest]
            fetch = [k for k in todo if k.endswith(".npz")]
            with ThreadPoolExecutor(max_workers=FETCH_THREADS, thread_name_prefix="index-sync") as pool:
                for at in range(0, len(fetch), APPLY_BATCH):
                    batch = fetch[at:at + APPLY_BATCH]
                    entries = [(key, *decode_entry(data))
                               for key, data in zip(batch, pool.map(self.store.get_bytes, batch))]
                    replica.index([doc for _, doc, _ in entries],
                                  int8_rows={doc.partition_key: rows for _, doc, rows in entries})
                    self._applied([(doc.partition_key, parse_key(key)[1]) for key, doc, _ in entries])
            for pk in gone:
                replica.remove(pk)
            # A .gone entry's order is kept: the episode's older entries are not applied again.
            self._applied([parse_key(k) for k in todo if k.endswith(".gone")])
            with replica.conn:
                replica.conn.execute("INSERT INTO shared_sync (id, listed_ns, full_ns) VALUES (0, ?, ?) "
                                     "ON CONFLICT (id) DO UPDATE SET listed_ns = excluded.listed_ns, "
                                     "full_ns = CASE WHEN ? THEN excluded.full_ns ELSE shared_sync.full_ns END",
                                     (now, now, whole))
            if len(fetch) >= OPTIMIZE_AFTER:
                replica.optimize()  # a bulk catch-up (a new machine): merged FTS5 segments search faster
        self._synced = True
        return {"fetched": len(fetch), "removed": len(gone)}

    @contextmanager
    def _machine_lock(self):
        """Held while syncing, so two commands on one machine do not fetch (and apply) the same objects."""
        with open(self.replica_path.with_name(self.replica_path.name + ".sync-lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _applied(self, rows: list[tuple[str, str]]) -> None:
        with self.replica.conn:
            self.replica.conn.executemany(
                "INSERT INTO shared_entries (partition_key, entry_order) VALUES (?, ?) "
                "ON CONFLICT (partition_key) DO UPDATE SET entry_order = excluded.entry_order", rows)

    def _read(self) -> TranscriptIndex:
        if not self._synced:
            self.sync()
        return self.replica

    # -- reading: the replica's, once synced --------------------------------------------------------
    def stats(self) -> dict:
        return self._read().stats()

    def feeds(self) -> list[str]:
        return self._read().feeds()

    def search(self, phrase: str, feed: str | None = None, limit: int = 10, log: bool = True,
               mark: tuple[str, str] = ("**", "**")) -> list[Hit]:
        hits = self._read().search(phrase, feed=feed, limit=limit, log=False, mark=mark)
        if log:
            self.log_search(phrase, len(hits))
        return hits

    def search_meaning(self, question: str, feed: str | None = None, limit: int = 10, hybrid: bool = True,
                       log: bool = True, floor: float = MEANING_FLOOR) -> list[Hit]:
        hits = self._read().search_meaning(question, feed=feed, limit=limit, hybrid=hybrid, log=False, floor=floor)
        if log:
            self.log_search(question, len(hits))
        return hits

    # -- the searches every machine made ----------------------------------------------------------
    def log_search(self, phrase: str, hits: int) -> None:
        """The search as an object in the shared search log, and in this machine's replica (seen already)."""
        now = time.time_ns()
        key = f"{SEARCH_PREFIX}{_hour(now)}/{now:020d}-{secrets.token_hex(6)}.json"
        record = {"ts": now / 1e9, "query": search_terms(phrase), "hits": hits}
        self._put(key, json.dumps(record).encode())
        self.replica.log_search(phrase, hits, ts=record["ts"])
        with self.replica.conn:
            self.replica.conn.execute("INSERT OR IGNORE INTO shared_searches (key) VALUES (?)", (key,))

    def sync_searches(self) -> int:
        """Bring every machine's searches written since the last listing (less the margin) into the replica;
        returns how many were new here. One LIST, one GET per search not seen before."""
        with self._machine_lock():
            return self._sync_searches()

    def _sync_searches(self) -> int:
        conn = self.replica.conn
        now = time.time_ns()
        row = conn.execute("SELECT listed_ns FROM shared_search_sync").fetchone()
        after = ""
        if row is not None:
            since = row[0] - int(self.skew_margin_sec * 10**9)
            after = f"{SEARCH_PREFIX}{_hour(since)}/{since:020d}"
        listed = [k for k in self.store.list_keys(SEARCH_PREFIX, start_after=after) if k.endswith(".json")]
        seen = {k for (k,) in conn.execute("SELECT key FROM shared_searches WHERE key > ?", (after,))}
        new = [k for k in listed if k not in seen]
        with ThreadPoolExecutor(max_workers=FETCH_THREADS, thread_name_prefix="search-sync") as pool:
            records = [json.loads(data) for data in pool.map(self.store.get_bytes, new)]
        with conn:
            conn.executemany("INSERT INTO searches (ts, query, hits) VALUES (?, ?, ?)",
                             [(r["ts"], r["query"], r["hits"]) for r in records])
            conn.executemany("INSERT INTO shared_searches (key) VALUES (?)", [(k,) for k in new])
            conn.execute("INSERT INTO shared_search_sync (id, listed_ns) VALUES (0, ?) "
                         "ON CONFLICT (id) DO UPDATE SET listed_ns = excluded.listed_ns", (now,))
        return len(new)

    def top_searches(self, n: int = 5) -> list[tuple[str, int]]:
        replica = self._read()
        self.sync_searches()
        return replica.top_searches(n)

    def hits_by_month(self, phrase: str) -> dict[str, int]:
        return self._read().hits_by_month(phrase)
