"""What a transcription request is projected to cost: its audio hours (measured where downloaded) x the rate in force.

An episode's length is, best first: what its downloaded file measures (the container's
duration, probed at download and kept in its ``meta.json``), what its feed declares
(``itunes:duration``), else 30 minutes. The rate is ``Budget.rate``: the measured real-time
factor for the device and compute type in force, or this deployment's own recent spend.
``podrun transcribe`` (its plan, ``--dry-run``, its refusal), the auto-transcribe sensor and the
transcript step's reservation all project through ``project``, so they show the same figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from podinsight_dagster.costs.budget import DEFAULT_EPISODE_SEC, Budget, BudgetExceeded, Rate, Reservation
from podinsight_dagster.store import layout
from podinsight_dagster.store.checkpoints import DOWNLOADED, TRANSCRIBED, EpisodeRecord
from podinsight_dagster.store.keys import EpisodeKey

MEASURED, DECLARED, ASSUMED = "measured", "declared", "assumed"


def episode_seconds(raw, rec: EpisodeRecord | None) -> tuple[float, str]:
    """An episode's audio length and where it comes from: its downloaded file, its feed, or the 30-min default."""
    if rec is None:
        return DEFAULT_EPISODE_SEC, ASSUMED
    if rec.state in (DOWNLOADED, TRANSCRIBED) and raw is not None:
        try:
            measured = raw.get_json(layout.meta_key(EpisodeKey.parse(rec.partition_key))).get("duration_sec")
        except Exception:  # noqa: BLE001 - no meta.json (yet), or unreadable: fall back to the feed's figure
            measured = None
        if isinstance(measured, (int, float)) and measured > 0:
            return float(measured), MEASURED
    if rec.duration_hint_sec:
        return float(rec.duration_hint_sec), DECLARED
    return DEFAULT_EPISODE_SEC, ASSUMED


@dataclass(frozen=True)
class AudioEstimate:
    seconds: float
    measured: int = 0   # lengths from the downloaded files
    declared: int = 0   # from the feeds (itunes:duration)
    assumed: int = 0    # neither: 30 min each

    @property
    def episodes(self) -> int:
        return self.measured + self.declared + self.assumed

    def describe(self) -> str:
        parts = [f"{self.measured} measured from the downloaded files" if self.measured else "",
                 f"{self.declared} as the feeds declare" if self.declared else "",
                 f"{self.assumed} assumed {DEFAULT_EPISODE_SEC / 60:.0f} min each" if self.assumed else ""]
        return f"{self.seconds / 3600:.2f} h of audio ({', '.join(p for p in parts if p) or 'no episodes'})"


def estimate_audio(raw, records: Iterable[EpisodeRecord | None]) -> tuple[AudioEstimate, list[float]]:
    """The request's audio length, and each episode's (in order). The meta.json reads go 16 at a time
    (on S3 each is a request: hundreds of episodes one after the other would take seconds)."""
    from concurrent.futures import ThreadPoolExecutor

    records = list(records)
    counts = {MEASURED: 0, DECLARED: 0, ASSUMED: 0}
    with ThreadPoolExecutor(max_workers=min(16, max(1, len(records)))) as pool:
        found = list(pool.map(lambda rec: episode_seconds(raw, rec), records))
    for _, source in found:
        counts[source] += 1
    each = [seconds for seconds, _ in found]
    return AudioEstimate(sum(each), counts[MEASURED], counts[DECLARED], counts[ASSUMED]), each


@dataclass(frozen=True)
class Projection:
    audio: AudioEstimate
    rate: Rate

    @property
    def usd(self) -> float:
        return self.audio.seconds * self.rate.usd_per_audio_second

    def describe(self) -> str:
        """One sentence: audio, rate and cost, with what each rests on."""
        return (f"{self.audio.episodes} episodes, {self.audio.describe()}; {self.rate.basis}: "
                f"${self.rate.usd_per_1000_audio_hours:,.2f} per 1,000 audio-hours; projected cost ${self.usd:.4f}")


def project(budget: Budget, raw, records: Iterable[EpisodeRecord | None], model: str | None) -> Projection:
    audio, _ = estimate_audio(raw, records)
    return Projection(audio, budget.rate(model))


def check_projection(budget: Budget, projection: Projection) -> float:
    """``Budget.check`` for this projection; a refusal says what the projection rests on. Returns today's cost."""
    try:
        return budget.check(projection.usd)
    except BudgetExceeded as exc:
        if budget.status().active:
            raise
        raise BudgetExceeded(f"{exc} (projection: {projection.describe()})") from exc


@dataclass(frozen=True)
class Hold:
    """A transcription run's reservation and the projection it reserved."""

    reservation: Reservation
    projection: Projection

    def describe(self) -> str:
        return f"reserved ${self.reservation.usd:.4f} for {self.projection.describe()}"


def reserve_for_run(budget: Budget, raw, records: Iterable[EpisodeRecord | None], model: str | None,
                    owner: str) -> Hold:
    """The run's projected cost held against the ceiling until ``budget.settle(hold.reservation)``.

    One transaction: refused (BudgetExceeded naming the projection) when today's spend + running
    reservations + this projection would cross the ceiling, or when frozen (run-book §6.1). Every
    launch (UI backfill, sensor, podrun) reaches the transcript step, which holds this for its run. A
    dead run's hold expires: after twice the audio's length plus 10 minutes, 12 hours at most.
    """
    projection = project(budget, raw, records, model)
    try:
        reservation = budget.reserve(projection.usd, owner=owner,
                                     ttl_s=min(12 * 3600.0, 600.0 + 2 * projection.audio.seconds))
    except BudgetExceeded as exc:
        raise BudgetExceeded(f"{exc} (projection: {projection.describe()})") from exc
    return Hold(reservation, projection)
