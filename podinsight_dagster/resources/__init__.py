"""Dagster resources: one per seam, each building its service through the composition root (``services.py``).

``PodInsightConfig`` carries the settings in force, each field the effective value
(the variable's, else the default), so the UI's resource page shows what a run
uses; podrun's credentials are not fields. Each seam resource builds its service in ``setup_for_execution``
(once per run) and closes it in ``teardown_after_execution``. ``PodInsightResource``
bundles the seams into the ``Services`` that the domain steps take;
``definitions.py`` picks the configuration per deployment.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from dagster import ConfigurableResource, InitResourceContext
from pydantic import PrivateAttr

from podinsight_dagster.costs.budget import Budget
from podinsight_dagster.fetch.catalog import Catalog, load_catalog
from podinsight_dagster.fetch.http import HttpClient
from podinsight_dagster.services import (ObjectStores, Services, build_budget, build_checkpoints, build_http,
                                         build_metrics, build_object_stores, build_prices, build_transcriber)
from podinsight_dagster.settings import CONFIG_VARS, Settings, env_text
from podinsight_dagster.store.checkpoints import CheckpointStore
from podinsight_dagster.store.metrics import Metrics
from podinsight_dagster.transcribe.transcriber import Transcriber


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


class _SeamResource(ConfigurableResource):
    config: PodInsightConfig
    _service: Any = PrivateAttr(default=None)

    def build(self, settings: Settings) -> Any:
        raise NotImplementedError

    def setup_for_execution(self, context: InitResourceContext) -> None:
        self._service = self.build(self.config.settings())

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        close = getattr(self._service, "close", None)
        if close is not None:
            close()
        self._service = None

    def get(self) -> Any:
        if self._service is None:  # used outside a run (a test calling the resource directly)
            self._service = self.build(self.config.settings())
        return self._service


class ObjectStoresResource(_SeamResource):
    """The raw, stage and manifest buckets: folders under PODINSIGHT_HOME locally, S3 on AWS."""

    def build(self, settings: Settings) -> ObjectStores:
        return build_object_stores(settings)


class CheckpointsResource(_SeamResource):
    """Episode and feed state: SQLite locally, DynamoDB on AWS."""

    def build(self, settings: Settings) -> CheckpointStore:
        return build_checkpoints(settings)


class MetricsResource(_SeamResource):
    """The run-book's metrics: a SQLite table locally, CloudWatch on AWS."""

    def build(self, settings: Settings) -> Metrics:
        return build_metrics(settings)


class BudgetResource(_SeamResource):
    """The spend ledger, the ceiling and the compute freezer."""

    def build(self, settings: Settings) -> Budget:
        return build_budget(settings)


class HttpResource(_SeamResource):
    """The HTTP client with the per-host limiter (the catalog's host_limits over the run-book's)."""

    def build(self, settings: Settings) -> HttpClient:
        return build_http(settings)


class TranscriberResource(_SeamResource):
    """Speech to text: faster-whisper in the step's process."""

    def build(self, settings: Settings) -> Transcriber:
        return build_transcriber(settings)


class PodInsightResource(ConfigurableResource):
    """The seams together, as the ``Services`` bundle the domain steps take."""

    config: PodInsightConfig
    stores: ObjectStoresResource
    checkpoints: CheckpointsResource
    metrics: MetricsResource
    budget: BudgetResource
    http: HttpResource
    transcriber: TranscriberResource

    def settings(self) -> Settings:
        return self.config.settings()

    def services(self) -> Services:
        settings = self.settings()
        stores: ObjectStores = self.stores.get()
        return Services(settings=settings, raw=stores.raw, stage=stores.stage, manifests=stores.manifests,
                        checkpoints=self.checkpoints.get(), http=self.http.get(), metrics=self.metrics.get(),
                        budget=self.budget.get(), transcriber=self.transcriber.get(), prices=build_prices(settings))

    def catalog(self) -> Catalog:
        return load_catalog(self.settings().feeds_dir)

    def run_worker(self, context: Any, extras: Mapping[str, Any]) -> Sequence[Any]:
        """Run ``worker.py`` under Dagster Pipes (``PODINSIGHT_TRANSCRIBE_VIA``); the custom messages it reported.

        subprocess: ``python -m podinsight_dagster.worker`` through ``PipesSubprocessClient``, with
        these settings as its environment. batch: a job of ``PODINSIGHT_BATCH_JOB_DEFINITION`` on
        ``PODINSIGHT_BATCH_JOB_QUEUE`` through ``PipesBatchClient`` (context and messages through
        the stage bucket), with the settings that are not this machine's folders.
        """
        settings = self.settings()
        if settings.transcribe_via == "subprocess":
            from dagster import PipesSubprocessClient

            # -m finds the package from the working directory, installed or not.
            root = Path(__file__).resolve().parents[2]
            client = PipesSubprocessClient(env=settings.to_env(), cwd=str(root))
            invocation = client.run(context=context, command=[sys.executable, "-m", "podinsight_dagster.worker"],
                                    extras=dict(extras))
        elif settings.transcribe_via == "batch":
            from podinsight_dagster.pipes_batch import PipesBatchClient
            from podinsight_dagster.services import aws_client

            client = PipesBatchClient(aws_client(settings, "batch"), aws_client(settings, "s3"), settings.stage_bucket,
                                      logs=aws_client(settings, "logs"))
            invocation = client.run(context=context, job_definition=settings.batch_job_definition,
                                    job_queue=settings.batch_job_queue, extras=dict(extras),
                                    environment=settings.to_env(paths=False))
        else:
            raise ValueError(f"PODINSIGHT_TRANSCRIBE_VIA={settings.transcribe_via!r} runs no worker")
        return invocation.get_custom_messages()


def podinsight_resources(config: PodInsightConfig) -> dict[str, ConfigurableResource]:
    """Every resource of a deployment, keyed as the assets, checks and sensors ask for them."""
    seams = {"stores": ObjectStoresResource(config=config), "checkpoints": CheckpointsResource(config=config),
             "metrics": MetricsResource(config=config), "budget": BudgetResource(config=config),
             "http": HttpResource(config=config), "transcriber": TranscriberResource(config=config)}
    return {"config": config, **seams, "podinsight": PodInsightResource(config=config, **seams)}
