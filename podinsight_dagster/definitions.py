"""Pod-Insight's Dagster Definitions: assets, jobs, sensors and resources per deployment.

``PODINSIGHT_DEPLOYMENT`` picks the resources: ``local`` (default: folders and
SQLite under PODINSIGHT_HOME). The AWS deployment swaps the same seams (see
docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import os

from dagster import AssetSelection, Definitions, define_asset_job

from .assets import all_assets, catalog_assets
from .checks import all_checks
from .partitions import episodes_partitions
from .resources import PodInsightResource
from .sensors import auto_transcribe_sensor, new_episodes_sensor

ingest_job = define_asset_job(
    "ingest_catalog", selection=AssetSelection.assets(*catalog_assets),
    description="Read the catalog, poll every feed, write the manifest and register new episodes.")
episode_pipeline = define_asset_job(
    "episode_pipeline", selection=AssetSelection.groups("episodes"), partitions_def=episodes_partitions,
    description="Download, transcribe, segment and score episodes.")
fetch_job = define_asset_job(
    "fetch_episodes", selection=AssetSelection.assets("raw_audio"), partitions_def=episodes_partitions,
    description="Phase 1 (run-book §3): download episodes to pod-insights-raw.")
transcribe_job = define_asset_job(
    "transcribe_episodes", selection=AssetSelection.assets("transcript", "segments", "kpis"),
    partitions_def=episodes_partitions,
    description="Phase 2 (run-book §4): transcribe, segment and score downloaded episodes.")

RESOURCES_BY_DEPLOYMENT = {
    "local": {"podinsight": PodInsightResource()},
}


def resources_for(deployment: str) -> dict:
    try:
        return RESOURCES_BY_DEPLOYMENT[deployment]
    except KeyError:
        raise ValueError(f"PODINSIGHT_DEPLOYMENT={deployment!r}: choose one of {sorted(RESOURCES_BY_DEPLOYMENT)}")


defs = Definitions(
    assets=all_assets,
    asset_checks=all_checks,
    jobs=[ingest_job, episode_pipeline, fetch_job, transcribe_job],
    sensors=[new_episodes_sensor, auto_transcribe_sensor],
    resources=resources_for(os.environ.get("PODINSIGHT_DEPLOYMENT", "local")),
)
