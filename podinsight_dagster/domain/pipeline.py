"""The run-book's Phase 1 steps as plain functions over a ``Services`` bundle.

discover      generate_manifest.py: feeds -> manifest.csv, episodes registered
download      backfill.py --mode fetch: enclosure -> raw audio + meta.json

Phase 2 (transcribe, segments, kpis) lives in stage.py.

Dagster assets, ``podrun`` and a Pipes GPU worker all call these; none of them
re-implements a step. Each step is idempotent: re-running it after a crash
redoes at most the episode that was in flight.
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from . import layout
from .budget import Budget
from .catalog import Catalog, FeedSpec
from .checkpoints import (DOWNLOADED, TRANSCRIBED, EpisodeRecord, FeedRecord, SqliteCheckpointStore)
from .feeds import FeedParseError, parse_feed
from .http import FetchError, HttpClient, HttpConfig
from .keys import EpisodeKey, partition_key
from .kpis import Prices
from .metrics import Metric, MetricsSink, SqliteMetrics
from .netpolicy import NetworkPolicy
from .settings import MANIFEST_BUCKET, RAW_BUCKET, STAGE_BUCKET, Settings
from .storage import LocalObjectStore, ObjectStore
from .transcribe import TranscribeOptions

MANIFEST_COLUMNS = ["partition_key", "feed_slug", "guid_key", "guid", "title", "published",
                    "enclosure_url", "enclosure_type", "enclosure_length", "duration_sec", "tier"]
MAX_FEED_PAGES = 20
FEED_ACCEPT = "application/rss+xml, application/atom+xml, application/xml;q=0.9, */*;q=0.5"


class StepError(RuntimeError):
    """One episode's step failed; ``retryable`` says whether a later attempt may succeed."""

    def __init__(self, message: str, retryable: bool = False):
        super().__init__(message)
        self.retryable = retryable


@dataclass
class Services:
    settings: Settings
    raw: ObjectStore
    stage: ObjectStore
    manifests: ObjectStore
    checkpoints: SqliteCheckpointStore
    http: HttpClient
    metrics: MetricsSink
    transcribe_options: TranscribeOptions
    budget: Budget
    prices: Prices = field(default_factory=Prices)

    @classmethod
    def local(cls, settings: Settings, *, http_config: HttpConfig | None = None,
              transcribe_options: TranscribeOptions | None = None) -> "Services":
        settings.ensure_dirs()
        checkpoints = SqliteCheckpointStore(settings.checkpoint_db)
        prices = Prices()
        return cls(
            settings=settings,
            raw=LocalObjectStore(settings.raw_root, RAW_BUCKET),
            stage=LocalObjectStore(settings.stage_root, STAGE_BUCKET),
            manifests=LocalObjectStore(settings.manifests_root, MANIFEST_BUCKET),
            checkpoints=checkpoints,
            http=HttpClient(http_config, NetworkPolicy.parse(settings.allow_private_networks),
                            lock_dir=settings.locks_dir),
            metrics=SqliteMetrics(settings.checkpoint_db),
            transcribe_options=transcribe_options or TranscribeOptions(
                model=settings.model, model_cache=str(settings.model_cache),
                allow_download=settings.allow_model_download),
            budget=Budget(checkpoints, settings.checkpoint_db, settings.cost_ceiling_usd, prices.gpu_hour),
            prices=prices,
        )


# ---------------------------------------------------------------------------
# discover: feeds -> episodes + manifest
# ---------------------------------------------------------------------------
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


def _poll_feed(services: Services, spec: FeedSpec) -> tuple[FeedResult, list[EpisodeRecord]]:
    store = services.checkpoints
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
        feed = parse_feed(first.content, source=f"feed {spec.slug} ({fetch_url})")
        episodes, skipped = list(feed.episodes), list(feed.skipped)
        next_url, pages = feed.next_page_url, 1
        while next_url and pages < MAX_FEED_PAGES:
            page = parse_feed(services.http.fetch_bytes(next_url, accept=FEED_ACCEPT).content,
                              source=f"feed {spec.slug} page {pages + 1}")
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
        ))
    rec.last_status, rec.last_error, rec.checked_at, rec.episodes = "ok", None, time.time(), len(records)
    store.upsert_feed(rec)
    return FeedResult(spec.slug, fetch_url, "ok", episodes=len(records), skipped=skipped), records


def discover(services: Services, catalog: Catalog, *, write_manifest: bool = True,
             today: datetime | None = None, max_workers: int = 8) -> Discovery:
    """Poll every feed (one failing feed never stops the others), register episodes, write the manifest."""
    results: list[FeedResult] = []
    new_keys: list[str] = []
    with ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="feed") as pool:
        for result, records in pool.map(lambda s: _poll_feed(services, s), catalog.feeds):
            if records:
                added = services.checkpoints.register_episodes(records)
                result.new = len(added)
                new_keys += added
            results.append(result)
    tiers = {f.slug: f.tier for f in catalog.feeds}
    rows = []
    for slug in tiers:
        for rec in services.checkpoints.episodes(feed_slug=slug):
            rows.append({
                "partition_key": rec.partition_key, "feed_slug": rec.feed_slug, "guid_key": rec.guid_key,
                "guid": rec.guid, "title": rec.title, "published": rec.published,
                "enclosure_url": rec.enclosure_url, "enclosure_type": rec.enclosure_type,
                "enclosure_length": rec.enclosure_length, "duration_sec": rec.duration_hint_sec,
                "tier": tiers[slug],
            })
    discovery = Discovery(feeds=results, new_partition_keys=new_keys, manifest_rows=rows)
    if write_manifest:
        data = manifest_csv(rows)
        day = (today or datetime.now(timezone.utc)).strftime("%Y%m%d")
        discovery.manifest_key = f"{day}.csv"
        services.manifests.put_bytes(discovery.manifest_key, data, content_type="text/csv")
        local = services.settings.home / "manifest.csv"
        from .storage import atomic_writer

        with atomic_writer(local) as fh:
            fh.write(data)
        discovery.manifest_path = local
    return discovery


