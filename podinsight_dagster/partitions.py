"""The one partitions definition every per-episode asset shares: ``<feed_slug>/<guid_key>``."""

from dagster import DynamicPartitionsDefinition

EPISODES = "episodes"
episodes_partitions = DynamicPartitionsDefinition(name=EPISODES)

# Run tags that make one run cover a range of partitions (what backfills and sensors set).
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
