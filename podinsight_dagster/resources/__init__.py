"""Dagster resources: one per seam, each building its service through the composition root (``services.py``).

``PodInsightConfig`` (``resources/config.py``, generated from the table of settings) carries the
settings in force as typed fields, each the effective value (the variable's, else the default), so
the UI's resource page shows what a run uses; podrun's credentials are not fields. Each seam
resource builds its service in ``setup_for_execution`` (once per run) and closes it in
``teardown_after_execution``. ``PodInsightResource``
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
from podinsight_dagster.resources.config import PodInsightConfig
from podinsight_dagster.services import (ObjectStores, Services, build_budget, build_checkpoints, build_http,
                                         build_metrics, build_object_stores, build_prices, build_transcriber)
from podinsight_dagster.settings import Settings
from podinsight_dagster.store.checkpoints import CheckpointStore
from podinsight_dagster.store.metrics import Metrics
from podinsight_dagster.transcribe.transcriber import Transcriber


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