def manifest_csv(rows: list[dict]) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=MANIFEST_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in MANIFEST_COLUMNS})
    return buf.getvalue().encode("utf-8")


def read_manifest(data: bytes) -> list[dict]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"))))


# ---------------------------------------------------------------------------
# download: enclosure -> raw audio + meta.json
# ---------------------------------------------------------------------------
@dataclass
class DownloadOutcome:
    partition_key: str
    audio_key: str
    bytes: int
    sha256: str
    duration_sec: float | None
    skipped: bool = False
    host: str | None = None


def probe_duration(path: Path) -> float | None:
    """Duration of an audio file in seconds from its container, or None when unknown."""
    try:
        import av

        with av.open(str(path)) as container:
            if container.duration:
                return round(container.duration / 1_000_000, 3)
            stream = container.streams.audio[0]
            if stream.duration and stream.time_base:
                return round(float(stream.duration * stream.time_base), 3)
    except Exception:  # noqa: BLE001 - probing is best effort; transcription reports bad audio
        return None
    return None


def download_episode(services: Services, pk: str) -> DownloadOutcome:
    ek = EpisodeKey.parse(pk)
    rec = services.checkpoints.require(pk)
    if rec.state in (DOWNLOADED, TRANSCRIBED) and services.raw.exists(layout.meta_key(ek)):
        meta = services.raw.get_json(layout.meta_key(ek))
        if services.raw.exists(meta["audio_key"]):
            return DownloadOutcome(pk, meta["audio_key"], meta["bytes"], meta["sha256"], meta.get("duration_sec"),
                                   skipped=True)
    if not rec.enclosure_url:
        services.checkpoints.mark_failed(pk, "download", "episode has no enclosure URL")
        raise StepError(f"{pk}: episode has no enclosure URL")
    services.checkpoints.mark_attempt(pk)
    staging = getattr(services.raw, "staging_dir", None)
    tmp_dir = staging() if staging else Path(tempfile.gettempdir())
    tmp = Path(tempfile.mkstemp(prefix=".tmp-dl-", dir=tmp_dir)[1])
    try:
        dl = services.http.download(rec.enclosure_url, tmp)
        ext = dl.audio_format if dl.audio_format in ("mp3", "m4a", "ogg", "wav", "flac", "aac", "webm") else "mp3"
        audio_key = layout.audio_key(ek, ext)
        duration = probe_duration(tmp)
        services.raw.put_file(audio_key, tmp, content_type=dl.content_type)
    except FetchError as exc:
        services.checkpoints.mark_failed(pk, "download", str(exc))
        raise StepError(f"{pk}: {exc}", retryable=exc.retryable) from exc
    finally:
        tmp.unlink(missing_ok=True)
    meta = {
        "partition_key": pk, "feed_slug": ek.feed_slug, "guid": rec.guid, "guid_key": ek.guid_key,
        "title": rec.title, "published": rec.published, "enclosure_url": rec.enclosure_url,
        "final_url": dl.final_url, "audio_key": audio_key, "content_type": dl.content_type,
        "audio_format": dl.audio_format, "bytes": dl.bytes, "sha256": dl.sha256, "duration_sec": duration,
        "etag": dl.etag, "last_modified": dl.last_modified,
        "downloaded_at": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
        "transcript_key": None,
    }
    # meta.json is written last: its presence means the audio beside it is whole.
    services.raw.put_json(layout.meta_key(ek), meta)
    services.checkpoints.mark_downloaded(pk, bytes=dl.bytes, sha256=dl.sha256)
    from urllib.parse import urlsplit

    return DownloadOutcome(pk, audio_key, dl.bytes, dl.sha256, duration, host=urlsplit(dl.final_url).hostname)


def publish_download_metrics(services: Services, attempted: dict[str, int], succeeded: dict[str, int],
                             total_bytes: int, files: int) -> list[Metric]:
    """DownloadSuccessRate per feed, PerHost429 per host, GBTransferred and AvgDownloadMB for phase fetch."""
    metrics = [Metric("DownloadSuccessRate", 100.0 * succeeded.get(slug, 0) / n, "Percent", (("feed_slug", slug),))
               for slug, n in attempted.items() if n]
    for host, st in services.http.stats.snapshot().items():
        if st.requests:
            metrics.append(Metric("PerHost429", 100.0 * st.status_429 / st.requests, "Percent", (("hostname", host),)))
    metrics.append(Metric("GBTransferred", total_bytes / 1e9, "Gigabytes", (("phase", "fetch"),)))
    if files:
        metrics.append(Metric("AvgDownloadMB", total_bytes / files / 1e6, "Megabytes", (("phase", "fetch"),)))
    services.metrics.put(metrics)
    return metrics
