"""Every setting of Pod-Insight, declared once (a field of ``Settings``) and read once from the environment.

One data root (``PODINSIGHT_HOME``, default ``./data``) holds the run-book's three
buckets as folders, the SQLite checkpoint store and the Dagster instance, so the
demo, ``podrun`` and ``dagster dev`` all see the same state. Nothing else in the
package reads the environment: ``podrun`` flags override a field with
``Settings.replace``, and the Dagster ``config`` resource (``resources/config.py``)
carries the values in force as typed fields generated from the same table.

The table is ``Settings`` itself: each field is one ``setting(variable, default, help, check=...)``
giving the field's name and type, its environment variable, its default, README's text and its
check. ``settings_table`` reads it back as ``Setting`` rows (``ENV_VARS``); parsing, the checks,
``to_env``, README's settings table (``readme_rows``, compared by a test) and the resource's fields
all follow from those rows, so a new setting is one field here (and its README row).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import types
import typing
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

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


# ---------------------------------------------------------------------------
# How a variable's text becomes a value (by the field's type) and how a value is checked.
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


PARSERS: dict[type, Callable[[str, str], object]] = {str: _text, Path: _path, bool: _flag, int: _int, float: _float}

Check = Callable[[Any], "str | None"]
"""What is wrong with a value, as the text after ``NAME=`` in the error (None: nothing)."""


def one_of(choices: tuple[str, ...]) -> Check:
    return lambda value: None if value in choices else f"{value!r}: choose one of {', '.join(choices)}"


def holds(ok: Callable[[Any], bool], text: str) -> Check:
    """A value for which ``ok`` is false is refused with ``text`` (what the variable takes)."""
    return lambda value: None if ok(value) else f"{value}: {text}"


def at_least(low: int, unit: str = "") -> Check:
    return holds(lambda value: value >= low, f"must be at least {low}{unit}")


# ---------------------------------------------------------------------------
# One setting: a field of Settings declared with ``setting(...)``; read back as a ``Setting`` row.
# ---------------------------------------------------------------------------
_SETTING = "podinsight.setting"


def setting(name: str, default: Any = MISSING, help: str = "", *, factory: Callable[[], Any] | None = None,
            parse: Callable[[str, str], object] | None = None, check: Check | None = None,
            shown: str | None = None, secret: bool = False) -> Any:
    """A field of ``Settings`` read from the variable ``name``; unset or empty gives ``default``.

    ``help`` is README's "meaning" (and the UI's description); ``shown`` is README's "default" when the
    default is computed; ``parse`` replaces the type's parser; ``check`` refuses a parsed value. A
    ``secret`` is a credential of the podrun client: never in ``repr``, never a field of the Dagster
    ``config`` resource (the UI would show it).
    """
    meta = {"name": name, "help": help, "parse": parse, "check": check, "shown": shown, "secret": secret}
    return field(default=default, default_factory=factory or MISSING, repr=not secret,
                 metadata={_SETTING: meta})


@dataclass(frozen=True)
class Setting:
    """A row of the settings table: a variable, the ``Settings`` field it sets, its type, default and text."""

    name: str                       # the environment variable
    field: str                      # the Settings field
    type: type                      # str, int, float, bool or Path
    optional: bool                  # None is a value (the field is ``T | None``)
    default: Any                    # MISSING: given by the caller, or computed (``shown`` says how)
    parse: Callable[[str, str], object]
    help: str
    shown: str                      # README's "default" cell
    check: Check | None = None
    secret: bool = False


def _shown(default: Any) -> str:
    if default is None or default is False or default == "" or default is MISSING:
        return "unset"
    if isinstance(default, float) and default.is_integer():
        default = int(default)
    return f"`{default}`"


@functools.cache
def settings_table(cls: type) -> tuple[Setting, ...]:
    """The ``Setting`` rows of a settings dataclass (``Settings`` or one extending it), in field order."""
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        meta = f.metadata.get(_SETTING)
        if meta is None:
            continue
        kind, args = hints[f.name], typing.get_args(hints[f.name])
        optional = typing.get_origin(kind) in (typing.Union, types.UnionType) and type(None) in args
        if optional:
            kind = next(a for a in args if a is not type(None))
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        rows.append(Setting(meta["name"], f.name, kind, optional, default, meta["parse"] or PARSERS[kind],
                            meta["help"], f"`{meta['shown']}`" if meta["shown"] else _shown(default),
                            meta["check"], meta["secret"]))
    return tuple(rows)


def readme_rows(table: tuple[Setting, ...]) -> list[str]:
    """README's settings table, one row per variable: ``| `NAME` | default | meaning |``."""
    return [f"| `{var.name}` | {var.shown} | {var.help} |" for var in table]


