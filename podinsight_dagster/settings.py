"""Every setting of Pod-Insight, read once: from the environment (or a mapping of the same names) into ``Settings``.

One data root (``PODINSIGHT_HOME``, default ``./data``) holds the run-book's three
buckets as folders, the SQLite checkpoint store and the Dagster instance, so the
demo, ``podrun`` and ``dagster dev`` all see the same state. Nothing else in the
package reads the environment: ``podrun`` flags override a field with
``Settings.replace``, and the Dagster resources hand their (``EnvVar``) fields to
``Settings.from_env`` as a mapping.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

RAW_BUCKET = "pod-insights-raw"
STAGE_BUCKET = "pod-insights-stage"
MANIFEST_BUCKET = "pod-insights-manifests"
ARCHIVE_BUCKET = "pod-insights-all-in"   # run-book §8: the optional ALL-IN roll-up bucket
STATUS_TABLE = "podinsights-status"      # run-book Appendix A
METRICS_NAMESPACE = "PodInsight"
DEFAULT_MODEL = "base"  # run-book §4.2: --model defaults to base
DEPLOYMENTS = ("local", "aws")
TRANSCRIPT_SOURCES = ("prefer_publisher", "always_asr", "both")
TRANSCRIBE_VIA = ("in-process", "subprocess", "batch")
DIARIZATION = ("voice", "off")


class SettingsError(ValueError):
    """A setting whose value cannot be used; the message names the variable and what it takes."""


def _default_model_cache() -> Path:
    return Path.home() / ".cache" / "podinsight" / "models"


@dataclass(frozen=True)
class Settings:
    home: Path
    feeds_dir: Path
    deployment: str = "local"
    # transcription (run-book §4)
    model: str = DEFAULT_MODEL
    model_cache: Path = field(default_factory=_default_model_cache)
    allow_model_download: bool = False
    device: str = "auto"                # auto: cuda when present
    compute_type: str = "auto"          # auto: float16 on a GPU, int8 on a CPU
    batch_size: int = 8
    cpu_threads: int = 0                # 0: one per core
    pack_gap_sec: float = 1.0           # short episodes share 30-s windows, this much silence apart; 0: off
    transcript_source: str = "prefer_publisher"
    language_check_model: str | None = None
    # where the transcript asset runs Whisper: in its own process, or the worker under Dagster Pipes
    # (a subprocess, or an AWS Batch job on the GPU queue: run-book §4.5 2.2-2.3)
    transcribe_via: str = "in-process"
    batch_job_queue: str = "transcribe"      # iac/batch_gpu_spot.tf: the GPU queue
    batch_job_definition: str = "whisper-base"
    # who spoke (speakers/): voice embeddings clustered per episode, or off; a forced speaker count
    diarization: str = "voice"
    speakers: int = 0                   # 0: estimated from the audio (the feed's people an upper bound)
    # episodes per run of a backfill (the episode assets' BackfillPolicy.multi_run): a backfill of N
    # episodes becomes ceil(N / this) runs, which the deployment's run queue runs side by side
    episodes_per_run: int = 100
    # fetching (run-book §3)
    allow_private_networks: str = ""
    default_host_limit: int = 10        # run-book §3.2: hosts not in HOST_LIMIT get 10
    http_max_attempts: int = 4
    max_audio_bytes: int = 1 << 30
    # an episode's stage claim (download, transcribe) across tasks: its lease, renewed every third of it
    # while its holder lives; a killed task's episodes are taken over once it runs out (store/claims.py)
    claim_lease_sec: float = 600.0
    # an episode's download retries itself (fetch/retry.py): tries, and the longest wait between two, so it is
    # asked again within that many seconds of its host answering (6 tries, 8 s: an outage of 11.5 s is bridged,
    # a hopeless episode waits at most 23 s in all)
    download_attempts: int = 6
    download_backoff_max_s: float = 8.0
    feed_max_pages: int = 50            # pages of a paged feed (RFC 5005) read per poll
    publish_base_url: str | None = None  # where the stage bucket is served publicly (podrun publish links it)
    # money (run-book §4.4, §6)
    cost_ceiling_usd: float = 40.0      # GPUCostToday < $40
    price_gpu_hour: float = 0.30        # g5.xlarge Spot (run-book §2.5: 83 GPU-h x $0.30)
    price_cpu_hour: float = 0.04
    realtime_factor: float = 0.0        # cost projections' speed; 0: measured per device (costs/speed.py)
    # sensors (sensors/): how often new_episodes_sensor polls the feeds, and how soon auto_transcribe_sensor
    # (when switched on) queues what finished downloading
    new_episodes_interval_sec: int = 15 * 60
    auto_transcribe_interval_sec: int = 30
    # AWS deployment names (run-book §2, Appendix A)
    raw_bucket: str = RAW_BUCKET
    stage_bucket: str = STAGE_BUCKET
    manifest_bucket: str = MANIFEST_BUCKET
    archive_bucket: str = ARCHIVE_BUCKET
    index_path: Path | None = None       # the search index (SQLite FTS5; on aws a replica); None: $PODINSIGHT_HOME/transcript_index.sqlite
    status_table: str = STATUS_TABLE
    metrics_namespace: str = METRICS_NAMESPACE
    gpu_compute_environment: str = "gpu_spot"
    aws_region: str = "us-east-1"
    aws_endpoint_url: str | None = None  # a local AWS endpoint (moto) instead of AWS
    # credentials podrun --dagster-url sends to a deployment (never flags, never shown: repr=False)
    dagster_cloud_api_token: str | None = field(default=None, repr=False)
    dagster_token: str | None = field(default=None, repr=False)

    @property
    def raw_root(self) -> Path:
        return self.home / RAW_BUCKET

    @property
    def stage_root(self) -> Path:
        return self.home / STAGE_BUCKET

    @property
    def manifests_root(self) -> Path:
        return self.home / MANIFEST_BUCKET

    @property
    def archive_root(self) -> Path:
        return self.home / ARCHIVE_BUCKET

    @property
    def index_db(self) -> Path:
        return self.index_path or self.home / "transcript_index.sqlite"

    @property
    def checkpoint_db(self) -> Path:
        return self.home / "checkpoints.sqlite"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    @property
    def locks_dir(self) -> Path:
        return self.home / "locks"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        """Settings from ``environ`` (default: the process environment); unset or empty means the default."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for var in ENV_VARS:
            raw = (env.get(var.name) or "").strip()
            if raw:
                values[var.field] = var.parse(var.name, raw)
        home = Path(values.pop("home", "data")).expanduser().resolve()
        feeds_dir = Path(values.pop("feeds_dir", home / "feeds")).expanduser().resolve()
        return cls(home=home, feeds_dir=feeds_dir, **values)

    def replace(self, **changes: object) -> "Settings":
        """These settings with some fields changed (how ``podrun`` flags override the environment)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def __post_init__(self) -> None:
        if self.deployment not in DEPLOYMENTS:
            raise SettingsError(f"PODINSIGHT_DEPLOYMENT={self.deployment!r}: choose one of {', '.join(DEPLOYMENTS)}")
        if self.transcript_source not in TRANSCRIPT_SOURCES:
            raise SettingsError(f"PODINSIGHT_TRANSCRIPT_SOURCE={self.transcript_source!r}: choose one of "
                                f"{', '.join(TRANSCRIPT_SOURCES)}")
        if self.transcribe_via not in TRANSCRIBE_VIA:
            raise SettingsError(f"PODINSIGHT_TRANSCRIBE_VIA={self.transcribe_via!r}: choose one of "
                                f"{', '.join(TRANSCRIBE_VIA)}")
        if self.diarization not in DIARIZATION:
            raise SettingsError(f"PODINSIGHT_DIARIZATION={self.diarization!r}: choose one of {', '.join(DIARIZATION)}")
        if not 0 <= self.speakers <= 8:
            raise SettingsError(f"PODINSIGHT_SPEAKERS={self.speakers}: 0 (from the feed or estimated) up to 8")
        if self.batch_size < 1:
            raise SettingsError(f"PODINSIGHT_BATCH_SIZE={self.batch_size}: must be at least 1")
        if not self.claim_lease_sec > 0:
            raise SettingsError(f"PODINSIGHT_CLAIM_LEASE_SEC={self.claim_lease_sec}: must be more than 0 seconds")
        if self.download_attempts < 1:
            raise SettingsError(f"PODINSIGHT_DOWNLOAD_ATTEMPTS={self.download_attempts}: must be at least 1")
        if not 0 <= self.download_backoff_max_s <= 600:
            raise SettingsError(f"PODINSIGHT_DOWNLOAD_BACKOFF_MAX_S={self.download_backoff_max_s}: 0 up to 600 seconds")
        if not 0 <= self.realtime_factor < 1e6:
            raise SettingsError(f"PODINSIGHT_REALTIME_FACTOR={self.realtime_factor}: 0 (the measured figure) or a "
                                "positive real-time factor")
        if self.feed_max_pages < 1:
            raise SettingsError(f"PODINSIGHT_FEED_MAX_PAGES={self.feed_max_pages}: must be at least 1")
        for name, value in (("PODINSIGHT_NEW_EPISODES_INTERVAL_SEC", self.new_episodes_interval_sec),
                            ("PODINSIGHT_AUTO_TRANSCRIBE_INTERVAL_SEC", self.auto_transcribe_interval_sec)):
            if value < 1:
                raise SettingsError(f"{name}={value}: must be at least 1 second")
        if self.episodes_per_run < 1:
            raise SettingsError(f"PODINSIGHT_EPISODES_PER_RUN={self.episodes_per_run}: must be at least 1")
        if not 0 <= self.pack_gap_sec <= 5:
            raise SettingsError(f"PODINSIGHT_PACK_GAP_SEC={self.pack_gap_sec}: 0 (off) up to 5 seconds")

    def to_env(self, *, paths: bool = True) -> dict[str, str]:
        """These settings as the environment variables that give them (how a worker process gets them).

        ``paths=False`` leaves out this machine's folders (data root, catalog, model cache): for a
        container elsewhere, which uses its own.
        """
        return {var.name: env_text(getattr(self, var.field)) for var in ENV_VARS
                if paths or var.parse is not _path}

    def ensure_dirs(self) -> None:
        for path in (self.raw_root, self.stage_root, self.manifests_root, self.dagster_home, self.locks_dir):
            path.mkdir(parents=True, exist_ok=True)
        if not self.feeds_dir.is_file():  # --feeds may name one catalog file
            self.feeds_dir.mkdir(parents=True, exist_ok=True)


# ---------------------------------------------------------------------------
# The environment variables, one per field: the only list of them.
# ---------------------------------------------------------------------------
def env_text(value: object) -> str:
    """A field's value as its variable's text (None: empty, which means the default)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _text(name: str, raw: str) -> str:
    return raw


