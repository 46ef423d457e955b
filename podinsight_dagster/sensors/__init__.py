"""Sensors: queue new episodes as feeds publish them; optionally queue transcription within budget."""

import json
import time
from dataclasses import replace

from dagster import (DefaultSensorStatus, RunRequest, SensorDefinition, SensorEvaluationContext, SensorResult,
                     SkipReason, sensor)

from podinsight_dagster.costs.budget import DEFAULT_EPISODE_SEC, BudgetExceeded
from podinsight_dagster.fetch.catalog import CatalogError, FeedSpec
from podinsight_dagster.fetch.http import HttpClient
from podinsight_dagster.store.checkpoints import DOWNLOADED
from podinsight_dagster.fetch.discover import poll_feeds
from podinsight_dagster.partitions import EPISODES, RANGE_END_TAG, RANGE_START_TAG, contiguous_ranges
from podinsight_dagster.resources import PodInsightResource

MAX_NEW_PER_TICK = 25_000
DOWNLOAD_BATCH = 100
TRANSCRIBE_BATCH = 100
MAX_TRANSCRIBE_PER_TICK = 500
# Dagster cancels a sensor evaluation after 60 s (DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS). No feed starts after
# TICK_BUDGET_S; the feeds in flight then finish (each request within SENSOR_HTTP's timeouts, one attempt:
# a failing feed is retried on its next turn, never slept on inside a tick) and the tick registers what it
# found. Feeds not started carry over to the next tick, which starts with them (round robin).
TICK_BUDGET_S = 40.0
FEED_WORKERS = 16  # feeds are mostly waiting on the network; each host's limit still applies
SENSOR_HTTP = {"connect_timeout": 5.0, "read_timeout": 10.0, "low_speed_window_s": 10.0, "max_attempts": 1}
PARTITIONS_PER_ADD = 10_000  # keys per add_dynamic_partitions call: one SQL IN clause, well under SQLite's limit


def batched_ranges(ordered: list[str], keys: list[str], size: int) -> list[tuple[str, str]]:
    """Contiguous partition ranges over ``keys`` in instance order, each at most ``size`` partitions."""
    pos = {k: i for i, k in enumerate(ordered)}
    out = []
    for start, end in contiguous_ranges(ordered, keys):
        span = ordered[pos[start]:pos[end] + 1]
        out += [(span[i], span[min(i + size, len(span)) - 1]) for i in range(0, len(span), size)]
    return out


def range_run(kind: str, start: str, end: str, trigger: str) -> RunRequest:
    return RunRequest(run_key=f"{kind}:{start}:{end}",
                      tags={RANGE_START_TAG: start, RANGE_END_TAG: end, "podinsight/trigger": trigger})


def _resume_at(feeds: list[FeedSpec], previous: dict) -> int:
    """Where this tick starts in the catalog: the feed the last tick did not reach (round robin)."""
    slug = previous.get("next_feed")
    if not feeds or slug is None:
        return 0
    for i, spec in enumerate(feeds):
        if spec.slug == slug:
            return i
    return int(previous.get("next_index", 0)) % len(feeds)  # that feed left the catalog: its old place


def sensor_http(client: HttpClient) -> HttpClient:
    """The resource's client (policy, host limiter) with the sensor's short timeouts and a single attempt."""
    return HttpClient(replace(client.config, **SENSOR_HTTP), client.policy, client.limiter)


