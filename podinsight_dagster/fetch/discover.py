"""generate_manifest.py (run-book §3.3 step 1): poll every feed, register its episodes, write manifest.csv."""

from __future__ import annotations

import csv
import io
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from podinsight_dagster.fetch.catalog import Catalog, FeedSpec
from podinsight_dagster.fetch.feeds import FeedParseError, parse_feed
from podinsight_dagster.fetch.http import FetchError
from podinsight_dagster.store.checkpoints import EpisodeRecord, FeedRecord
from podinsight_dagster.store.keys import partition_key
from podinsight_dagster.store.objects import atomic_writer

if TYPE_CHECKING:
    from podinsight_dagster.services import Services

MANIFEST_COLUMNS = ["partition_key", "feed_slug", "guid_key", "guid", "title", "published",
                    "enclosure_url", "enclosure_type", "enclosure_length", "duration_sec", "tier"]
MAX_FEED_PAGES = 20
FEED_ACCEPT = "application/rss+xml, application/atom+xml, application/xml;q=0.9, */*;q=0.5"


@dataclass
class FeedResult:
    slug: str
    url: str
    status: str            # "ok", "not_modified" or "failed"
    episodes: int = 0
    new: int = 0
    error: str | None = None
    skipped: list[str] = field(default_factory=list)


@dataclass
class Discovery:
    feeds: list[FeedResult]
    new_partition_keys: list[str]
    manifest_rows: list[dict]
    manifest_key: str | None = None
    manifest_path: Path | None = None
    # A dry run's episodes that a real run would register (they are in manifest_rows, not in the store).
    unregistered: list[EpisodeRecord] = field(default_factory=list)


def _poll_feed(services: Services, spec: FeedSpec, *, record: bool = True) -> tuple[FeedResult, list[EpisodeRecord]]:
    """Poll one feed; ``record=False`` (a dry run) writes nothing, not even the feed's validators."""
    store = services.checkpoints
    if not record:
        store = _NoFeedWrites(store)
    known = store.get_feed(spec.slug)
    # Validators and a moved feed's new address hold only while the catalog names the same URL.
    same = known is not None and known.url == spec.url
    rec = FeedRecord(slug=spec.slug, url=spec.url, tier=spec.tier,
                     effective_url=(known.effective_url if same else None),
                     etag=known.etag if same else None, last_modified=known.last_modified if same else None,
                     episodes=known.episodes if same else 0)
    fetch_url = rec.effective_url or spec.url
    try:
        first = services.http.fetch_bytes(fetch_url, etag=rec.etag, last_modified=rec.last_modified,
                                          accept=FEED_ACCEPT)
        if first.not_modified:
            if first.permanent_redirect:  # moved, though unchanged: poll the new address from now on
                rec.effective_url = first.permanent_redirect
            rec.last_status, rec.last_error, rec.checked_at = "not_modified", None, time.time()
            store.upsert_feed(rec)
            return FeedResult(spec.slug, fetch_url, "not_modified", episodes=rec.episodes), []
        # Relative enclosure, transcript and chapters URLs resolve against where the bytes came from.
        feed = parse_feed(first.content, source=f"feed {spec.slug} ({fetch_url})",
                          base_url=first.final_url or fetch_url)
        episodes, skipped = list(feed.episodes), list(feed.skipped)
        next_url, pages = feed.next_page_url, 1
        while next_url and pages < MAX_FEED_PAGES:
            got = services.http.fetch_bytes(next_url, accept=FEED_ACCEPT)
            page = parse_feed(got.content, source=f"feed {spec.slug} page {pages + 1}",
                              base_url=got.final_url or next_url)
            episodes += page.episodes
            skipped += page.skipped
            next_url, pages = page.next_page_url, pages + 1
    except (FetchError, FeedParseError) as exc:
        rec.last_status, rec.last_error, rec.checked_at = "failed", str(exc), time.time()
        store.upsert_feed(rec)
        return FeedResult(spec.slug, fetch_url, "failed", error=str(exc)), []
    # A permanent redirect or itunes:new-feed-url moves the feed: poll the new address from now on
    # (new-feed-url wins: it is the publisher's explicit word).
    rec.etag, rec.last_modified = first.etag, first.last_modified
    if first.permanent_redirect:
        # The validators came from the new address, where the redirect led: they stay valid.
        rec.effective_url = first.permanent_redirect
    new_url = feed.new_feed_url
    if new_url and new_url not in (fetch_url, rec.effective_url) and new_url.startswith(("http://", "https://")):
        rec.effective_url = new_url
        rec.etag = rec.last_modified = None  # these validators belong to the address we left
    records, seen = [], set()
    for ep in episodes:
        if ep.guid_key in seen:
            continue
        seen.add(ep.guid_key)
        records.append(EpisodeRecord(
            partition_key=partition_key(spec.slug, ep.guid_key), feed_slug=spec.slug, guid_key=ep.guid_key,
            guid=ep.guid, title=ep.title, enclosure_url=ep.enclosure_url, enclosure_type=ep.enclosure_type,
            enclosure_length=ep.enclosure_length, published=ep.published, duration_hint_sec=ep.duration_sec,
            transcripts_json=json.dumps([vars(t) for t in ep.transcripts]) if ep.transcripts else None,
            persons_json=json.dumps([vars(p) for p in ep.persons]) if ep.persons else None,
            chapters_url=ep.chapters_url, description=ep.description,
        ))
    rec.last_status, rec.last_error, rec.checked_at, rec.episodes = "ok", None, time.time(), len(records)
    store.upsert_feed(rec)
    return FeedResult(spec.slug, fetch_url, "ok", episodes=len(records), skipped=skipped), records


