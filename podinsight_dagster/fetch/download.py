"""backfill.py --mode fetch (run-book §3): an episode's enclosure -> raw audio + meta.json, and the fetch metrics."""

from __future__ import annotations

import queue
import tempfile
import threading
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Iterator
from urllib.parse import urlsplit

from podinsight_dagster.errors import StepError
from podinsight_dagster.fetch.alternate import download_preferred
from podinsight_dagster.fetch.http import FetchError
from podinsight_dagster.fetch.partial import EpisodePartial
from podinsight_dagster.fetch.limits import registrable_domain
from podinsight_dagster.store import layout
from podinsight_dagster.store.checkpoints import DOWNLOADED, TRANSCRIBED
from podinsight_dagster.store.keys import EpisodeKey
from podinsight_dagster.store.metrics import Metric

if TYPE_CHECKING:
    from podinsight_dagster.services import Services


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

        # A small probe: real MP3/M4A headers answer within the first KB; bytes that are not audio
        # would otherwise be scanned whole (tens of ms per MB of CPU per episode).
        with av.open(str(path), options={"probesize": "65536", "analyzeduration": "0"}) as container:
            if container.duration:
                return round(container.duration / 1_000_000, 3)
            stream = container.streams.audio[0]
            if stream.duration and stream.time_base:
                return round(float(stream.duration * stream.time_base), 3)
    except Exception:  # noqa: BLE001 - probing is best effort; transcription reports bad audio
        return None
    return None


def _staging_dir(services: Services) -> Path:
    """Where partial downloads live: beside raw storage when it is a folder (commit is a rename), else a temp dir."""
    staging = getattr(services.raw, "staging_dir", None)
    return staging() if staging else Path(tempfile.gettempdir()) / "podinsight-partial"


def download_episode(services: Services, pk: str) -> DownloadOutcome:
    ek = EpisodeKey.parse(pk)
    rec = services.checkpoints.require(pk)
    if services.raw.exists(layout.meta_key(ek)):
        # Audio already whole in raw storage (meta.json is written after it, and its size matches): never
        # downloaded again, whatever the checkpoint says (a lost row, a later stage that failed).
        meta = services.raw.get_json(layout.meta_key(ek))
        try:
            whole = services.raw.size(meta["audio_key"]) == meta.get("bytes", -1)
        except (FileNotFoundError, KeyError):
            whole = False
        if whole:
            if rec.state not in (DOWNLOADED, TRANSCRIBED):
                services.checkpoints.mark_downloaded(pk, bytes=meta["bytes"], sha256=meta["sha256"])
            return DownloadOutcome(pk, meta["audio_key"], meta["bytes"], meta["sha256"], meta.get("duration_sec"),
                                   skipped=True)
    if not rec.enclosure_url:
        services.checkpoints.mark_failed(pk, "download", "episode has no enclosure URL")
        raise StepError(f"{pk}: episode has no enclosure URL")
    services.checkpoints.mark_attempt(pk)
    services.checkpoints.mark_stage(pk, "download", "running")
    # The episode's partial file under a fixed name (fetch/partial.py): what a killed process or a failed try
    # left is resumed (Range + If-Range on the validator kept beside it), and removed once the audio is
    # committed or the episode failed for good. Retryable failures are retried here, per episode
    # (HttpConfig.download_backoff), not by re-running the step.
    with EpisodePartial(_staging_dir(services), services.raw.uri(layout.meta_key(ek))) as partial:
        try:
            # a smaller podcast:alternateEnclosure when the feed gives one (checked), else the enclosure
            dl, alternate_error = download_preferred(services.http, rec, partial.path, state_for=partial.state)
            ext = dl.audio_format if dl.audio_format in ("mp3", "m4a", "ogg", "wav", "flac", "aac", "webm") else "mp3"
            audio_key = layout.audio_key(ek, ext)
            duration = probe_duration(partial.path)
            services.raw.put_file(audio_key, partial.path, content_type=dl.content_type)
        except FetchError as exc:
            services.checkpoints.mark_failed(pk, "download", str(exc), retryable=exc.retryable)
            raise StepError(f"{pk}: {exc}", retryable=exc.retryable) from exc
        partial.finish()
    meta = {
        "partition_key": pk, "feed_slug": ek.feed_slug, "guid": rec.guid, "guid_key": ek.guid_key,
        "title": rec.title, "published": rec.published, "enclosure_url": rec.enclosure_url,
        "final_url": dl.final_url, "audio_key": audio_key, "content_type": dl.content_type,
        "audio_format": dl.audio_format, "bytes": dl.bytes, "sha256": dl.sha256, "duration_sec": duration,
        "etag": dl.etag, "last_modified": dl.last_modified,
        "downloaded_at": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
        "transcript_key": None,
    }
    if alternate_error:
        meta["alternate_error"] = alternate_error
    # meta.json is written last: its presence means the audio beside it is whole.
    services.raw.put_json(layout.meta_key(ek), meta)
    services.checkpoints.mark_downloaded(pk, bytes=dl.bytes, sha256=dl.sha256)
    return DownloadOutcome(pk, audio_key, dl.bytes, dl.sha256, duration, host=urlsplit(dl.final_url).hostname)


# Threads at most, whatever the hosts' limits add up to: each holds a connection and a file.
MAX_DOWNLOAD_THREADS = 64


def download_episodes(services: Services, keys: list[str]) -> Iterator[tuple[str, DownloadOutcome | StepError]]:
    """Download ``keys`` concurrently, as many at once as the per-host limits allow; yield each as it finishes.

    Episodes are queued per host domain and each domain gets as many workers as its limit
    (so one slow or strict host never holds up the others' workers); the HostLimiter
    still decides at connection time, so redirects to another host and other processes
    sharing the lock folder are capped too. One episode's failure never stops the rest:
    it is yielded as a StepError.
    """
    queues: dict[str, deque[str]] = {}
    first_host: dict[str, str] = {}
    for pk in keys:
        rec = services.checkpoints.get(pk)
        host = (urlsplit(rec.download_url or rec.enclosure_url or "").hostname or "") if rec else ""
        domain = registrable_domain(host) if host else ""
        queues.setdefault(domain, deque()).append(pk)
        first_host.setdefault(domain, host)
    results: queue.Queue[tuple[str, DownloadOutcome | StepError]] = queue.Queue()

    def work(todo: deque[str]) -> None:
        while True:
            try:
                pk = todo.popleft()  # deque.popleft is atomic: workers of a domain share its queue
            except IndexError:
                return
            try:
                out: DownloadOutcome | StepError = download_episode(services, pk)
            except StepError as exc:
                out = exc
            except Exception as exc:  # noqa: BLE001 - a bug or bad data in one episode must not stop the others
                out = StepError(f"{pk}: unexpected {type(exc).__name__}: {exc}")
            results.put((pk, out))

    wanted = {d: min(len(todo), services.http.limiter.limit_for(first_host[d]) if d else 1)
              for d, todo in queues.items()}
    scale = min(1.0, MAX_DOWNLOAD_THREADS / max(1, sum(wanted.values())))
    threads = [threading.Thread(target=work, args=(queues[d],), name=f"download-{d or 'none'}", daemon=True)
               for d, n in wanted.items() for _ in range(max(1, int(n * scale)))]
    for t in threads:
        t.start()
    for _ in range(len(keys)):
        yield results.get()
    for t in threads:
        t.join()


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
