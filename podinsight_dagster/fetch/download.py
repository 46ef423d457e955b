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

from podinsight_dagster.errors import StepError, StepSkipped
from podinsight_dagster.fetch.alternate import download_preferred
from podinsight_dagster.fetch.http import FetchError
from podinsight_dagster.fetch.partial import EpisodePartial
from podinsight_dagster.fetch.limits import registrable_domain
from podinsight_dagster.store import layout
from podinsight_dagster.store.checkpoints import DONE, DOWNLOAD, DOWNLOADED, TRANSCRIBED
from podinsight_dagster.store.claims import Claims, default_owner, skip_for
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


def _whole_in_raw(services: Services, ek: EpisodeKey) -> dict | None:
    """meta.json of audio already whole in raw storage (meta.json is written after it, and its size matches), or None."""
    if not services.raw.exists(layout.meta_key(ek)):
        return None
    meta = services.raw.get_json(layout.meta_key(ek))
    try:
        return meta if services.raw.size(meta["audio_key"]) == meta.get("bytes", -1) else None
    except (FileNotFoundError, KeyError):
        return None


def _reused(services: Services, pk: str, rec, meta: dict, *, claimed: bool) -> DownloadOutcome:
    if rec.state not in (DOWNLOADED, TRANSCRIBED):
        services.checkpoints.mark_downloaded(pk, bytes=meta["bytes"], sha256=meta["sha256"])
    elif claimed:  # ends this task's claim: the stage is done (by whoever downloaded it)
        services.checkpoints.mark_stage(pk, DOWNLOAD, DONE)
    return DownloadOutcome(pk, meta["audio_key"], meta["bytes"], meta["sha256"], meta.get("duration_sec"),
                           skipped=True)


def download_episode(services: Services, pk: str, claims: Claims | None = None) -> DownloadOutcome:
    """One episode's audio into raw storage, once across every task: claimed first (store/claims.py).

    Audio already whole in raw storage is never downloaded again, whatever the checkpoint says (a lost
    row, a later stage that failed). An episode another task holds raises ``StepSkipped`` (no failure);
    one whose holder died is taken over once its lease runs out. ``claims``: the caller's (one renewer
    for a batch); by default one of this episode's own.
    """
    if claims is None:
        with Claims(services.checkpoints, DOWNLOAD, default_owner(), services.settings.claim_lease_sec) as own:
            return download_episode(services, pk, own)
    ek = EpisodeKey.parse(pk)
    rec = services.checkpoints.require(pk)
    meta = _whole_in_raw(services, ek)
    if meta is not None:
        return _reused(services, pk, rec, meta, claimed=False)
    why = claims.claim(pk)
    if why is not None:
        raise skip_for(pk, why) or StepError(f"{pk}: not downloaded: {why}")
    try:
        # Looked at again under the claim: another task may have finished it since the first look.
        rec = services.checkpoints.require(pk)
        meta = _whole_in_raw(services, ek)
        if meta is not None:
            return _reused(services, pk, rec, meta, claimed=True)
        return _download(services, pk, ek, rec, claims)
    except StepError:
        raise  # its stage status is written
    except Exception as exc:
        # A storage error, a bug: the claim ends now (retryable) rather than when its lease runs out.
        services.checkpoints.mark_failed(pk, DOWNLOAD, f"unexpected {type(exc).__name__}: {exc}", retryable=True)
        raise
    finally:
        claims.release(pk)


def _download(services: Services, pk: str, ek: EpisodeKey, rec, claims: Claims) -> DownloadOutcome:
    if not rec.enclosure_url:
        services.checkpoints.mark_failed(pk, "download", "episode has no enclosure URL")
        raise StepError(f"{pk}: episode has no enclosure URL")
    services.checkpoints.mark_attempt(pk)  # (the claim set the stage running)
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
            if pk in claims.lost:  # stalled past its lease and taken over: the new holder stores it, not us
                raise StepSkipped(f"{pk}: skipped, its claim ran out while downloading and another task took it "
                                  "over", held_elsewhere=True)
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


def download_episodes(services: Services, keys: list[str], *,
                      owner: str | None = None) -> Iterator[tuple[str, DownloadOutcome | StepError]]:
    """Download ``keys`` concurrently, as many at once as the per-host limits allow; yield each as it finishes.

    Episodes are queued per host domain and each domain gets as many workers as its limit
    (so one slow or strict host never holds up the others' workers); the HostLimiter
    still decides at connection time, so redirects to another host and other processes
    sharing the lock folder are capped too. One episode's failure never stops the rest:
    it is yielded as a StepError. Each episode is claimed for ``owner`` (the run) before it is
    downloaded: one that another task holds is yielded as a StepSkipped.
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
                out: DownloadOutcome | StepError = download_episode(services, pk, claims)
            except StepError as exc:
                out = exc
            except Exception as exc:  # noqa: BLE001 - a bug or bad data in one episode must not stop the others
                out = StepError(f"{pk}: unexpected {type(exc).__name__}: {exc}")
            results.put((pk, out))

    wanted = {d: min(len(todo), services.http.limiter.limit_for(first_host[d]) if d else 1)
              for d, todo in queues.items()}
    scale = min(1.0, MAX_DOWNLOAD_THREADS / max(1, sum(wanted.values())))
    claims = Claims(services.checkpoints, DOWNLOAD, owner or default_owner(), services.settings.claim_lease_sec)
    threads = [threading.Thread(target=work, args=(queues[d],), name=f"download-{d or 'none'}", daemon=True)
               for d, n in wanted.items() for _ in range(max(1, int(n * scale)))]
    with claims:
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