def _default_model_cache() -> Path:
    return Path.home() / ".cache" / "podinsight" / "models"


@dataclass(frozen=True, kw_only=True)
class Settings:
    """The settings in force. Each field is a row of the one table of settings (see the module's doc)."""

    deployment: str = setting(
        "PODINSIGHT_DEPLOYMENT", "local", "local (folders, SQLite) or aws (S3, DynamoDB, CloudWatch)",
        check=one_of(DEPLOYMENTS))
    home: Path = setting("PODINSIGHT_HOME", help="data root", shown="./data")
    feeds_dir: Path = setting("PODINSIGHT_FEEDS_DIR", help="folder (or file) of tier*_feeds.yaml",
                              shown="$PODINSIGHT_HOME/feeds")
    # transcription (run-book §4)
    model: str = setting("PODINSIGHT_MODEL", DEFAULT_MODEL, "base, tiny.en or a CTranslate2 model folder")
    model_cache: Path = setting("PODINSIGHT_MODEL_CACHE", help="where base is assembled from its PyPI parts",
                                factory=_default_model_cache, shown="~/.cache/podinsight/models")
    allow_model_download: bool = setting("PODINSIGHT_ALLOW_MODEL_DOWNLOAD", False, "1: unknown models from the hub")
    device: str = setting("PODINSIGHT_DEVICE", "auto", "auto, cpu or cuda")  # auto: cuda when present
    # auto: float16 on a GPU, int8 on a CPU
    compute_type: str = setting("PODINSIGHT_COMPUTE_TYPE", "auto", "auto, int8, float16, ...")
    batch_size: int = setting("PODINSIGHT_BATCH_SIZE", 8, "speech chunks per batch", check=at_least(1))
    cpu_threads: int = setting("PODINSIGHT_CPU_THREADS", 0, "CTranslate2 threads (0: one per core)")
    pack_gap_sec: float = setting(
        "PODINSIGHT_PACK_GAP_SEC", 1.0,
        "short episodes (one speech chunk) share 30-s model windows, this many seconds of silence apart "
        "(0: each its own window)",
        check=holds(lambda sec: 0 <= sec <= 5, "0 (off) up to 5 seconds"))
    transcript_source: str = setting("PODINSIGHT_TRANSCRIPT_SOURCE", "prefer_publisher",
                                     "prefer_publisher, always_asr or both", check=one_of(TRANSCRIPT_SOURCES))
    language_check_model: str | None = setting("PODINSIGHT_LANGUAGE_CHECK_MODEL", None,
                                               "multilingual model for .en checks")
    # where the transcript asset runs Whisper: in its own process, or the worker under Dagster Pipes
    # (a subprocess, or an AWS Batch job on the GPU queue: run-book §4.5 2.2-2.3)
    transcribe_via: str = setting(
        "PODINSIGHT_TRANSCRIBE_VIA", "in-process",
        "where `transcript` runs Whisper: in-process, subprocess (the worker under Dagster Pipes) or "
        "batch (the worker as an AWS Batch job)", check=one_of(TRANSCRIBE_VIA))
    batch_job_queue: str = setting("PODINSIGHT_BATCH_JOB_QUEUE", "transcribe",  # iac/batch_gpu_spot.tf: the GPU queue
                                   "Batch job queue of the GPU worker (batch)")
    batch_job_definition: str = setting("PODINSIGHT_BATCH_JOB_DEFINITION", "whisper-base",
                                        "Batch job definition of the GPU worker (run-book §4.5 2.3)")
    # who spoke (speakers/): voice embeddings clustered per episode, or off; a forced speaker count
    diarization: str = setting("PODINSIGHT_DIARIZATION", "voice",
                               "voice (speaker labels from voice embeddings, offline) or off", check=one_of(DIARIZATION))
    speakers: int = setting(
        "PODINSIGHT_SPEAKERS", 0,
        "speakers per episode; 0: estimated from the audio, at most the feed's `podcast:person` hosts and "
        "guests when it lists a guest (`podrun transcribe --speakers N`)",
        check=holds(lambda n: 0 <= n <= 8, "0 (from the feed or estimated) up to 8"))
    # episodes per run of a backfill (the episode assets' BackfillPolicy.multi_run): a backfill of N
    # episodes becomes ceil(N / this) runs, which the deployment's run queue runs side by side
    episodes_per_run: int = setting(
        "PODINSIGHT_EPISODES_PER_RUN", 100,
        "episodes per run of a backfill (the episode assets' multi-run backfill policy): a backfill of N "
        "episodes is N/100 runs, run side by side as the deployment's run queue allows", check=at_least(1))
    # fetching (run-book §3)
    allow_private_networks: str = setting("PODINSIGHT_ALLOW_PRIVATE_NETWORKS", "", "1, or CIDRs fetching may reach")
    default_host_limit: int = setting("PODINSIGHT_DEFAULT_HOST_LIMIT", 10,  # run-book §3.2: hosts not in HOST_LIMIT
                                      "connections per host not listed")
    http_max_attempts: int = setting("PODINSIGHT_HTTP_MAX_ATTEMPTS", 4, "tries per request (retryable errors)")
    max_audio_bytes: int = setting("PODINSIGHT_MAX_AUDIO_BYTES", 1 << 30, "largest episode accepted")
    # an episode's stage claim (download, transcribe) across tasks: its lease, renewed every third of it
    # while its holder lives; a killed task's episodes are taken over once it runs out (store/claims.py)
    claim_lease_sec: float = setting(
        "PODINSIGHT_CLAIM_LEASE_SEC", 600.0,
        "lease of an episode's download or transcription claim, renewed every third of it while its task "
        "lives; a killed task's episodes are taken over by another once it runs out",
        check=holds(lambda sec: sec > 0, "must be more than 0 seconds"))
    # an episode's download retries itself (fetch/retry.py): tries, and the longest wait between two, so it is
    # asked again within that many seconds of its host answering (6 tries, 8 s: an outage of 11.5 s is bridged,
    # a hopeless episode waits at most 23 s in all)
    download_attempts: int = setting(
        "PODINSIGHT_DOWNLOAD_ATTEMPTS", 6,
        "tries per episode download; only retryable errors are retried (timeouts, resets, cut bodies, "
        "429, 5xx), never a 404/410, HTML or other non-audio, an oversize file or a redirect to a private "
        "address", check=at_least(1))
    download_backoff_max_s: float = setting(
        "PODINSIGHT_DOWNLOAD_BACKOFF_MAX_S", 8.0,
        "longest wait between two tries of an episode (each wait at least half its step: 6 tries span an "
        "outage of 11.5 s or more, and wait at most 23 s in all); the episode is asked again within this "
        "many seconds of its host answering",
        check=holds(lambda sec: 0 <= sec <= 600, "0 up to 600 seconds"))
    publish_base_url: str | None = setting(  # podrun publish links it
        "PODINSIGHT_PUBLISH_BASE_URL", None,
        "public http(s) address where the stage bucket is served: `podrun publish` links transcripts, "
        "chapters and soundbites there")
    feed_max_pages: int = setting(
        "PODINSIGHT_FEED_MAX_PAGES", 50,
        'pages of a paged feed (RFC 5005 `rel="next"`) read per poll; the first poll walks the '
        "back-catalogue, later polls stop at the first page with nothing new; a longer back-catalogue "
        "continues on the next poll", check=at_least(1))
    # money (run-book §4.4, §6)
    cost_ceiling_usd: float = setting("PODINSIGHT_COST_CEILING_USD", 40.0, "GPUCostToday ceiling", parse=_usd)
    # g5.xlarge Spot (run-book §2.5: 83 GPU-h x $0.30)
    price_gpu_hour: float = setting("PODINSIGHT_PRICE_GPU_HOUR", 0.30, "USD per GPU hour", parse=_usd)
    price_cpu_hour: float = setting("PODINSIGHT_PRICE_CPU_HOUR", 0.04, "USD per CPU hour", parse=_usd)
    realtime_factor: float = setting(
        "PODINSIGHT_REALTIME_FACTOR", 0.0,
        "audio seconds per compute second that cost projections assume; 0: the measured figure for the "
        "device, compute type and model in force (`podinsight_dagster/costs/speed.py`)",
        check=holds(lambda rtf: 0 <= rtf < 1e6, "0 (the measured figure) or a positive real-time factor"))
    # sensors (sensors/): how often new_episodes_sensor polls the feeds, and how soon auto_transcribe_sensor
    # (when switched on) queues what finished downloading
    new_episodes_interval_sec: int = setting(
        "PODINSIGHT_NEW_EPISODES_INTERVAL_SEC", 15 * 60, "seconds between `new_episodes_sensor`'s feed polls (when on)",
        check=at_least(1, " second"))
    auto_transcribe_interval_sec: int = setting(
        "PODINSIGHT_AUTO_TRANSCRIBE_INTERVAL_SEC", 30,
        "seconds between `auto_transcribe_sensor`'s looks for finished downloads (when on)", check=at_least(1, " second"))
    # AWS deployment names (run-book §2, Appendix A)
    raw_bucket: str = setting("PODINSIGHT_RAW_BUCKET", RAW_BUCKET, "S3 bucket of raw audio (aws)")
    stage_bucket: str = setting("PODINSIGHT_STAGE_BUCKET", STAGE_BUCKET, "S3 bucket of transcripts (aws)")
    manifest_bucket: str = setting("PODINSIGHT_MANIFEST_BUCKET", MANIFEST_BUCKET, "S3 bucket of manifests (aws)")
    archive_bucket: str = setting("PODINSIGHT_ARCHIVE_BUCKET", ARCHIVE_BUCKET, "S3 bucket of the Parquet roll-up (aws)")
    index_path: Path | None = setting(  # None: $PODINSIGHT_HOME/transcript_index.sqlite
        "PODINSIGHT_INDEX_PATH", None,
        "the search index file (SQLite FTS5); its passage vectors for `--meaning` lie beside it "
        "(`transcript_index.vectors-<n>.i8`); on aws the machine's replica of the shared index (entries "
        "in the stage bucket under `_index/log/`)", shown="$PODINSIGHT_HOME/transcript_index.sqlite")
    status_table: str = setting("PODINSIGHT_STATUS_TABLE", STATUS_TABLE, "DynamoDB table (aws)")
    metrics_namespace: str = setting("PODINSIGHT_METRICS_NAMESPACE", METRICS_NAMESPACE, "CloudWatch namespace (aws)")
    gpu_compute_environment: str = setting("PODINSIGHT_GPU_COMPUTE_ENV", "gpu_spot",
                                           "Batch GPU compute environment (aws)")
    aws_region: str = setting("AWS_REGION", "us-east-1", "AWS region (aws)")
    aws_endpoint_url: str | None = setting("AWS_ENDPOINT_URL", None, "a local AWS endpoint such as moto (aws)")
    # credentials podrun --dagster-url sends to a deployment (never flags, never shown)
    dagster_cloud_api_token: str | None = setting(
        "DAGSTER_CLOUD_API_TOKEN", None,
        "Dagster+ API token `podrun --dagster-url` sends (header `Dagster-Cloud-Api-Token`)", secret=True)
    dagster_token: str | None = setting(
        "PODINSIGHT_DAGSTER_TOKEN", None,
        "bearer token `podrun --dagster-url` sends (`Authorization: Bearer`) to a webserver behind an "
        "authenticating proxy", secret=True)

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
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: str) -> "Settings":
        """Settings from ``environ`` (default: the process environment); unset or empty means the default.

        ``overrides`` are variables' texts that replace ``environ``'s (``PODINSIGHT_DEPLOYMENT="aws"``).
        """
        env = {**(os.environ if environ is None else environ), **overrides}
        values: dict[str, object] = {}
        for var in settings_table(cls):
            raw = (env.get(var.name) or "").strip()
            if raw:
                values[var.field] = var.parse(var.name, raw)
        return cls.from_values(values)

    @classmethod
    def from_values(cls, values: Mapping[str, object]) -> "Settings":
        """Settings from field values (the Dagster ``config`` resource's); None or "" means the default.

        Paths may be text; the data root defaults to ``./data`` and the catalog to ``feeds`` in it.
        """
        fields: dict[str, object] = {}
        for var in settings_table(cls):
            value = values.get(var.field)
            if isinstance(value, str):
                value = value.strip()
            if value is None or value == "":
                continue
            fields[var.field] = _path(var.name, str(value)) if var.type is Path else value
        home = Path(fields.pop("home", "data")).expanduser().resolve()
        feeds_dir = Path(fields.pop("feeds_dir", home / "feeds")).expanduser().resolve()
        return cls(home=home, feeds_dir=feeds_dir, **fields)

    def replace(self, **changes: object) -> "Settings":
        """These settings with some fields changed (how ``podrun`` flags override the environment)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def __post_init__(self) -> None:
        for var in settings_table(type(self)):
            wrong = var.check(getattr(self, var.field)) if var.check else None
            if wrong:
                raise SettingsError(f"{var.name}={wrong}")

    def to_env(self, *, paths: bool = True) -> dict[str, str]:
        """These settings as the environment variables that give them (how a worker process gets them).

        ``paths=False`` leaves out this machine's folders (data root, catalog, model cache, index): for a
        container elsewhere, which uses its own.
        """
        return {var.name: env_text(getattr(self, var.field)) for var in settings_table(type(self))
                if paths or var.type is not Path}

    def ensure_dirs(self) -> None:
        for path in (self.raw_root, self.stage_root, self.manifests_root, self.dagster_home, self.locks_dir):
            path.mkdir(parents=True, exist_ok=True)
        if not self.feeds_dir.is_file():  # --feeds may name one catalog file
            self.feeds_dir.mkdir(parents=True, exist_ok=True)


ENV_VARS: tuple[Setting, ...] = settings_table(Settings)
"""The environment variables, one per field of ``Settings``: the only list of them."""
CONFIG_VARS: tuple[Setting, ...] = tuple(v for v in ENV_VARS if not v.secret)
"""The variables the code location's ``config`` resource carries (the UI shows them): all but credentials."""
