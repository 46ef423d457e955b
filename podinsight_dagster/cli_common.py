"""What podrun's commands share: settings with their flags, checks before a run, services, the launcher."""

from __future__ import annotations

import atexit
import gc
from pathlib import Path

import click

from podinsight_dagster.exits import BadSettings, require_data
from podinsight_dagster.settings import Settings, SettingsError

VERBOSE_HELP = "Also print Dagster's console log of the runs (stack traces of failed steps included)."
DAGSTER_URL_HELP = ("Launch on a running Dagster deployment (e.g. http://127.0.0.1:3000) instead of in-process; "
                    "credentials from DAGSTER_CLOUD_API_TOKEN (Dagster+) or PODINSIGHT_DAGSTER_TOKEN (bearer).")


def _settings(**overrides) -> Settings:
    """The environment's settings, with the command's flags (those given) over them."""
    try:
        return Settings.from_env().replace(**overrides)
    except SettingsError as exc:
        raise BadSettings(str(exc))


def _check_model(settings: Settings) -> None:
    """An unknown model is a bad setting, found before a run starts (not once per episode inside it)."""
    from podinsight_dagster.transcribe.models import ModelNotFoundError, check_model

    try:
        check_model(settings.model, allow_download=settings.allow_model_download,
                    remote=settings.transcribe_via == "batch")
    except ModelNotFoundError as exc:
        raise BadSettings(f"--model / PODINSIGHT_MODEL: {exc}")


def _preflight(settings: Settings, phase: str) -> None:
    """Before any work: the deployment's buckets, table (and Batch queue) exist, else one sentence and exit 2."""
    from podinsight_dagster.services import preflight
    from podinsight_dagster.store.preflight import PreflightError

    try:
        preflight(settings, phase)
    except PreflightError as exc:
        raise BadSettings(str(exc))


def _services(settings: Settings):
    from podinsight_dagster.services import build_services

    return build_services(settings)


def _launcher(settings: Settings, dagster_url: str | None, checkpoints=None, verbose: bool = False):
    from podinsight_dagster.definitions import definitions_for
    from podinsight_dagster.instance import get_instance
    from podinsight_dagster.launch import Credentials, GraphQLLauncher, LocalLauncher

    if dagster_url:
        return GraphQLLauncher(dagster_url, say=click.echo, credentials=Credentials.from_settings(settings))
    return LocalLauncher(get_instance(settings), definitions_for(settings), say=click.echo, checkpoints=checkpoints,
                         verbose=verbose)



_FREEZE_AT_EXIT = []  # registered once per process (tests invoke commands many times in one)


def _freeze_heap_at_exit() -> None:
    """At interpreter exit, move every object to the collector's permanent generation before teardown.

    With dagster, SQLAlchemy and the run's objects loaded, the cyclic collections Python runs while it tears
    the modules down took 0.5-1.4 s after podrun's last line (2 shared cores), for memory the OS reclaims
    anyway. Runs as an atexit handler: after the command returned and every non-daemon thread was joined;
    atexit handlers registered before it (logging's flush and close) still run after it, objects are still
    freed by reference counting (files closed, buffers flushed), and stdout/stderr are flushed by the
    interpreter as always; only garbage cycles left at exit are not traversed. The command's own stores are
    committed and closed before it returns.
    """
    if not _FREEZE_AT_EXIT:
        _FREEZE_AT_EXIT.append(True)
        atexit.register(gc.freeze)


def _require_data(settings: Settings, *also: Path) -> None:
    """Commands that only read refuse a local data root with no data (a mistyped PODINSIGHT_HOME), creating nothing."""
    if settings.deployment == "local":
        require_data(settings.home, *also)


def _echo_counts(services) -> None:
    counts = services.checkpoints.counts()
    click.echo("  ".join(f"{k}: {v}" for k, v in counts.items()))

