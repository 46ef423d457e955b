"""The search index every machine of the aws deployment shares: one immutable object per indexed episode in
the stage bucket, read through a SQLite replica on each machine.

Why not one index file on S3 or an engine on S3 (LanceDB was tried, docs/BENCHMARKS.md "Shared index"):
the SQLite FTS5 index and its int8 vector scan answer in milliseconds because they are local; an engine
reading S3 on every query pays its requests on every query. So the shared part is only a log of what was
indexed, and each machine keeps the fast engine as a replica of it:

- Writing (``transcript_index`` on any task): an episode's entry, its ``EpisodeDoc`` and int8 passage
  vectors, is written as a new object ``_index/entries/<feed>/<guid>/<time ns>-<random>.npz`` with a
  create-only PUT (``If-None-Match: *``); then the episode's older entries are deleted. No object is ever
  rewritten, so concurrent writers cannot overwrite each other: nothing is lost.
- Reading (``podrun search``, ``podrun report`` on any machine): the entries are listed (one LIST request
  per 1,000 episodes), the newest of each episode compared with the entry the replica last applied, and
  only the new or changed ones are fetched (GET, in parallel) and indexed into the replica; an episode
  whose entries are all gone is removed from it. Then the replica answers as the local index does.

Re-indexing the same episode on two machines at once leaves two entries; the newest by key wins (the
same segments either way). The replica lives at ``PODINSIGHT_INDEX_PATH`` (under the data root); a
machine's searches (``podrun report``'s top terms) are logged in its own replica.
"""

from __future__ import annotations

import fcntl
import io
import json
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Iterable

from podinsight_dagster.archive.index import (MEANING_FLOOR, EpisodeDoc, Hit, SearchError, TranscriptIndex,
                                              passages_of)
from podinsight_dagster.store.objects import ObjectStore

ENTRIES_PREFIX = "_index/entries/"
APPLY_BATCH = 200      # entries indexed into the replica per transaction while syncing
FETCH_THREADS = 16     # entries fetched at once


def entry_key(doc: EpisodeDoc) -> str:
    return f"{ENTRIES_PREFIX}{doc.feed_slug}/{doc.guid_key}/{time.time_ns():020d}-{secrets.token_hex(6)}.npz"


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

    def __init__(self, store: ObjectStore, replica_path: Path, create: bool = True, encoder=None):
        self.store = store
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
        return self.store.uri(ENTRIES_PREFIX)

    @property
    def replica(self) -> TranscriptIndex:
        if self._replica is None:
            self._replica = TranscriptIndex(self.replica_path, encoder=self._encoder)
            self._replica.conn.execute("CREATE TABLE IF NOT EXISTS shared_entries ("
                                       "partition_key TEXT PRIMARY KEY, entry_key TEXT NOT NULL)")
        return self._replica

    def close(self) -> None:
        if self._replica is not None:
            self._replica.close()

    # -- writing ----------------------------------------------------------------------------------
    def index(self, docs: Iterable[EpisodeDoc], embeddings: dict | None = None) -> dict[str, int]:
        """Write each episode's entry (a new object), then delete its older entries; passages per episode."""
        from podinsight_dagster.archive import vectors

        counts: dict[str, int] = {}
        embeddings = embeddings or {}
        for doc in docs:
            rows = (vectors.quantize(embeddings[doc.partition_key]) if doc.partition_key in embeddings
                    else self._passage_vectors(doc))
            passages = len(passages_of(doc.segments))
            if len(rows) != passages:
                raise ValueError(f"{doc.partition_key}: {len(rows)} vectors for {passages} passages")
            key = entry_key(doc)
            if not self.store.put_bytes_if_absent(key, encode_entry(doc, rows), content_type="application/x-npz"):
                raise RuntimeError(f"index entry {key} exists already")  # a random 48-bit suffix: never seen
            for old in self._entries_of(doc.feed_slug, doc.guid_key):
                if old < key:
                    self.store.delete(old)
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

    def _entries_of(self, feed_slug: str, guid_key: str) -> list[str]:
        return sorted(self.store.list_keys(f"{ENTRIES_PREFIX}{feed_slug}/{guid_key}/"))

    def remove(self, partition_key: str) -> bool:
        feed_slug, guid_key = partition_key.split("/", 1)
        keys = self._entries_of(feed_slug, guid_key)
        for key in keys:
            self.store.delete(key)
        self._synced = False
        return bool(keys)

    def episode_count(self) -> int:
        """Episodes with an entry (from the listing alone: nothing is fetched)."""
        return len(self._newest_entries())

    # -- syncing ----------------------------------------------------------------------------------
    def _newest_entries(self) -> dict[str, str]:
        newest: dict[str, str] = {}
        for key in self.store.list_keys(ENTRIES_PREFIX):
            parts = key[len(ENTRIES_PREFIX):].split("/")
            if len(parts) != 3 or not parts[2].endswith(".npz"):
                continue
            pk = f"{parts[0]}/{parts[1]}"
            if key > newest.get(pk, ""):
                newest[pk] = key
        return newest

    def sync(self) -> dict[str, int]:
        """Bring the replica up to the entries in the bucket: {"fetched": n, "removed": n}.

        Under a file lock beside the replica, so two searches on one machine do not fetch the same entries.
        """
        replica = self.replica
        self.replica_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.replica_path.with_name(self.replica_path.name + ".sync-lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            newest = self._newest_entries()
            applied = dict(replica.conn.execute("SELECT partition_key, entry_key FROM shared_entries"))
            todo = sorted(key for pk, key in newest.items() if applied.get(pk) != key)
            gone = sorted(pk for pk in applied if pk not in newest)
            with ThreadPoolExecutor(max_workers=FETCH_THREADS, thread_name_prefix="index-sync") as pool:
                for at in range(0, len(todo), APPLY_BATCH):
                    batch = todo[at:at + APPLY_BATCH]
                    entries = []
                    for key, data in zip(batch, pool.map(self._get_or_none, batch)):
                        if data is not None:  # replaced (deleted) since the listing: the newer one comes next time
                            entries.append((key, *decode_entry(data)))
                    if not entries:
                        continue
                    replica.index([doc for _, doc, _ in entries],
                                  int8_rows={doc.partition_key: rows for _, doc, rows in entries})
                    with replica.conn:
                        replica.conn.executemany(
                            "INSERT INTO shared_entries (partition_key, entry_key) VALUES (?, ?) "
                            "ON CONFLICT (partition_key) DO UPDATE SET entry_key = excluded.entry_key",
                            [(doc.partition_key, key) for key, doc, _ in entries])
            for pk in gone:
                replica.remove(pk)
                with replica.conn:
                    replica.conn.execute("DELETE FROM shared_entries WHERE partition_key = ?", (pk,))
        self._synced = True
        return {"fetched": len(todo), "removed": len(gone)}

    def _get_or_none(self, key: str) -> bytes | None:
        try:
            return self.store.get_bytes(key)
        except FileNotFoundError:
            return None

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
        return self._read().search(phrase, feed=feed, limit=limit, log=log, mark=mark)

    def search_meaning(self, question: str, feed: str | None = None, limit: int = 10, hybrid: bool = True,
                       log: bool = True, floor: float = MEANING_FLOOR) -> list[Hit]:
        return self._read().search_meaning(question, feed=feed, limit=limit, hybrid=hybrid, log=log, floor=floor)

    def top_searches(self, n: int = 5) -> list[tuple[str, int]]:
        return self._read().top_searches(n)

    def hits_by_month(self, phrase: str) -> dict[str, int]:
        return self._read().hits_by_month(phrase)
