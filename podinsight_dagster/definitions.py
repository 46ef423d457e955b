"""Pod-Insight's Dagster Definitions: assets, checks, jobs, sensors, and the resources of the chosen deployment.

``PODINSIGHT_DEPLOYMENT`` picks the deployment: ``local`` (default: folders and
SQLite under PODINSIGHT_HOME) or ``aws`` (S3, DynamoDB, CloudWatch, Batch). Both
use the same resources, one per seam; what differs is the configuration they are
built from, and so the implementation the composition root picks for each seam
(see docs/ARCHITECTURE.md).
"""

from __future__ import annotations

from dagster import AssetSelection, Definitions, define_asset_job

from podinsight_dagster.assets import assets_for, catalog_assets
from podinsight_dagster.checks import all_checks
from podinsight_dagster.launch import TRANSCRIBE_ASSETS
from podinsight_dagster.partitions import episodes_partitions
from podinsight_dagster.resources import PodInsightConfig, podinsight_resources
from podinsight_dagster.sensors import sensors_for
from podinsight_dagster.settings import DEPLOYMENTS, Settings, SettingsError

ingest_job = define_asset_job(
    "ingest_catalog", selection=AssetSelection.assets(*catalog_assets),
    description="Read the catalog, poll every feed, write the manifest and register new episodes.")
episode_pipeline = define_asset_job(
    "episode_pipeline", selection=AssetSelection.groups("episodes") | AssetSelection.assets("transcript_index"),
    partitions_def=episodes_partitions,
    description="Download, transcribe, segment, score and index episodes.")
fetch_job = define_asset_job(
    "fetch_episodes", selection=AssetSelection.assets("raw_audio"), partitions_def=episodes_partitions,
    description="Phase 1 (run-book §3): download episodes to pod-insights-raw.")
transcribe_job = define_asset_job(
    "transcribe_episodes", selection=AssetSelection.assets(*TRANSCRIBE_ASSETS),
    partitions_def=episodes_partitions,
    description="Phase 2 (run-book §4): transcribe, segment, score and index downloaded episodes.")


def settings_for(deployment: str | None = None, environ: dict[str, str] | None = None) -> Settings:
    """The settings of ``deployment`` (default: ``PODINSIGHT_DEPLOYMENT``'s) read from ``environ``
    (default: the process environment, which only ``settings.py`` reads)."""
    if deployment is None:
        return Settings.from_env(environ)
    if deployment not in DEPLOYMENTS:  # before any other variable: the deployment is the first thing to get right
        raise SettingsError(f"PODINSIGHT_DEPLOYMENT={deployment!r}: choose one of {', '.join(DEPLOYMENTS)}")
    return Settings.from_env(environ, PODINSIGHT_DEPLOYMENT=deployment)


def resources_for(deployment: str | None = None, environ: dict[str, str] | None = None) -> dict:
    """The resources of ``deployment``, configured with the settings in force read from ``environ``."""
    return podinsight_resources(PodInsightConfig.from_settings(settings_for(deployment, environ)))


def _definitions(resources: dict, settings: Settings) -> Definitions:
    # transcript's code_version and the sensors' intervals come from the settings in force.
    return Definitions(
        assets=assets_for(settings),
        asset_checks=all_checks,
        jobs=[ingest_job, episode_pipeline, fetch_job, transcribe_job],
        sensors=sensors_for(settings),  # at the intervals of the settings in force
        resources=resources,
    )


def build_definitions(deployment: str | None = None, environ: dict[str, str] | None = None) -> Definitions:
    """The code location's definitions (what ``dagster dev`` and Dagster+ load).

    The ``config`` resource carries the effective value of every setting (the UI's resource page shows
    them), exactly as ``definitions_for`` does for podrun: the same settings give the same job snapshot,
    so a podrun run matches the code location's job and re-executes from the UI without a warning.
    """
    return definitions_for(settings_for(deployment, environ))


def definitions_for(settings: Settings) -> Definitions:
    """The same definitions with resources fixed to ``settings``: runs that ``podrun`` and the demo launch."""
    return _definitions(podinsight_resources(PodInsightConfig.from_settings(settings)), settings)


defs = build_definitions()  # PODINSIGHT_DEPLOYMENT's deployment (default local)
