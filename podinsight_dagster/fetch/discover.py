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
FEED_ACCEPT = "application/rss+xml, application/atom+xml, application/xml;q=0.9, */*;q=0.5"


@dataclass
class FeedResult:
    slug: str
    url: str
    status: str            # "ok", "not_modified", "failed", or "partial" (a later page failed: see error)
    episodes: int = 0
    new: int = 0
    error: str | None = None
    skipped: list[str] = field(default_factory=list)
    pages: int = 1         # feed documents fetched (paged feeds: RFC 5005 rel="next")


@dataclass
class Discovery:
    feeds: list[FeedResult]
    new_partition_keys: list[str]
    manifest_rows: list[dict]
    manifest_key: str | None = None
    manifest_path: Path | None = None
    # A dry run's episodes that a real run would register (they are in manifest_rows, not in the store).
    unregistered: list[EpisodeRecord] = field(default_factory=list)


@dataclass
class PageWalk:
    """What the pages of a paged feed (RFC 5005 ``rel="next"``) gave in one poll."""

    episodes: list = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    requests: int = 0                 # pages fetched after the first
    resume_url: str | None = None     # the page the next poll continues at (bound reached, or a page failed)
    failed: str | None = None         # which page failed, and why


def walk_pages(services: Services, slug: str, next_url: str | None, *, seen: set[str], known: set[str] | None,
               max_pages: int, resume_url: str | None = None, first_page_number: int = 2) -> PageWalk:
    """Follow ``rel="next"`` from ``next_url``: every page when ``known`` is None (the first poll, a
    back-catalogue), else only while a page holds an episode not in ``known``; then, if ``resume_url``
    is given, the back-catalogue an earlier poll left unread, from there. ``max_pages`` pages at most
    are fetched; a page URL already read (``seen``, updated) ends the walk (a loop). A page that fails
    ends the walk too: the pages before it are kept, and it becomes the place to resume.
    """
    walk = PageWalk()
    number = first_page_number
    legs = [(next_url, known), (resume_url, None)] if resume_url else [(next_url, known)]
    for url, only_while_new_in in legs:
        while url and url not in seen:
            if walk.requests >= max_pages:
                walk.resume_url = url
                return walk
            seen.add(url)
            walk.requests += 1
            try:
                got = services.http.fetch_bytes(url, accept=FEED_ACCEPT)
                page = parse_feed(got.content, source=f"feed {slug} page {number}", base_url=got.final_url or url)
            except (FetchError, FeedParseError) as exc:
                walk.failed = f"page {number} ({url}) failed: {exc}".replace("\n", " ")
                walk.resume_url = url
                return walk
            walk.episodes += page.episodes
            walk.skipped += page.skipped
            number += 1
            if only_while_new_in is not None and not any(e.guid_key not in only_while_new_in for e in page.episodes):
                break  # a later poll: this page held nothing new, so neither do the older ones
            url = page.next_page_url
    return walk


def _known_keys(services: Services, slug: str) -> set[str]:
    return {r.guid_key for r in services.checkpoints.episodes(feed_slug=slug)}


def _poll_feed(services: Services, spec: FeedSpec, guid_owners: _GuidOwners | None = None, *,
               record: bool = True) -> tuple[FeedResult, list[EpisodeRecord]]:
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
                     episodes=known.episodes if same else 0, resume_url=known.resume_url if same else None,
                     podcast_guid=known.podcast_guid if known else None)
    # The first poll of a feed walks its whole back-catalogue; later ones only the pages with something new.
    first_poll = not same or not known.episodes
    max_pages = max(1, services.settings.feed_max_pages) - 1  # the first page counts
    fetch_url = rec.effective_url or spec.url
    try:
        first = services.http.fetch_bytes(fetch_url, etag=rec.etag, last_modified=rec.last_modified,
                                          accept=FEED_ACCEPT)
        if first.not_modified:
            if first.permanent_redirect:  # moved, though unchanged: poll the new address from now on
                rec.effective_url = first.permanent_redirect
            if rec.resume_url:  # unchanged, but its back-catalogue is not all read yet
                return _finish(services, store, spec, rec, fetch_url, [], [], walk_pages(
                    services, spec.slug, None, seen={fetch_url}, known=None, max_pages=max_pages,
                    resume_url=rec.resume_url), first=None, feed=None)
            rec.last_status, rec.last_error, rec.checked_at = "not_modified", None, time.time()
            store.upsert_feed(rec)
            return FeedResult(spec.slug, fetch_url, "not_modified", episodes=rec.episodes), []
        # Relative enclosure, transcript and chapters URLs resolve against where the bytes came from.
        feed = parse_feed(first.content, source=f"feed {spec.slug} ({fetch_url})",
                          base_url=first.final_url or fetch_url)
    except (FetchError, FeedParseError) as exc:
        rec.last_status, rec.last_error, rec.checked_at = "failed", str(exc), time.time()
        store.upsert_feed(rec)
        return FeedResult(spec.slug, fetch_url, "failed", error=str(exc)), []
    # <podcast:guid> is the show's identity, whatever its address: the same show at a new catalog URL keeps
    # its state (no second walk of its back-catalogue), another show under this slug or this show under
    # two slugs would mix or double its episodes, so those fail and say why.
    problem = None
    pg = feed.podcast_guid
    owner = guid_owners.get(pg) if pg and guid_owners is not None else None
    if owner and owner != spec.slug:
        problem = (f"the same show as feed {owner} (podcast:guid {pg}), whose episodes are polled there; "
                   "remove one of the two from the catalog")
    elif pg and known is not None and not same and known.podcast_guid:
        if known.podcast_guid != pg:
            problem = (f"{fetch_url} is another show (podcast:guid {pg}) than the one this slug has polled "
                       f"(podcast:guid {known.podcast_guid}); give it its own slug")
        else:  # moved: the same show, so the same episodes and the same place in its back-catalogue
            first_poll = False
            rec.episodes, rec.resume_url = known.episodes, known.resume_url
    if problem:
        rec.last_status, rec.last_error, rec.checked_at = "failed", problem, time.time()
        store.upsert_feed(rec)
        return FeedResult(spec.slug, fetch_url, "failed", error=problem), []
    rec.podcast_guid = pg or rec.podcast_guid
    walk = PageWalk()
    if feed.next_page_url or rec.resume_url:
        known_keys = None if first_poll else _known_keys(services, spec.slug)
        head_new = known_keys is None or any(e.guid_key not in known_keys for e in feed.episodes)
        walk = walk_pages(services, spec.slug, feed.next_page_url if head_new else None,
                          seen={fetch_url, first.final_url or fetch_url}, known=known_keys, max_pages=max_pages,
                          resume_url=rec.resume_url)
    return _finish(services, store, spec, rec, fetch_url, feed.episodes, feed.skipped, walk, first=first, feed=feed)


