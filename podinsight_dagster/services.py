"""The composition root: every service Pod-Insight uses, built here and nowhere else, from one ``Settings``.

Each seam (object stores, checkpoints, metrics, spend ledger and freezer, host
limiter and HTTP client, transcriber) has one builder below that picks the
implementation for ``settings.deployment``. ``build_services`` calls them all for
``podrun``, the demo and the worker; the Dagster resources call the one builder
of their seam, so both paths build the same objects. Dagster-free, like the
domain packages (fetch, transcribe, store, costs) it wires together.
"""

from __future__ import annotations

import sysconfig
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from podinsight_dagster.costs.budget import (BatchComputeFreezer, Budget, ComputeFreezer, LocalComputeFreezer,
                                             SpendLedger, SqliteSpendLedger)
from podinsight_dagster.costs.prices import Prices
from podinsight_dagster.costs.speed import Speed, expected_speed
from podinsight_dagster.fetch.catalog import CatalogError, load_catalog
from podinsight_dagster.fetch.http import HttpClient, HttpConfig
from podinsight_dagster.fetch.limits import HostLimiter, LocalHostLimiter
from podinsight_dagster.fetch.netpolicy import NetworkPolicy
from podinsight_dagster.settings import MANIFEST_BUCKET, RAW_BUCKET, STAGE_BUCKET, Settings
from podinsight_dagster.store.checkpoints import CheckpointStore, SqliteCheckpointStore
from podinsight_dagster.store.metrics import CloudWatchMetrics, Metrics, SqliteMetrics
from podinsight_dagster.store.objects import LocalObjectStore, ObjectStore
from podinsight_dagster.transcribe.engine import pick_device
from podinsight_dagster.transcribe.options import TranscribeOptions
from podinsight_dagster.transcribe.transcriber import InProcessTranscriber, Transcriber


def aws_client(settings: Settings, service: str):
    """A boto3 client for the deployment's region and endpoint (AWS, or a local endpoint such as moto).

    Adaptive retries: throttling (S3 SlowDown, DynamoDB ProvisionedThroughputExceeded, 503s) is
    retried with backoff by botocore itself.
    """
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        service, region_name=settings.aws_region, endpoint_url=settings.aws_endpoint_url,
        config=Config(retries={"max_attempts": 8, "mode": "adaptive"}, max_pool_connections=64))


def preflight(settings: Settings, phase: str) -> None:
    """Every AWS resource a ``phase`` run (fetch, transcribe) uses exists, else ``PreflightError`` naming each.

    Nothing to check for the local deployment (unless transcription goes to Batch).
    """
    from podinsight_dagster.store.preflight import check_stack

    clients: dict[str, object] = {}

    def client_for(service: str):
        if service not in clients:
            clients[service] = aws_client(settings, service)
        return clients[service]

    check_stack(settings, phase, client_for)


def status_table(settings: Settings):
    import boto3
    from botocore.config import Config

    resource = boto3.session.Session().resource(
        "dynamodb", region_name=settings.aws_region, endpoint_url=settings.aws_endpoint_url,
        config=Config(retries={"max_attempts": 8, "mode": "adaptive"}))
    return resource.Table(settings.status_table)


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
    if settings.deployment == "aws":
        from podinsight_dagster.store.s3 import S3ObjectStore

        s3 = aws_client(settings, "s3")
        return ObjectStores(raw=S3ObjectStore(s3, settings.raw_bucket, RAW_BUCKET),
                            stage=S3ObjectStore(s3, settings.stage_bucket, STAGE_BUCKET),
                            manifests=S3ObjectStore(s3, settings.manifest_bucket, MANIFEST_BUCKET))
    settings.ensure_dirs()
    return ObjectStores(raw=LocalObjectStore(settings.raw_root, RAW_BUCKET),
                        stage=LocalObjectStore(settings.stage_root, STAGE_BUCKET),
                        manifests=LocalObjectStore(settings.manifests_root, MANIFEST_BUCKET))


def build_checkpoints(settings: Settings) -> CheckpointStore:
    if settings.deployment == "aws":
        from podinsight_dagster.store.dynamo import DynamoCheckpointStore

        return DynamoCheckpointStore(status_table(settings))
    return SqliteCheckpointStore(settings.checkpoint_db)


def build_metrics(settings: Settings) -> Metrics:
    if settings.deployment == "aws":
        return CloudWatchMetrics(aws_client(settings, "cloudwatch"), settings.metrics_namespace)
    settings.home.mkdir(parents=True, exist_ok=True)
    return SqliteMetrics(settings.checkpoint_db)