def _path(name: str, raw: str) -> Path:
    return Path(raw).expanduser().resolve()


def _flag(name: str, raw: str) -> bool:
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={raw!r} is not a yes/no value (1 or 0)")


def _int(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a whole number") from None


def _float(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None
    if not math.isfinite(value):
        raise SettingsError(f"{name}={raw!r} is not a number")
    return value


def _usd(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an amount in USD") from None
    if not math.isfinite(value):  # nan would compare false with everything: no ceiling at all
        raise SettingsError(f"{name}={raw!r} is not an amount in USD")
    if value < 0:
        raise SettingsError(f"{name}={raw!r} is negative")
    return value


@dataclass(frozen=True)
class EnvVar:
    name: str
    field: str
    parse: Callable[[str, str], object]
    help: str
    # A credential of the podrun client: not a field of the Dagster ``config`` resource (the UI
    # would show it), never in Settings' repr.
    secret: bool = False


ENV_VARS: tuple[EnvVar, ...] = (
    EnvVar("PODINSIGHT_DEPLOYMENT", "deployment", _text, "local (folders, SQLite) or aws (S3, DynamoDB, CloudWatch)"),
    EnvVar("PODINSIGHT_HOME", "home", _path, "data root"),
    EnvVar("PODINSIGHT_FEEDS_DIR", "feeds_dir", _path, "folder (or file) of tier*_feeds.yaml"),
    EnvVar("PODINSIGHT_MODEL", "model", _text, "base, tiny.en or a CTranslate2 model folder"),
    EnvVar("PODINSIGHT_MODEL_CACHE", "model_cache", _path, "where base is assembled from its PyPI parts"),
    EnvVar("PODINSIGHT_ALLOW_MODEL_DOWNLOAD", "allow_model_download", _flag, "1: unknown models from the hub"),
    EnvVar("PODINSIGHT_DEVICE", "device", _text, "auto, cpu or cuda"),
    EnvVar("PODINSIGHT_COMPUTE_TYPE", "compute_type", _text, "auto, int8, float16, ..."),
    EnvVar("PODINSIGHT_BATCH_SIZE", "batch_size", _int, "speech chunks per batch"),
    EnvVar("PODINSIGHT_CPU_THREADS", "cpu_threads", _int, "CTranslate2 threads (0: one per core)"),
    EnvVar("PODINSIGHT_PACK_GAP_SEC", "pack_gap_sec", _float,
           "seconds of silence between short episodes packed into one 30-s window (0: no packing)"),
    EnvVar("PODINSIGHT_TRANSCRIPT_SOURCE", "transcript_source", _text, "prefer_publisher, always_asr or both"),
    EnvVar("PODINSIGHT_LANGUAGE_CHECK_MODEL", "language_check_model", _text, "multilingual model for .en checks"),
    EnvVar("PODINSIGHT_TRANSCRIBE_VIA", "transcribe_via", _text,
           "in-process, subprocess (the worker under Dagster Pipes) or batch (aws)"),
    EnvVar("PODINSIGHT_BATCH_JOB_QUEUE", "batch_job_queue", _text, "Batch job queue of the GPU worker (aws)"),
    EnvVar("PODINSIGHT_BATCH_JOB_DEFINITION", "batch_job_definition", _text, "Batch job definition of the GPU worker (aws)"),
    EnvVar("PODINSIGHT_DIARIZATION", "diarization", _text, "voice (speaker labels from voice embeddings) or off"),
    EnvVar("PODINSIGHT_SPEAKERS", "speakers", _int,
           "speakers per episode (0: estimated from the audio, at most the feed's podcast:person hosts and guests)"),
    EnvVar("PODINSIGHT_EPISODES_PER_RUN", "episodes_per_run", _int,
           "episodes per run of a backfill (the episode assets' multi-run backfill policy)"),
    EnvVar("PODINSIGHT_ALLOW_PRIVATE_NETWORKS", "allow_private_networks", _text, "1, or CIDRs fetching may reach"),
    EnvVar("PODINSIGHT_DEFAULT_HOST_LIMIT", "default_host_limit", _int, "connections per host not listed"),
    EnvVar("PODINSIGHT_HTTP_MAX_ATTEMPTS", "http_max_attempts", _int, "tries per request (retryable errors)"),
    EnvVar("PODINSIGHT_MAX_AUDIO_BYTES", "max_audio_bytes", _int, "largest episode accepted"),
    EnvVar("PODINSIGHT_CLAIM_LEASE_SEC", "claim_lease_sec", _float,
           "lease of an episode's download or transcription claim; a killed task's episodes are taken over after it"),
    EnvVar("PODINSIGHT_DOWNLOAD_ATTEMPTS", "download_attempts", _int,
           "tries per episode download (retryable errors only: timeouts, resets, cut bodies, 429, 5xx)"),
    EnvVar("PODINSIGHT_DOWNLOAD_BACKOFF_MAX_S", "download_backoff_max_s", _float,
           "longest wait between two tries of an episode download"),
    EnvVar("PODINSIGHT_PUBLISH_BASE_URL", "publish_base_url", _text,
           "public http(s) address of the stage bucket: `podrun publish` links transcripts and chapters there"),
    EnvVar("PODINSIGHT_FEED_MAX_PAGES", "feed_max_pages", _int,
           "pages of a paged feed (rel=next) read per poll; a longer back-catalogue continues on the next poll"),
    EnvVar("PODINSIGHT_COST_CEILING_USD", "cost_ceiling_usd", _usd, "GPUCostToday ceiling"),
    EnvVar("PODINSIGHT_PRICE_GPU_HOUR", "price_gpu_hour", _usd, "USD per GPU hour"),
    EnvVar("PODINSIGHT_PRICE_CPU_HOUR", "price_cpu_hour", _usd, "USD per CPU hour"),
    EnvVar("PODINSIGHT_REALTIME_FACTOR", "realtime_factor", _float,
           "audio seconds per compute second cost projections assume (0: measured per device, costs/speed.py)"),
    EnvVar("PODINSIGHT_NEW_EPISODES_INTERVAL_SEC", "new_episodes_interval_sec", _int,
           "seconds between new_episodes_sensor's feed polls"),
    EnvVar("PODINSIGHT_AUTO_TRANSCRIBE_INTERVAL_SEC", "auto_transcribe_interval_sec", _int,
           "seconds between auto_transcribe_sensor's looks for finished downloads"),
    EnvVar("PODINSIGHT_RAW_BUCKET", "raw_bucket", _text, "S3 bucket of raw audio (aws)"),
    EnvVar("PODINSIGHT_STAGE_BUCKET", "stage_bucket", _text, "S3 bucket of transcripts (aws)"),
    EnvVar("PODINSIGHT_MANIFEST_BUCKET", "manifest_bucket", _text, "S3 bucket of manifests (aws)"),
    EnvVar("PODINSIGHT_ARCHIVE_BUCKET", "archive_bucket", _text, "S3 bucket of the Parquet roll-up (aws)"),
    EnvVar("PODINSIGHT_INDEX_PATH", "index_path", _path,
           "the search index file (SQLite FTS5); on aws the machine's replica of the shared index"),
    EnvVar("PODINSIGHT_STATUS_TABLE", "status_table", _text, "DynamoDB table (aws)"),
    EnvVar("PODINSIGHT_METRICS_NAMESPACE", "metrics_namespace", _text, "CloudWatch namespace (aws)"),
    EnvVar("PODINSIGHT_GPU_COMPUTE_ENV", "gpu_compute_environment", _text, "Batch GPU compute environment (aws)"),
    EnvVar("AWS_REGION", "aws_region", _text, "AWS region (aws)"),
    EnvVar("AWS_ENDPOINT_URL", "aws_endpoint_url", _text, "a local AWS endpoint such as moto (aws)"),
    EnvVar("DAGSTER_CLOUD_API_TOKEN", "dagster_cloud_api_token", _text,
           "Dagster+ API token `podrun --dagster-url` sends (header Dagster-Cloud-Api-Token)", secret=True),
    EnvVar("PODINSIGHT_DAGSTER_TOKEN", "dagster_token", _text,
           "bearer token `podrun --dagster-url` sends to a webserver behind an authenticating proxy", secret=True),
)
CONFIG_VARS: tuple[EnvVar, ...] = tuple(v for v in ENV_VARS if not v.secret)
"""The variables the code location's ``config`` resource carries (the UI shows them): all but credentials."""
