"""Sensors: queue new episodes as feeds publish them; optionally queue transcription within budget."""

import json

from dagster import (DefaultSensorStatus, RunRequest, SensorEvaluationContext, SensorResult, SkipReason,
                     sensor)

from podinsight_dagster.costs.budget import DEFAULT_EPISODE_SEC, BudgetExceeded
from podinsight_dagster.fetch.catalog import CatalogError
from podinsight_dagster.store.checkpoints import DOWNLOADED
from podinsight_dagster.fetch.discover import discover
from podinsight_dagster.partitions import (EPISODES, RANGE_END_TAG, RANGE_START_TAG, contiguous_ranges,
                                           episodes_partitions)
from podinsight_dagster.resources import PodInsightResource

MAX_NEW_PER_TICK = 25_000
DOWNLOAD_BATCH = 100
TRANSCRIBE_BATCH = 100
MAX_TRANSCRIBE_PER_TICK = 500


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


@sensor(name="new_episodes_sensor", minimum_interval_seconds=15 * 60, default_status=DefaultSensorStatus.STOPPED,
        asset_selection=["raw_audio"],
        description="Polls every feed (conditional GET), registers new episodes as partitions and queues their "
                    "download, one run per 100 episodes. Transcription keeps the run-book's human gate.")
def new_episodes_sensor(context: SensorEvaluationContext, podinsight: PodInsightResource):
    try:
        catalog = podinsight.catalog()
    except CatalogError as exc:
        return SkipReason(f"feed catalog unreadable: {exc}")
    services = podinsight.services()
    result = discover(services, catalog, write_manifest=False)
    known = set(context.instance.get_dynamic_partitions(EPISODES))
    # Episodes the checkpoint store knows but the instance lacks (new ones, or those of an
    # interrupted tick) are registered now; a repeated tick finds none and requests nothing.
    new = [r["partition_key"] for r in result.manifest_rows if r["partition_key"] not in known][:MAX_NEW_PER_TICK]
    failed = {f.slug: f.error for f in result.feeds if f.status == "failed"}
    for slug, err in failed.items():
        context.log.warning(f"feed {slug} failed: {err}")
    previous = json.loads(context.cursor) if context.cursor else {}
    cursor = json.dumps({"ticks": previous.get("ticks", 0) + 1, "registered": previous.get("registered", 0) + len(new),
                         "last_new": len(new), "failed_feeds": failed})
    if not new:
        return SensorResult(skip_reason=SkipReason(f"no new episodes; {len(failed)} feeds failed"), cursor=cursor)
    ordered = [k for k in context.instance.get_dynamic_partitions(EPISODES)] + new
    runs = [range_run("download", a, b, "new_episodes_sensor") for a, b in batched_ranges(ordered, new, DOWNLOAD_BATCH)]
    return SensorResult(run_requests=runs, dynamic_partitions_requests=[episodes_partitions.build_add_request(new)],
                        cursor=cursor)


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
