"""The seam resources: one Dagster resource per seam of the composition root, which each asset lists that uses it.

An asset's parameters name the seams it uses (``stores``, ``checkpoints``, ``http``,
``metrics``, ``budget``, ``transcriber``, ``catalog``, ``archive``), so the UI's asset page
shows which systems each one touches. Every seam resource nests ``config`` (the settings in
force) and builds its service through its one builder in ``services.py``, which picks the
implementation for the deployment: nothing here chooses one. A service is built in
``setup_for_execution`` (once per run process) and closed in ``teardown_after_execution``.

``services_from`` hands the domain steps the ``Services`` bundle they take, holding the seams
the asset asked for; touching any other is a ``SeamNotRequested`` naming it, so a step that
starts using a seam its asset does not list fails in the tests, not silently. ``PodInsightResource``
is every seam together, for the sensors.
"""

from __future__ import annotations

from typing import Any

from dagster import ConfigurableResource, InitResourceContext
from pydantic import PrivateAttr

from podinsight_dagster.costs.budget import Budget
from podinsight_dagster.fetch.catalog import Catalog, load_catalog
from podinsight_dagster.fetch.http import HttpClient
from podinsight_dagster.resources.config import PodInsightConfig
from podinsight_dagster.services import (ObjectStores, Services, archive_uri, build_budget, build_checkpoints,
                                         build_duckdb, build_http, build_metrics, build_object_stores, build_prices,
                                         build_transcriber, build_transcript_index, stage_uri)
from podinsight_dagster.settings import Settings
from podinsight_dagster.store.checkpoints import CheckpointStore
from podinsight_dagster.store.metrics import Metrics
from podinsight_dagster.transcribe.transcriber import Transcriber


class SeamResource(ConfigurableResource):
    """One seam's service, built from the settings in force by its builder in ``services.py``."""

    config: PodInsightConfig
    _service: Any = PrivateAttr(default=None)

    def build(self, settings: Settings) -> Any:
        raise NotImplementedError

    def settings(self) -> Settings:
        return self.config.settings()

    def setup_for_execution(self, context: InitResourceContext) -> None:
        self._service = self.build(self.settings())

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        close = getattr(self._service, "close", None)
        if close is not None:
            close()
        self._service = None

    def get(self) -> Any:
        if self._service is None:  # used outside a run (a test calling the resource directly)
            self._service = self.build(self.settings())
        return self._service


class ObjectStoresResource(SeamResource):
    """The raw, stage and manifest buckets: folders under PODINSIGHT_HOME locally, S3 on AWS."""

    def build(self, settings: Settings) -> ObjectStores:
        return build_object_stores(settings)


class CheckpointsResource(SeamResource):
    """Episode and feed state, and the claims on each episode's stages: SQLite locally, DynamoDB on AWS."""

    def build(self, settings: Settings) -> CheckpointStore:
        return build_checkpoints(settings)


class MetricsResource(SeamResource):
    """The run-book's metrics: a SQLite table locally, CloudWatch on AWS."""

    def build(self, settings: Settings) -> Metrics:
        return build_metrics(settings)


class BudgetResource(SeamResource):
    """The spend ledger, the ceiling and the compute freezer."""

    def build(self, settings: Settings) -> Budget:
        return build_budget(settings)


class HttpResource(SeamResource):
    """The HTTP client with the per-host limiter (the catalog's host_limits over the run-book's)."""

    def build(self, settings: Settings) -> HttpClient:
        return build_http(settings)


class TranscriberResource(SeamResource):
    """Speech to text where PODINSIGHT_TRANSCRIBE_VIA says: in the step's process, or worker.py under Dagster
    Pipes in a subprocess or an AWS Batch job."""

    def build(self, settings: Settings) -> Transcriber:
        return build_transcriber(settings)


class CatalogResource(ConfigurableResource):
    """The feed catalog: the tier*_feeds.yaml files of PODINSIGHT_FEEDS_DIR, read when asked."""

    config: PodInsightConfig

    def load(self) -> Catalog:
        return load_catalog(self.config.settings().feeds_dir)


class ArchiveResource(ConfigurableResource):
    """The archive: the search index and DuckDB over the stage layout, each opened when asked (the caller closes
    it), and where the Parquet roll-up goes."""

    config: PodInsightConfig

    def index(self, create: bool = True):
        return build_transcript_index(self.config.settings(), create=create)

    def duckdb(self):
        return build_duckdb(self.config.settings())

    def stage_uri(self) -> str:
        return stage_uri(self.config.settings())

    def archive_uri(self) -> str:
        return archive_uri(self.config.settings())


class SeamNotRequested(RuntimeError):
    """A step used a seam its asset does not list among its resources."""


class NotRequested:
    """Stands for a seam the asset did not request: any use of it is a SeamNotRequested naming the resource."""

    def __init__(self, resource_key: str):
        self._resource_key = resource_key

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # copy, pickle and friends probe dunders: not a use of the seam
            raise AttributeError(name)
        raise SeamNotRequested(f"this step used the {self._resource_key!r} resource ({name}), which its asset does "
                               f"not request: add `{self._resource_key}` to the asset's parameters")

    def __repr__(self) -> str:
        return f"NotRequested({self._resource_key!r})"


def services_from(*, stores: ObjectStoresResource | None = None, checkpoints: CheckpointsResource | None = None,
                  http: HttpResource | None = None, metrics: MetricsResource | None = None,
                  budget: BudgetResource | None = None, transcriber: TranscriberResource | None = None) -> Services:
    """The ``Services`` the domain steps take, from the seam resources an asset requested (at least one)."""
    given = [r for r in (stores, checkpoints, http, metrics, budget, transcriber) if r is not None]
    if not given:
        raise ValueError("services_from needs at least one seam resource")
    settings = given[0].settings()
    object_stores: Any = stores.get() if stores is not None else None
    return Services(
        settings=settings,
        raw=object_stores.raw if object_stores else NotRequested("stores"),
        stage=object_stores.stage if object_stores else NotRequested("stores"),
        manifests=object_stores.manifests if object_stores else NotRequested("stores"),
        checkpoints=checkpoints.get() if checkpoints is not None else NotRequested("checkpoints"),
        http=http.get() if http is not None else NotRequested("http"),
        metrics=metrics.get() if metrics is not None else NotRequested("metrics"),
        budget=budget.get() if budget is not None else NotRequested("budget"),
        transcriber=transcriber.get() if transcriber is not None else NotRequested("transcriber"),
        prices=build_prices(settings))


class PodInsightResource(ConfigurableResource):
    """Every seam together, as the ``Services`` bundle (the sensors, which read across seams)."""

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
        return services_from(stores=self.stores, checkpoints=self.checkpoints, http=self.http, metrics=self.metrics,
                             budget=self.budget, transcriber=self.transcriber)

    def catalog(self) -> Catalog:
        return load_catalog(self.settings().feeds_dir)


def podinsight_resources(config: PodInsightConfig) -> dict[str, ConfigurableResource]:
    """Every resource of a deployment, keyed as the assets, checks and sensors ask for them."""
    seams = {"stores": ObjectStoresResource(config=config), "checkpoints": CheckpointsResource(config=config),
             "metrics": MetricsResource(config=config), "budget": BudgetResource(config=config),
             "http": HttpResource(config=config), "transcriber": TranscriberResource(config=config)}
    return {"config": config, **seams, "catalog": CatalogResource(config=config),
            "archive": ArchiveResource(config=config), "podinsight": PodInsightResource(config=config, **seams)}
