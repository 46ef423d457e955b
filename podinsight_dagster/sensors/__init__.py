"""Sensors: queue new episodes as they appear in the catalog's feeds."""


import json

from dagster import (DefaultSensorStatus, RunRequest, SensorEvaluationContext, SensorResult, SkipReason,
                     sensor)

from ..domain.catalog import CatalogError
from ..domain.pipeline import discover
from ..partitions import EPISODES, RANGE_END_TAG, RANGE_START_TAG, episodes_partitions
from ..resources import PodInsightResource

MAX_NEW_PER_TICK = 25_000
DOWNLOAD_BATCH = 100


def _chunks(seq: list[str], n: int) -> list[list[str]]:
    return [seq[i:i + n] for i in range(0, len(seq), n)]


@sensor(name="new_episodes_sensor", minimum_interval_seconds=15 * 60, default_status=DefaultSensorStatus.STOPPED,
        asset_selection=["raw_audio"],
        description="Polls every feed (conditional GET), registers new episodes as partitions and queues their "
                    "download, one run per batch. Transcription keeps the run-book's human gate.")
def new_episodes_sensor(context: SensorEvaluationContext, podinsight: PodInsightResource):
    try:
        catalog = podinsight.catalog()
    except CatalogError as exc:
        return SkipReason(f"feed catalog unreadable: {exc}")
    services = podinsight.services()
    result = discover(services, catalog, write_manifest=False)
    known = set(context.instance.get_dynamic_partitions(EPISODES))
    # Episodes the store knows but the instance lacks (a repeated or interrupted tick) are queued too.
    candidates = [r["partition_key"] for r in result.manifest_rows if r["partition_key"] not in known]
    new = candidates[:MAX_NEW_PER_TICK]
    failed = {f.slug: f.error for f in result.feeds if f.status == "failed"}
    for slug, err in failed.items():
        context.log.warning(f"feed {slug} failed: {err}")
    cursor = json.dumps({"last_new": len(new), "failed_feeds": sorted(failed)})
    if not new:
        return SensorResult(skip_reason=SkipReason(f"no new episodes ({len(failed)} feeds failed)"), cursor=cursor)
    runs = [
        RunRequest(
            run_key=f"download:{batch[0]}:{batch[-1]}:{len(batch)}",
            asset_selection=None,
            partition_key_range=None,
            tags={RANGE_START_TAG: batch[0], RANGE_END_TAG: batch[-1],
                  "podinsight/trigger": "new_episodes_sensor"},
        )
        for batch in _chunks(new, DOWNLOAD_BATCH)
    ]
    return SensorResult(
        run_requests=runs,
        dynamic_partitions_requests=[episodes_partitions.build_add_request(new)],
        cursor=cursor,
    )
