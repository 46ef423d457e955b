"""Dagster resources: the settings in force (``PodInsightConfig``) and one resource per seam (``seams.py``).

``PodInsightConfig`` carries the settings in force, each field the effective value
(the variable's, else the default), so the UI's resource page shows what a run
uses; podrun's credentials are not fields. The seam resources (resources/seams.py) nest it and
build each seam's service through the composition root (``services.py``); each asset lists those
it uses. ``definitions.py`` picks the configuration per deployment.
"""

from __future__ import annotations

from typing import Any

from dagster import ConfigurableResource

from podinsight_dagster.settings import CONFIG_VARS, Settings, env_text


class PodInsightConfig(ConfigurableResource):
    """The settings in force: each field is the text of its setting's effective value (empty: none).

    The field names are ``Settings``' fields; ``settings.CONFIG_VARS`` maps them to variables
    (every variable but podrun's credentials).
    """

    deployment: str = ""
    home: str = ""
    feeds_dir: str = ""
    model: str = ""
    model_cache: str = ""
    allow_model_download: str = ""
    device: str = ""
    compute_type: str = ""
    batch_size: str = ""
    cpu_threads: str = ""
    pack_gap_sec: str = ""
    transcript_source: str = ""
    language_check_model: str = ""
    transcribe_via: str = ""
    batch_job_queue: str = ""
    batch_job_definition: str = ""
    diarization: str = ""
    speakers: str = ""
    episodes_per_run: str = ""
    allow_private_networks: str = ""
    default_host_limit: str = ""
    http_max_attempts: str = ""
    max_audio_bytes: str = ""
    claim_lease_sec: str = ""
    download_attempts: str = ""
    download_backoff_max_s: str = ""
    feed_max_pages: str = ""
    publish_base_url: str = ""
    cost_ceiling_usd: str = ""
    price_gpu_hour: str = ""
    price_cpu_hour: str = ""
    realtime_factor: str = ""
    new_episodes_interval_sec: str = ""
    auto_transcribe_interval_sec: str = ""
    raw_bucket: str = ""
    stage_bucket: str = ""
    manifest_bucket: str = ""
    archive_bucket: str = ""
    index_path: str = ""
    status_table: str = ""
    metrics_namespace: str = ""
    gpu_compute_environment: str = ""
    aws_region: str = ""
    aws_endpoint_url: str = ""

    def settings(self) -> Settings:
        return Settings.from_env({var.name: getattr(self, var.field) for var in CONFIG_VARS})

    @classmethod
    def from_settings(cls, settings: Settings) -> "PodInsightConfig":
        """The effective values of ``settings`` (what the code location and podrun's runs both use).

        Not ``EnvVar``s: the UI showed an ``EnvVar`` field as "" / Default, never the value in force.
        """
        return cls(**{var.field: env_text(getattr(settings, var.field)) for var in CONFIG_VARS})


# The seam resources (one per seam), the bundle and ``podinsight_resources`` live in resources/seams.py, which
# nests PodInsightConfig; named here too, read when first asked (an import here would be a cycle).
_IN_SEAMS = ("ObjectStoresResource", "CheckpointsResource", "MetricsResource", "BudgetResource", "HttpResource",
             "TranscriberResource", "CatalogResource", "ArchiveResource", "PodInsightResource", "podinsight_resources",
             "services_from")


def __getattr__(name: str) -> Any:
    if name in _IN_SEAMS:
        from podinsight_dagster.resources import seams

        return getattr(seams, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
