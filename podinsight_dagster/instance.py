"""The local Dagster instance under ``$PODINSIGHT_HOME/dagster``, shared by the demo, podrun and ``dagster dev``."""

from __future__ import annotations

import fcntl
from contextlib import contextmanager
from pathlib import Path

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
    # Two processes opening a fresh data root at once would both create Dagster's SQLite tables (one fails
    # with "table alembic_version already exists"): one at a time per machine (flock, dropped if one dies).
    with open(home / ".open.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        instance = DagsterInstance.from_config(str(home))
        reuse_event_log_connections(instance)
        remember_event_log_schema(instance)
        apply_pool_limits(instance)
    return instance


def _wal_normal_sync(dbapi_connection, _record) -> None:
    # The event log is in WAL mode; SQLite's default there (synchronous=FULL) syncs the log on every
    # commit, one per event. NORMAL syncs at checkpoints only: a crashed process loses nothing, a power
    # cut may lose the last events but never corrupts the file. The checkpoint store, not the event log,
    # records what was done.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def reuse_event_log_connections(instance) -> bool:
    """Keep one SQLAlchemy engine (and its pooled connections) per event-log shard for this instance object.

    Dagster 1.13's ``SqliteEventLogStorage`` builds a new engine with ``NullPool`` for every event
    it stores (two for an asset event: the run's shard and the index): engine creation, a fresh
    SQLite connection and, on close, a WAL checkpoint, ~10 ms per event. A run of 80 episodes
    through five assets stores ~1,300 events. Same statements, same transactions, same lock;
    only the engine and the connection are reused. Applies to this object only (podrun, the
    demo); ``dagster dev`` keeps Dagster's own. Its connections sync the WAL at checkpoints, not at
    every commit (``_wal_normal_sync``). Returns whether it applied.
    """
    import sqlalchemy.event

    try:
        from dagster._core.storage.event_log.sqlite import sqlite_event_log as sel
    except ImportError:  # pragma: no cover - another Dagster layout: keep its behaviour
        return False
    storage = instance.event_log_storage
    if type(storage) is not sel.SqliteEventLogStorage or not hasattr(storage, "_db_lock"):
        return False
    engines: dict = {}

    @contextmanager
    def _connect(shard: str):
        with storage._db_lock:
            engine = engines.get(shard)
            if engine is None:
                engine = sel.create_engine(storage.conn_string_for_shard(shard),
                                           connect_args={"timeout": sel.SQLITE_BUSY_TIMEOUT_SECONDS,
                                                         "check_same_thread": False})
                sqlalchemy.event.listen(engine, "connect", _wal_normal_sync)
                if shard not in storage._initialized_dbs:
                    storage._initdb(engine)
                    storage._initialized_dbs.add(shard)
                engines[shard] = engine
            with engine.connect() as conn:
                with conn.begin():
                    yield conn

    storage._connect = _connect
    return True


def remember_event_log_schema(instance) -> bool:
    """Answer the event log's "is this table (column) there?" from memory once the answer was yes.

    Dagster 1.13's ``SqliteEventLogStorage`` asks for every asset event it stores: ``has_table``
    ("asset_event_tags") builds a new engine and connection on the index file, and the asset-key
    table's columns are read again (``_has_asset_key_index_cols_on_connection``): ~6 ms per
    materialization of a 1,000-episode fetch run, more than the writes themselves (cProfile,
    docs/BENCHMARKS.md). A table or column that exists stays (migrations only add them); a "no" is
    asked again. Applies to this instance object only (podrun, the demo). Returns whether it applied.
    """
    try:
        from dagster._core.storage.event_log.sqlite import sqlite_event_log as sel
    except ImportError:  # pragma: no cover - another Dagster layout: keep its behaviour
        return False
    storage = instance.event_log_storage
    if type(storage) is not sel.SqliteEventLogStorage or not hasattr(storage, "_has_asset_key_index_cols_on_connection"):
        return False
    tables: set[str] = set()
    columns: list[bool] = []
    ask_table, ask_columns = storage.has_table, storage._has_asset_key_index_cols_on_connection

    def has_table(table_name: str) -> bool:
        if table_name not in tables and ask_table(table_name):
            tables.add(table_name)
        return table_name in tables

    def has_asset_key_index_cols_on_connection(conn) -> bool:
        if not columns and ask_columns(conn):
            columns.append(True)
        return bool(columns)

    storage.has_table = has_table
    storage._has_asset_key_index_cols_on_connection = has_asset_key_index_cols_on_connection
    return True


def apply_pool_limits(instance) -> None:
    """Set ``POOL_LIMITS`` in the instance's event log storage (SQLite here, PostgreSQL on AWS: deploy/dagster.yaml)."""
    for pool, limit in POOL_LIMITS.items():
        try:
            instance.event_log_storage.set_concurrency_slots(pool, limit)
        except Exception:  # noqa: BLE001 - storage without pool support: limits are advisory then
            pass