def build_prices(settings: Settings) -> Prices:
    return Prices(gpu_hour=settings.price_gpu_hour, cpu_hour=settings.price_cpu_hour)


def build_budget(settings: Settings) -> Budget:
    ledger: SpendLedger
    freezer: ComputeFreezer
    if settings.deployment == "aws":
        from podinsight_dagster.store.dynamo import DynamoSpendLedger

        ledger = DynamoSpendLedger(status_table(settings))
        freezer = BatchComputeFreezer(aws_client(settings, "batch"), settings.gpu_compute_environment)
    else:
        settings.home.mkdir(parents=True, exist_ok=True)
        ledger = SqliteSpendLedger(settings.checkpoint_db)
        freezer = LocalComputeFreezer(settings.checkpoint_db)
    # GPUCostToday is emitted as spend is recorded (run-book §5), to the deployment's metrics.
    return Budget(ledger, settings.cost_ceiling_usd, settings.price_gpu_hour, freezer, metrics=build_metrics(settings),
                  prices=build_prices(settings), speed=transcription_speed(settings))


def transcription_speed(settings: Settings) -> Callable[[str | None], Speed]:
    """The real-time factor cost projections assume for a model (default: the settings' one) where this
    deployment transcribes: the Batch GPU worker (cuda), else this machine's device (``auto``: cuda if present).
    The device is resolved on first use, once."""
    resolved: list[tuple[str, str]] = []

    def speed(model: str | None) -> Speed:
        if not resolved:
            if settings.transcribe_via == "batch":
                resolved.append(pick_device("cuda", settings.compute_type))
            else:
                resolved.append(pick_device(settings.device, settings.compute_type))
        device, compute_type = resolved[0]
        return expected_speed(model or settings.model, device, compute_type, settings.realtime_factor)

    return speed


def catalog_host_limits(settings: Settings) -> dict[str, int]:
    """The catalog's ``host_limits:`` (they override the run-book's defaults for every fetch)."""
    try:
        return load_catalog(settings.feeds_dir).host_limits
    except CatalogError:
        return {}  # no catalog yet (or a broken one, which the catalog asset reports)


def build_limiter(settings: Settings, limits: dict[str, int], *, shared: bool = True) -> HostLimiter:
    """The per-host caps: across one machine's processes (local), or across every task (aws: DynamoDB leases).

    ``shared=False``: within this process only, leaving no trace (a dry run changes nothing).
    """
    if not shared:
        return LocalHostLimiter(limits, settings.default_host_limit)
    if settings.deployment == "aws":
        from podinsight_dagster.fetch.leases import DynamoLeaseHostLimiter

        return DynamoLeaseHostLimiter(status_table(settings), limits, settings.default_host_limit)
    settings.locks_dir.mkdir(parents=True, exist_ok=True)
    return LocalHostLimiter(limits, settings.default_host_limit, settings.locks_dir)


def build_http(settings: Settings, *, shared_limits: bool = True) -> HttpClient:
    config = HttpConfig(max_audio_bytes=settings.max_audio_bytes, max_attempts=settings.http_max_attempts,
                        download_attempts=settings.download_attempts,
                        download_backoff_max=settings.download_backoff_max_s,
                        host_limits=catalog_host_limits(settings), default_host_limit=settings.default_host_limit)
    return HttpClient(config, NetworkPolicy.parse(settings.allow_private_networks),
                      build_limiter(settings, config.host_limits, shared=shared_limits))


def transcribe_options(settings: Settings) -> TranscribeOptions:
    return TranscribeOptions(
        model=settings.model, device=settings.device, compute_type=settings.compute_type,
        batch_size=settings.batch_size, cpu_threads=settings.cpu_threads, model_cache=str(settings.model_cache),
        pack_gap_sec=settings.pack_gap_sec,
        allow_download=settings.allow_model_download, transcript_source=settings.transcript_source,
        language_check_model=settings.language_check_model)


def build_transcriber(settings: Settings, *, in_process: bool = False) -> Transcriber:
    """Where a run's episodes are transcribed (PODINSIGHT_TRANSCRIBE_VIA): in this process, or by worker.py
    under Dagster Pipes in a subprocess or an AWS Batch job (``pipes_transcriber.py``, which imports dagster:
    imported only when chosen, so the worker's image needs none). ``in_process``: whatever the setting says
    (the worker, where a Pipes transcriber's episodes are transcribed)."""
    options = transcribe_options(settings)
    if in_process or settings.transcribe_via == "in-process":
        return InProcessTranscriber(options)
    from podinsight_dagster.pipes_transcriber import BatchTranscriber, SubprocessTranscriber

    if settings.transcribe_via == "subprocess":
        return SubprocessTranscriber(options, env=settings.to_env())
    return BatchTranscriber(options, partial(aws_client, settings), bucket=settings.stage_bucket,
                            job_definition=settings.batch_job_definition, job_queue=settings.batch_job_queue,
                            env=settings.to_env(paths=False))