def poll_new_episodes(context: SensorEvaluationContext, podinsight: PodInsightResource, *,
                      tick_budget_s: float = TICK_BUDGET_S, max_workers: int = FEED_WORKERS):
    """One tick of ``new_episodes_sensor``: poll feeds for ``tick_budget_s``, register and queue what is new."""
    started = time.monotonic()
    try:
        catalog = podinsight.catalog()
    except CatalogError as exc:
        return SkipReason(f"feed catalog unreadable: {exc}")
    previous = json.loads(context.cursor) if context.cursor else {}
    feeds = list(catalog.feeds)
    start = _resume_at(feeds, previous)
    order = feeds[start:] + feeds[:start]
    services = podinsight.services()
    http = sensor_http(services.http)
    try:
        results, _, unpolled = poll_feeds(replace(services, http=http), order, deadline=started + tick_budget_s,
                                          max_workers=max_workers)
    finally:
        http.close()
    polled_s = time.monotonic() - started

    # Episodes the checkpoint store knows but the instance lacks (new ones, those of an interrupted tick,
    # those over the last tick's cap) are registered now, whichever feeds this tick reached.
    existing = context.instance.get_dynamic_partitions(EPISODES)
    known = set(existing)
    rank = {spec.slug: i for i, spec in enumerate(feeds)}
    waiting = [r for r in services.checkpoints.episodes() if r.feed_slug in rank and r.partition_key not in known]
    waiting.sort(key=lambda r: rank[r.feed_slug])  # stable: each feed's episodes stay in discovery order
    new = list(dict.fromkeys(r.partition_key for r in waiting))[:MAX_NEW_PER_TICK]

    polled = {f.slug for f in results}
    failed = {slug: err for slug, err in previous.get("failed_feeds", {}).items()
              if slug in rank and slug not in polled}
    for f in results:
        if f.status == "failed":
            failed[f.slug] = f.error
            context.log.warning(f"feed {f.slug} failed: {f.error}")
    next_feed = unpolled[0].slug if unpolled else None
    context.log.info(f"polled {len(results)} of {len(feeds)} feeds in {polled_s:.1f} s (budget {tick_budget_s:g} s)"
                     + (f"; {len(unpolled)} carried over to the next tick, from {next_feed}" if unpolled else "")
                     + f"; {len(new)} new episodes")
    cursor = json.dumps({
        "ticks": previous.get("ticks", 0) + 1, "registered": previous.get("registered", 0) + len(new),
        "last_new": len(new), "last_polled": len(results), "carried_over": len(unpolled),
        "next_feed": next_feed, "next_index": rank.get(next_feed, 0) if next_feed else 0,
        "failed_feeds": failed})
    if not new:
        return SensorResult(skip_reason=SkipReason(
            f"no new episodes; polled {len(results)} of {len(feeds)} feeds, {len(failed)} failing"), cursor=cursor)
    # The instance appends new partitions in the order given: the runs' ranges are contiguous there.
    runs = [range_run("download", a, b, "new_episodes_sensor")
            for a, b in batched_ranges(list(existing) + new, new, DOWNLOAD_BATCH)]
    # Registered here in bulk, not returned as dynamic_partitions_requests: the sensor daemon applies those
    # with one has_dynamic_partition query per key (48-123 s for 20,000 keys, holding up every other sensor).
    for i in range(0, len(new), PARTITIONS_PER_ADD):
        context.instance.add_dynamic_partitions(EPISODES, new[i:i + PARTITIONS_PER_ADD])
    return SensorResult(run_requests=runs, cursor=cursor)


def build_new_episodes_sensor(*, tick_budget_s: float = TICK_BUDGET_S, max_workers: int = FEED_WORKERS,
                              name: str = "new_episodes_sensor") -> SensorDefinition:
    """``new_episodes_sensor`` with another per-tick polling budget or concurrency (tests use a short budget)."""

    @sensor(name=name, minimum_interval_seconds=15 * 60, default_status=DefaultSensorStatus.STOPPED,
            asset_selection=["raw_audio"],
            description=f"Polls the feeds (conditional GET, {max_workers} at a time, for at most "
                        f"{tick_budget_s:g} s a tick; the rest carry over to the next tick), registers new "
                        "episodes as partitions and queues their download, one run per 100 episodes. "
                        "Transcription keeps the run-book's human gate.")
    def _new_episodes_sensor(context: SensorEvaluationContext, podinsight: PodInsightResource):
        return poll_new_episodes(context, podinsight, tick_budget_s=tick_budget_s, max_workers=max_workers)

    return _new_episodes_sensor


new_episodes_sensor = build_new_episodes_sensor()


@sensor(name="auto_transcribe_sensor", minimum_interval_seconds=30 * 60, default_status=DefaultSensorStatus.STOPPED,
        asset_selection=["transcript", "segments", "kpis"],
        description="Off by default (the run-book's human gate). When on, queues transcription of downloaded "
                    "episodes as long as today's cost plus the projection stays under the ceiling.")
def auto_transcribe_sensor(context: SensorEvaluationContext, podinsight: PodInsightResource):
    services = podinsight.services()
    ordered = context.instance.get_dynamic_partitions(EPISODES)
    in_instance = set(ordered)
    todo = [r for r in services.checkpoints.episodes(state=DOWNLOADED) if r.partition_key in in_instance]
    todo = todo[:MAX_TRANSCRIBE_PER_TICK]
    if not todo:
        return SkipReason("no downloaded episodes waiting")
    budget = services.budget
    # Shrink the request until its projection fits under the ceiling.
    while todo:
        projected = budget.projected_cost(sum(r.duration_hint_sec or DEFAULT_EPISODE_SEC for r in todo))
        try:
            budget.check(projected)
            break
        except BudgetExceeded as exc:
            if budget.status().active or len(todo) == 1:
                return SkipReason(f"not queuing transcription: {exc}")
            todo = todo[: len(todo) // 2]
    keys = [r.partition_key for r in todo]
    return [range_run("transcribe", a, b, "auto_transcribe_sensor")
            for a, b in batched_ranges(ordered, keys, TRANSCRIBE_BATCH)]