class _NoFeedWrites:
    """A checkpoint store whose feed writes go nowhere (a dry run polls feeds but changes nothing)."""

    def __init__(self, store):
        self._store = store

    def get_feed(self, slug: str) -> FeedRecord | None:
        return self._store.get_feed(slug)

    def upsert_feed(self, rec: FeedRecord) -> None:
        pass


def discover(services: Services, catalog: Catalog, *, write_manifest: bool = True, dry_run: bool = False,
             today: datetime | None = None, max_workers: int = 8) -> Discovery:
    """Poll every feed (one failing feed never stops the others), register episodes, write the manifest.

    ``dry_run``: poll, but write nothing (no episodes, no feed validators, no manifest); the episodes a
    real run would register are returned in ``unregistered`` and listed in ``manifest_rows``.
    """
    results, new_keys, _, unregistered = _poll(services, catalog.feeds, max_workers=max_workers, record=not dry_run)
    tiers = {f.slug: f.tier for f in catalog.feeds}
    rows = []
    for slug in tiers:
        known = services.checkpoints.episodes(feed_slug=slug)
        for rec in known + [r for r in unregistered if r.feed_slug == slug]:
            rows.append({
                "partition_key": rec.partition_key, "feed_slug": rec.feed_slug, "guid_key": rec.guid_key,
                "guid": rec.guid, "title": rec.title, "published": rec.published,
                "enclosure_url": rec.enclosure_url, "enclosure_type": rec.enclosure_type,
                "enclosure_length": rec.enclosure_length, "duration_sec": rec.duration_hint_sec,
                "tier": tiers[slug],
            })
    discovery = Discovery(feeds=results, new_partition_keys=new_keys, manifest_rows=rows, unregistered=unregistered)
    if write_manifest and not dry_run:
        data = manifest_csv(rows)
        day = (today or datetime.now(timezone.utc)).strftime("%Y%m%d")
        discovery.manifest_key = f"{day}.csv"
        services.manifests.put_bytes(discovery.manifest_key, data, content_type="text/csv")
        local = services.settings.home / "manifest.csv"
        with atomic_writer(local) as fh:
            fh.write(data)
        discovery.manifest_path = local
    return discovery


def poll_feeds(services: Services, specs: Sequence[FeedSpec], *, deadline: float | None = None,
               max_workers: int = 8) -> tuple[list[FeedResult], list[str], list[FeedSpec]]:
    """Poll ``specs`` in order, ``max_workers`` at a time, and register their episodes in the checkpoint store.

    Returns the results of the feeds polled, the partition keys new to the checkpoint store, and the
    feeds left unpolled. With a ``deadline`` (a ``time.monotonic()`` value) no feed starts after it:
    feeds already in flight finish, the others are returned unpolled. Feeds start strictly in order,
    so the unpolled ones are the tail of ``specs``; the first always starts, so a caller that resumes
    from the first unpolled feed always moves on.
    """
    results, new_keys, unpolled, _ = _poll(services, specs, deadline=deadline, max_workers=max_workers)
    return results, new_keys, unpolled


def _poll(services: Services, specs: Sequence[FeedSpec], *, deadline: float | None = None, max_workers: int = 8,
          record: bool = True) -> tuple[list[FeedResult], list[str], list[FeedSpec], list[EpisodeRecord]]:
    """poll_feeds; with ``record=False`` nothing is written and the episodes new to the store are returned."""
    lock = threading.Lock()
    started = 0

    def poll(_task: int) -> tuple[FeedResult, list[EpisodeRecord]] | None:
        nonlocal started
        with lock:  # claim the next feed; the deadline is checked under the same lock
            if started and deadline is not None and time.monotonic() >= deadline:
                return None
            spec = specs[started]
            started += 1
        return _poll_feed(services, spec, record=record)

    results: list[FeedResult] = []
    new_keys: list[str] = []
    unregistered: list[EpisodeRecord] = []
    with ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="feed") as pool:
        for out in pool.map(poll, range(len(specs))):
            if out is None:
                continue
            result, records = out
            if records and record:
                added = services.checkpoints.register_episodes(records)
                result.new = len(added)
                new_keys += added
            elif records:
                fresh = [r for r in records if services.checkpoints.get(r.partition_key) is None]
                result.new = len(fresh)
                unregistered += fresh
            results.append(result)
    return results, new_keys, list(specs[started:]), unregistered


def manifest_csv(rows: list[dict]) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=MANIFEST_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in MANIFEST_COLUMNS})
    return buf.getvalue().encode("utf-8")


def read_manifest(data: bytes) -> list[dict]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"))))