def build_services(settings: Settings, *, in_process_transcriber: bool = False) -> Services:
    """Every service, for ``podrun``, the demo and the worker (``in_process_transcriber``: see build_transcriber)."""
    stores = build_object_stores(settings)
    return Services(settings=settings, raw=stores.raw, stage=stores.stage, manifests=stores.manifests,
                    checkpoints=build_checkpoints(settings), http=build_http(settings),
                    metrics=build_metrics(settings), budget=build_budget(settings),
                    transcriber=build_transcriber(settings, in_process=in_process_transcriber),
                    prices=build_prices(settings))


# ---------------------------------------------------------------------------
# The archive: DuckDB over the stage layout, the search index, the roll-up's place.
# ---------------------------------------------------------------------------
def duckdb_extension_path(name: str) -> Path:
    """A DuckDB extension from its PyPI package (``duckdb-ext-<name>``): DuckDB would download it otherwise."""
    import duckdb

    root = Path(sysconfig.get_paths()["purelib"]) / "duckdb_ext" / "extensions" / f"v{duckdb.__version__}"
    found = sorted(root.glob(f"*/{name}.duckdb_extension"))
    if not found:
        raise FileNotFoundError(f"DuckDB extension {name} for DuckDB {duckdb.__version__} is not installed "
                                f"(pip install duckdb-ext-{name} from constraints.txt)")
    return found[0]


def stage_uri(settings: Settings) -> str:
    """Where the stage layout lies, as DuckDB reads it: a folder, or s3://<stage bucket>."""
    return f"s3://{settings.stage_bucket}" if settings.deployment == "aws" else str(settings.stage_root)


def archive_uri(settings: Settings) -> str:
    """Where the Parquet roll-up goes: the ALL-IN bucket (a folder locally)."""
    return f"s3://{settings.archive_bucket}" if settings.deployment == "aws" else str(settings.archive_root)


def build_duckdb(settings: Settings):
    """An in-memory DuckDB that reads the deployment's storage: local folders, or S3 through httpfs.

    Extensions are never downloaded: httpfs is loaded from its PyPI package, with the region,
    endpoint and credentials boto3 would use.
    """
    import duckdb

    con = duckdb.connect(":memory:", config={"autoinstall_known_extensions": False,
                                             "autoload_known_extensions": False})
    if settings.deployment == "aws":
        import boto3

        con.execute(f"LOAD '{duckdb_extension_path('httpfs')}'")
        creds = boto3.session.Session().get_credentials()
        frozen = creds.get_frozen_credentials() if creds is not None else None
        options = {"TYPE": "s3", "REGION": settings.aws_region}
        if frozen is not None:
            options.update(KEY_ID=frozen.access_key, SECRET=frozen.secret_key)
            if frozen.token:
                options["SESSION_TOKEN"] = frozen.token
        if settings.aws_endpoint_url:
            endpoint = urlsplit(settings.aws_endpoint_url)
            options.update(ENDPOINT=endpoint.netloc, URL_STYLE="path",
                           USE_SSL="true" if endpoint.scheme == "https" else "false")
        body = ", ".join(f"{k} {v if v in ('true', 'false') or k == 'TYPE' else repr(v)}" for k, v in options.items())
        con.execute(f"CREATE OR REPLACE SECRET pod_insight_s3 ({body})")
    return con


def build_transcript_index(settings: Settings, create: bool = True):
    """The search index (``archive.index.ArchiveIndex``): a SQLite FTS5 file at PODINSIGHT_INDEX_PATH
    (local), or the entries every task writes to the stage bucket, read through a replica at
    PODINSIGHT_INDEX_PATH (aws: ``archive/shared.py``), so any machine's search sees every episode.

    ``create=False``: a reader; no index (or no entry) yet is a ``SearchError``.
    """
    from podinsight_dagster.archive.index import TranscriptIndex

    if settings.deployment == "aws":
        from podinsight_dagster.archive.shared import SharedTranscriptIndex

        return SharedTranscriptIndex(build_object_stores(settings).stage, settings.index_db, create=create)
    return TranscriptIndex(settings.index_db, create=create)
