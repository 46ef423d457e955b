"""The local Dagster instance under ``$PODINSIGHT_HOME/dagster``, shared by the demo, podrun and ``dagster dev``."""

from __future__ import annotations

import fcntl
from pathlib import Path

from podinsight_dagster.dagster_internals import (read_alembic_scripts_once, remember_event_log_schema,
                                                  reuse_event_log_connections)
from podinsight_dagster.settings import Settings

# Transcription steps must not compete for the same cores (or GPU): one at a time
# per machine. Downloads are limited per host by the HostLimiter already; the pool
# just bounds how many download steps run side by side.
POOL_LIMITS = {"podinsight_transcribe": 1, "podinsight_fetch": 4}

DAGSTER_YAML = """\
# Written by Pod-Insight (podinsight_dagster/instance.py). Storage is SQLite under this folder.
telemetry:
  enabled: false
concurrency:
  pools:
    granularity: op
    default_limit: 4
# Under `dagster dev` (the daemon): a run that never reports its start is failed (so a backfill ends
# instead of waiting for it), and pool slots still held by a finished run are freed (a transcription slot
# left behind would block every later transcript step).
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  poll_interval_seconds: 10
  free_slots_after_run_end_seconds: 30
"""


def prepare_instance(settings: Settings) -> Path:
    """Create the instance folder and its dagster.yaml (if missing); return the folder."""
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    cfg = home / "dagster.yaml"
    if not cfg.exists():
        cfg.write_text(DAGSTER_YAML)
    return home


def get_instance(settings: Settings):
    from dagster import DagsterInstance

    # From the folder itself, not DAGSTER_HOME: podrun's settings may name another data root.
    home = prepare_instance(settings)
    read_alembic_scripts_once()  # a fresh data root stamps four databases, each run one more
    # Two processes opening a fresh data root at once would both create Dagster's SQLite tables (one fails
    # with "table alembic_version already exists"): one at a time per machine (flock, dropped if one dies).
    with open(home / ".open.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        instance = DagsterInstance.from_config(str(home))
        reuse_event_log_connections(instance)
        remember_event_log_schema(instance)
        apply_pool_limits(instance)
    return instance


def apply_pool_limits(instance) -> None:
    """Set ``POOL_LIMITS`` in the instance's event log storage (SQLite here, PostgreSQL on AWS: deploy/dagster.yaml)."""
    for pool, limit in POOL_LIMITS.items():
        try:
            instance.event_log_storage.set_concurrency_slots(pool, limit)
        except Exception:  # noqa: BLE001 - storage without pool support: limits are advisory then
            pass
