"""The composition root: every service Pod-Insight uses, built here and nowhere else, from one ``Settings``.

Each seam (object stores, checkpoints, metrics, spend ledger and freezer, host
limiter and HTTP client, transcriber) has one builder below that picks the
implementation for ``settings.deployment``. ``build_services`` calls them all for
``podrun``, the demo and the worker; the Dagster resources call the one builder
of their seam, so both paths build the same objects. Dagster-free, like the
domain packages (fetch, transcribe, store, costs) it wires together.
"""

from __future__ import annotations

from dataclasses import dataclass

from podinsight_dagster.costs.budget import (Budget, ComputeFreezer, LocalComputeFreezer, SpendLedger,
                                             SqliteSpendLedger)
from podinsight_dagster.costs.prices import Prices
from podinsight_dagster.fetch.catalog import CatalogError, load_catalog
from podinsight_dagster.fetch.http import HttpClient, HttpConfig
from podinsight_dagster.fetch.limits import HostLimiter, LocalHostLimiter
from podinsight_dagster.fetch.netpolicy import NetworkPolicy
from podinsight_dagster.settings import MANIFEST_BUCKET, RAW_BUCKET, STAGE_BUCKET, Settings
from podinsight_dagster.store.checkpoints import CheckpointStore, SqliteCheckpointStore
from podinsight_dagster.store.metrics import Metrics, SqliteMetrics
from podinsight_dagster.store.objects import LocalObjectStore, ObjectStore
from podinsight_dagster.transcribe.options import TranscribeOptions
from podinsight_dagster.transcribe.transcriber import InProcessTranscriber, Transcriber


class DeploymentNotReady(RuntimeError):
    """The chosen deployment lacks an implementation of a seam; the message says which."""


AWS_MISSING = ("the aws deployment cannot run yet: its S3 object store, DynamoDB checkpoints and spend ledger "
               "and CloudWatch metrics are not built (see docs/ARCHITECTURE.md); use PODINSIGHT_DEPLOYMENT=local")


def _require_local(settings: Settings, seam: str) -> None:
    if settings.deployment != "local":
        raise DeploymentNotReady(f"{seam}: {AWS_MISSING}")


@dataclass(frozen=True)
class ObjectStores:
    """The run-book's three buckets (§2)."""

    raw: ObjectStore
    stage: ObjectStore
    manifests: ObjectStore


@dataclass
class Services:
    """Everything a step needs, for one deployment."""

    settings: Settings
    raw: ObjectStore
    stage: ObjectStore
    manifests: ObjectStore
    checkpoints: CheckpointStore
    http: HttpClient
    metrics: Metrics
    budget: Budget
    transcriber: Transcriber
    prices: Prices

    def close(self) -> None:
        """Release connections (HTTP sessions, database handles)."""
        self.http.close()
        self.checkpoints.close()


# ---------------------------------------------------------------------------
# One builder per seam.
# ---------------------------------------------------------------------------
def build_object_stores(settings: Settings) -> ObjectStores:
    _require_local(settings, "object store")
    settings.ensure_dirs()
    return ObjectStores(raw=LocalObjectStore(settings.raw_root, RAW_BUCKET),
                        stage=LocalObjectStore(settings.stage_root, STAGE_BUCKET),
                        manifests=LocalObjectStore(settings.manifests_root, MANIFEST_BUCKET))


def build_checkpoints(settings: Settings) -> CheckpointStore:
    _require_local(settings, "checkpoint store")
    return SqliteCheckpointStore(settings.checkpoint_db)


def build_metrics(settings: Settings) -> Metrics:
    _require_local(settings, "metrics")
    settings.home.mkdir(parents=True, exist_ok=True)
    return SqliteMetrics(settings.checkpoint_db)


def build_prices(settings: Settings) -> Prices:
    return Prices(gpu_hour=settings.price_gpu_hour, cpu_hour=settings.price_cpu_hour)


def build_budget(settings: Settings) -> Budget:
    _require_local(settings, "spend ledger")
    settings.home.mkdir(parents=True, exist_ok=True)
    ledger: SpendLedger = SqliteSpendLedger(settings.checkpoint_db)
    freezer: ComputeFreezer = LocalComputeFreezer(settings.checkpoint_db)
    return Budget(ledger, settings.cost_ceiling_usd, settings.price_gpu_hour, freezer)


def catalog_host_limits(settings: Settings) -> dict[str, int]:
    """The catalog's ``host_limits:`` (they override the run-book's defaults for every fetch)."""
    try:
        return load_catalog(settings.feeds_dir).host_limits
    except CatalogError:
        return {}  # no catalog yet (or a broken one, which the catalog asset reports)


def build_http(settings: Settings) -> HttpClient:
    # The limiter's lock folder holds the caps across the processes of one machine (one ECS task on AWS).
    config = HttpConfig(max_audio_bytes=settings.max_audio_bytes, max_attempts=settings.http_max_attempts,
                        host_limits=catalog_host_limits(settings), default_host_limit=settings.default_host_limit)
    settings.locks_dir.mkdir(parents=True, exist_ok=True)
    limiter: HostLimiter = LocalHostLimiter(config.host_limits, config.default_host_limit, settings.locks_dir)
    return HttpClient(config, NetworkPolicy.parse(settings.allow_private_networks), limiter)


def transcribe_options(settings: Settings) -> TranscribeOptions:
    return TranscribeOptions(
        model=settings.model, device=settings.device, compute_type=settings.compute_type,
        batch_size=settings.batch_size, cpu_threads=settings.cpu_threads, model_cache=str(settings.model_cache),
        allow_download=settings.allow_model_download, transcript_source=settings.transcript_source,
        language_check_model=settings.language_check_model)


def build_transcriber(settings: Settings) -> Transcriber:
    return InProcessTranscriber(transcribe_options(settings))


def build_services(settings: Settings) -> Services:
    """Every service, for ``podrun``, the demo and the worker."""
    stores = build_object_stores(settings)
    return Services(settings=settings, raw=stores.raw, stage=stores.stage, manifests=stores.manifests,
                    checkpoints=build_checkpoints(settings), http=build_http(settings),
                    metrics=build_metrics(settings), budget=build_budget(settings),
                    transcriber=build_transcriber(settings), prices=build_prices(settings))
