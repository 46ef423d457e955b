"""Asset checks: the run-book's success criteria (§4.4) shown in the UI with their figures.

They summarise many episodes, so they read the checkpoint store and the metrics
table, never every partition's output.
"""

import json

from dagster import (AssetCheckEvaluation, AssetCheckExecutionContext, AssetCheckResult, AssetCheckSeverity, AssetKey,
                     MetadataValue, asset_check)

from podinsight_dagster.assets.catalog import episode_manifest, feeds
from podinsight_dagster.assets.episodes import kpis, raw_audio, speakers, transcript
from podinsight_dagster.fetch.catalog import CatalogError
from podinsight_dagster.store.checkpoints import DOWNLOADED, FAILED, TRANSCRIBED
from podinsight_dagster.resources.seams import (BudgetResource, CatalogResource, CheckpointsResource, MetricsResource,
                                                services_from)

SUCCESS_RATE_MIN = 98.0   # DownloadSuccessRate > 98 %
PER_HOST_429_MAX = 1.0    # PerHost429 < 1 %


def download_success_rates(services) -> tuple[dict[str, float], float | None]:
    """Per feed and overall: downloaded / (downloaded + failed downloads), in percent."""
    by_feed: dict[str, list[int]] = {}
    for rec in services.checkpoints.episodes():
        ok = rec.state in (DOWNLOADED, TRANSCRIBED)
        bad = rec.state == FAILED and rec.failed_stage == "download"
        if ok or bad:
            counts = by_feed.setdefault(rec.feed_slug, [0, 0])
            counts[0] += ok
            counts[1] += 1
    rates = {slug: 100.0 * ok / n for slug, (ok, n) in by_feed.items()}
    total_ok, total = sum(v[0] for v in by_feed.values()), sum(v[1] for v in by_feed.values())
    return rates, (100.0 * total_ok / total if total else None)


@asset_check(asset=raw_audio, description="DownloadSuccessRate above 98% per feed and overall (run-book §4.4).")
def download_success_rate(context: AssetCheckExecutionContext, checkpoints: CheckpointsResource) -> AssetCheckResult:
    rates, overall = download_success_rates(services_from(checkpoints=checkpoints))
    low = {slug: round(r, 2) for slug, r in rates.items() if r <= SUCCESS_RATE_MIN}
    passed = overall is not None and overall > SUCCESS_RATE_MIN and not low
    return AssetCheckResult(
        passed=passed, severity=AssetCheckSeverity.ERROR,
        description=None if passed else (f"feeds at or below {SUCCESS_RATE_MIN}%: {low}" if low
                                         else "no downloads attempted yet"),
        metadata={"overall_percent": round(overall, 2) if overall is not None else None,
                  "threshold_percent": SUCCESS_RATE_MIN,
                  "per_feed_percent": MetadataValue.json({k: round(v, 2) for k, v in sorted(rates.items())}),
                  "feeds_below": MetadataValue.json(low)})


@asset_check(asset=raw_audio, description="PerHost429 below 1% for every host (run-book §4.4); a warning.")
def per_host_429(context: AssetCheckExecutionContext, metrics: MetricsResource) -> AssetCheckResult:
    latest = metrics.get().latest("PerHost429")
    per_host = {json.loads(d).get("hostname", "?"): round(v, 3) for d, v in latest.items()}
    high = {h: v for h, v in per_host.items() if v >= PER_HOST_429_MAX}
    return AssetCheckResult(
        passed=not high, severity=AssetCheckSeverity.WARN,
        description=None if not high else f"hosts rate-limiting us: {high}; lower their host_limits",
        metadata={"per_host_percent": MetadataValue.json(per_host), "threshold_percent": PER_HOST_429_MAX})


@asset_check(asset=transcript, blocking=True,
             description="GPUCostToday below the $40 ceiling; blocking, so a run over budget goes no further.")
def gpu_cost_today(context: AssetCheckExecutionContext, budget: BudgetResource) -> AssetCheckResult:
    services = services_from(budget=budget)
    budget = services.budget
    cost, freeze = budget.cost_today(), budget.status()
    passed = cost < budget.ceiling_usd and not freeze.active
    rate = budget.rate(services.settings.model)  # what projections assume now, so the UI shows it beside the spend
    return AssetCheckResult(
        passed=passed, severity=AssetCheckSeverity.ERROR,
        description=None if passed else (freeze.reason or f"${cost:.2f} spent today"),
        metadata={"cost_today_usd": round(cost, 4), "ceiling_usd": budget.ceiling_usd, "frozen": freeze.active,
                  "projected_usd_per_1000_audio_hours": round(rate.usd_per_1000_audio_hours, 4),
                  "projection_basis": rate.basis,
                  **({"realtime_factor": rate.speed.realtime_factor} if rate.speed else {})})


