"""The one partitions definition every per-episode asset shares: ``<feed_slug>/<guid_key>``."""

from dagster import DynamicPartitionsDefinition

EPISODES = "episodes"
episodes_partitions = DynamicPartitionsDefinition(name=EPISODES)

# Run tags that make one run cover a range of partitions (what backfills and sensors set).
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def contiguous_ranges(ordered: list[str], wanted: list[str]) -> list[tuple[str, str]]:
    """Split ``wanted`` into runs of neighbours in the instance's partition order (one Dagster run each)."""
    want = set(wanted)
    ranges, start, prev = [], None, None
    for key in ordered:
        if key in want:
            if start is None:
                start = key
            prev = key
        elif start is not None:
            ranges.append((start, prev))
            start = None
    if start is not None:
        ranges.append((start, prev))
    return ranges