def _finish(services: Services, store, spec: FeedSpec, rec: FeedRecord, fetch_url: str, episodes: list,
            skipped: list[str], walk: PageWalk, *, first, feed) -> tuple[FeedResult, list[EpisodeRecord]]:
    """Record (in ``store``) a poll that read the first page (``first``, ``feed``) or only resumed a back-catalogue."""
    episodes, skipped = list(episodes) + walk.episodes, list(skipped) + walk.skipped
    if first is not None:
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
            download_url=ep.download.url if ep.download else None,
            download_integrity=ep.download.integrity if ep.download else None,
        ))
    paged = walk.requests or walk.resume_url or rec.resume_url
    # A paged feed's episodes are those of every poll (a later poll reads only its newest pages).
    total = len(_known_keys(services, spec.slug) | seen) if paged else len(records)
    rec.resume_url = walk.resume_url
    status = "partial" if walk.failed else "ok"
    rec.last_status, rec.last_error, rec.checked_at, rec.episodes = status, walk.failed, time.time(), total
    store.upsert_feed(rec)
    return FeedResult(spec.slug, fetch_url, status, episodes=total, skipped=skipped, error=walk.failed,
                      pages=1 + walk.requests if first is not None else walk.requests), records


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


class _GuidOwners:
    """Which slug owns a podcast:guid recorded under several being polled (the first by name: stable across
    ticks); read from the checkpoint store once, when the first feed with a podcast:guid asks."""

    def __init__(self, services: Services, polling: set[str]):
        self._services, self._polling = services, polling
        self._lock = threading.Lock()
        self._owners: dict[str, str] | None = None

    def get(self, podcast_guid: str) -> str | None:
        with self._lock:
            if self._owners is None:
                self._owners = {}
                for known in sorted(self._services.checkpoints.feeds(), key=lambda f: f.slug):
                    if known.podcast_guid and known.slug in self._polling:
                        self._owners.setdefault(known.podcast_guid, known.slug)
            return self._owners.get(podcast_guid)


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
    guid_owners = _GuidOwners(services, {spec.slug for spec in specs})

    def poll(_task: int) -> tuple[FeedResult, list[EpisodeRecord]] | None:
        nonlocal started
        with lock:  # claim the next feed; the deadline is checked under the same lock
            if started and deadline is not None and time.monotonic() >= deadline:
                return None
            spec = specs[started]
            started += 1
        return _poll_feed(services, spec, guid_owners, record=record)

    results: list[FeedResult] = []
    new_keys: list[str] = []
    unregistered: list[EpisodeRecord] = []
    with ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="feed") as pool:
        for out in pool.map(poll, range(len(specs))):
            if out is None:
                continue
            result, records = out
            if records and record:
                added = services.checkpoints.register_episodes(records, from_feed=True)
                result.new = len(added)
                new_keys += added
            elif records:
                fresh = [r for r in records if services.checkpoints.get(r.partition_key) is None]
                result.new = len(fresh)
                unregistered += fresh
            results.append(result)
    return results, new_keys, list(specs[started:]), unregistered


def newest_per_feed(episodes: Sequence[tuple[str, str, str | None]], n: int) -> set[str]:
    """The keys of the newest ``n`` episodes of each feed, from (partition_key, feed_slug, published ISO) tuples.

    Newest by publication date; episodes without one count as oldest, in their given order (a feed's
    order is newest first unless it is serial).
    """
    by_feed: dict[str, list[tuple[int, str | None, str]]] = {}
    for i, (key, slug, published) in enumerate(episodes):
        by_feed.setdefault(slug, []).append((i, published, key))
    keep: set[str] = set()
    for rows in by_feed.values():
        dated = sorted((r for r in rows if r[1]), key=lambda r: (r[1], -r[0]), reverse=True)
        undated = [r for r in rows if not r[1]]
        keep.update(key for _, _, key in (dated + undated)[:n])
    return keep


def manifest_csv(rows: list[dict]) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=MANIFEST_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in MANIFEST_COLUMNS})
    return buf.getvalue().encode("utf-8")


def read_manifest(data: bytes) -> list[dict]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"))))