@asset_check(asset=kpis, description="Transcript sanity: text wherever there was speech, segments in order.")
def transcript_sanity(context: AssetCheckExecutionContext, checkpoints: CheckpointsResource) -> AssetCheckResult:
    bad = {r.partition_key: r.quality_issue for r in checkpoints.get().episodes(state=TRANSCRIBED)
           if r.quality_issue}
    return AssetCheckResult(
        passed=not bad, severity=AssetCheckSeverity.ERROR,
        description=None if not bad else f"{len(bad)} transcripts failed sanity checks",
        metadata={"episodes_with_issues": len(bad), "issues": MetadataValue.json(dict(list(bad.items())[:50]))})


@asset_check(asset=speakers, description="Diarization found several voices wherever the feed lists several "
                                         "people (podcast:person hosts and guests), and as many as a publisher "
                                         "transcript names.")
def speaker_count(context: AssetCheckExecutionContext, checkpoints: CheckpointsResource) -> AssetCheckResult:
    bad = {r.partition_key: r.speaker_issue for r in checkpoints.get().episodes() if r.speaker_issue}
    return AssetCheckResult(
        passed=not bad, severity=AssetCheckSeverity.WARN,
        description=None if not bad else f"{len(bad)} episodes: the voices found disagree with the "
                                                   "feed's people or the publisher transcript's speakers",
        metadata={"episodes_flagged": len(bad), "episodes": MetadataValue.json(dict(list(bad.items())[:50]))})


FEEDS_CHECK = "every_feed_answers"


def failing_feeds(services, catalog) -> dict[str, str]:
    """The catalog's feeds whose last poll failed (podrun fetch, episode_manifest or the sensor), with its error."""
    slugs = {f.slug for f in catalog.feeds}
    return {rec.slug: rec.last_error or "failed" for rec in services.checkpoints.feeds()
            if rec.slug in slugs and rec.last_status == "failed"}


def feeds_check_result(services, catalog) -> dict:
    """The ``every_feed_answers`` check's outcome, for the check itself and for ``new_episodes_sensor`` to report."""
    failing = failing_feeds(services, catalog)
    polled = sum(1 for rec in services.checkpoints.feeds() if rec.checked_at)
    first = sorted(failing.items())[:3]
    more = f" (and {len(failing) - 3} more)" if len(failing) > 3 else ""
    return dict(
        passed=not failing, severity=AssetCheckSeverity.ERROR,
        description=None if not failing else (
            f"{len(failing)} of {len(catalog.feeds)} feeds failed their last poll: "
            + "; ".join(f"{slug}: {err}" for slug, err in first) + more),
        metadata={"feeds": len(catalog.feeds), "feeds_polled": polled, "feeds_failing": len(failing),
                  "failing": MetadataValue.json(dict(sorted(failing.items())[:50]))})


# After episode_manifest in a run that makes both (ingest_catalog): it reads the poll that run just did.
@asset_check(asset=feeds, name=FEEDS_CHECK, additional_deps=[episode_manifest],
             description="Every feed of the catalog answered its last poll (by podrun fetch, episode_manifest or "
                         "new_episodes_sensor, which reports this check after each tick that changes it); fails "
                         "naming each failing feed and its error.")
def every_feed_answers(context: AssetCheckExecutionContext, catalog: CatalogResource,
                       checkpoints: CheckpointsResource) -> AssetCheckResult:
    try:
        loaded = catalog.load()
    except CatalogError as exc:
        return AssetCheckResult(passed=False, severity=AssetCheckSeverity.ERROR, description=str(exc))
    return AssetCheckResult(**feeds_check_result(services_from(checkpoints=checkpoints), loaded))


def feeds_check_evaluation(services, catalog) -> AssetCheckEvaluation:
    """The same outcome as an evaluation a sensor reports (no run needed)."""
    return AssetCheckEvaluation(asset_key=AssetKey("feeds"), check_name=FEEDS_CHECK,
                                **feeds_check_result(services, catalog))


all_checks = [download_success_rate, per_host_429, gpu_cost_today, transcript_sanity, speaker_count, every_feed_answers]
