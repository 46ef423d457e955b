"""Every use of Dagster's private API, in one place (Dagster 1.13.27; tests/test_dagster_internals.py).

What Dagster's public API does not offer, and why each is worth its risk:

- ``reuse_event_log_connections``: one SQLAlchemy engine per event-log shard (SQLite) instead of one per event
  (~10 ms an event); replaces ``SqliteEventLogStorage._connect``.
- ``remember_event_log_schema``: the event log's "is this table (column) there?" answered from memory once
  it was yes (~6 ms per materialization); wraps ``has_table`` and ``_has_asset_key_index_cols_on_connection``.
- ``workspace_repository_origins`` and ``execute_with_workspace_origin``: an in-process run recorded with the
  workspace's code-location origin, so the UI lists it under its job (``dagster._core`` origins, execution plan,
  ``execute_run``).
- ``partition_list_read_once``: per-partition metadata validated against one read of the dynamic partition
  list (patches public instance methods, but relies on which of them ``add_asset_metadata`` calls).

Each has a contract test naming the Dagster version it was written against; when an upgrade breaks one, the
test says which, and the fallback (where there is one) keeps Dagster's own behaviour. Nothing else in the
package imports ``dagster._``.
"""

from __future__ import annotations

import functools
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

DAGSTER_VERSION = "1.13.27"  # the version these internals were written and tested against


# ---------------------------------------------------------------------------
# the SQLite event log (instance.py)
# ---------------------------------------------------------------------------
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
    storage._podinsight_engines = engines  # for dispose_event_log_connections
    return True


def dispose_event_log_connections(instance) -> None:
    """Close the engines (and their SQLite connections) ``reuse_event_log_connections`` kept for ``instance``."""
    engines = getattr(instance.event_log_storage, "_podinsight_engines", None) or {}
    for engine in list(engines.values()):
        engine.dispose()
    engines.clear()


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


# ---------------------------------------------------------------------------
# runs recorded with the workspace's origin (launch.py)
# ---------------------------------------------------------------------------
WORKSPACE_FILE = Path(__file__).resolve().parents[1] / "workspace.yaml"
DEFINITIONS_MODULE = "podinsight_dagster.definitions"
LOCATION_NAME = "podinsight"  # workspace.yaml's location_name, when the file is not shipped beside the package


@functools.lru_cache(maxsize=1)
def workspace_repository_origins():
    """The code location's repository origins, as ``dagster job launch -w workspace.yaml`` records them.

    Returns ``(RemoteRepositoryOrigin, RepositoryPythonOrigin)``: the workspace's location (from
    workspace.yaml) with the repository its module defines, and the code pointer a run worker would load
    it from (as the location's gRPC server reports it), without starting that server.
    """
    from dagster import Definitions
    from dagster._core.code_pointer import CodePointer
    from dagster._core.definitions.repository_definition.valid_definitions import SINGLETON_REPOSITORY_NAME
    from dagster._core.origin import RepositoryPythonOrigin, get_python_environment_entry_point
    from dagster._core.remote_origin import RemoteRepositoryOrigin
    from dagster._core.workspace.load import location_origin_from_module_name, location_origins_from_yaml_paths
    from dagster._grpc.utils import get_loadable_targets

    origins = location_origins_from_yaml_paths([str(WORKSPACE_FILE)]) if WORKSPACE_FILE.is_file() else []
    location = next((o for o in origins if getattr(o, "loadable_target_origin", None) is not None
                     and o.loadable_target_origin.module_name == DEFINITIONS_MODULE), None)
    if location is None:
        location = location_origin_from_module_name(DEFINITIONS_MODULE, None, None, LOCATION_NAME)
    target = location.loadable_target_origin
    (loadable,) = get_loadable_targets(python_file=None, module_name=target.module_name, package_name=None,
                                       autoload_defs_module_name=None, working_directory=target.working_directory,
                                       attribute=target.attribute, resolve_lazy_defs=False)
    repository = loadable.target_definition
    # A Definitions object is the repository __repository__ (named without building it).
    name = SINGLETON_REPOSITORY_NAME if isinstance(repository, Definitions) else repository.name
    executable = target.executable_path or sys.executable
    python_origin = RepositoryPythonOrigin(
        executable_path=executable,
        code_pointer=CodePointer.from_module(target.module_name, loadable.attribute, target.working_directory),
        entry_point=get_python_environment_entry_point(executable))
    return RemoteRepositoryOrigin(code_location_origin=location, repository_name=name), python_origin


def execute_with_workspace_origin(job_def, instance, *, run_config: dict, tags: dict, run_id: str):
    """``job_def.execute_in_process`` (same executor, same result), the run created as the workspace's would be.

    ``execute_in_process`` records a run with no code-location origin: the UI lists it under no job
    (Runs tab, Overview timeline) and warns that re-executing it may run a different version. Here the run
    carries the workspace's job origin and the job's own snapshot (not the in-process variant's), as a run
    ``dagster job launch -w workspace.yaml`` creates, so the UI finds it under its job and, when podrun's
    settings are the code location's, re-executes it as the same version.
    """
    from dagster._core.definitions.job_base import InMemoryJob
    from dagster._core.execution.api import create_execution_plan, execute_run
    from dagster._core.origin import JobPythonOrigin
    from dagster._core.remote_origin import RemoteJobOrigin
    from dagster._core.snap import snapshot_from_execution_plan

    repository_origin, python_origin = workspace_repository_origins()
    job = InMemoryJob(job_def.as_ephemeral_job(resource_defs={}, input_values={}))  # the in-process executor
    tags = {**job_def.run_tags, **tags}
    plan = create_execution_plan(job, run_config=run_config, tags=tags,
                                 instance_ref=instance.get_ref() if instance.is_persistent else None)
    snapshot = job_def.get_job_snapshot()
    run = instance.create_run(
        job_name=job_def.name, run_id=run_id, run_config=run_config, status=None, tags=tags, root_run_id=None,
        parent_run_id=None, step_keys_to_execute=plan.step_keys_to_execute,
        execution_plan_snapshot=snapshot_from_execution_plan(plan, snapshot.snapshot_id), job_snapshot=snapshot,
        parent_job_snapshot=job_def.get_parent_job_snapshot(), asset_selection=None, asset_check_selection=None,
        resolved_op_selection=None, op_selection=None,
        remote_job_origin=RemoteJobOrigin(repository_origin=repository_origin, job_name=job_def.name),
        job_code_origin=JobPythonOrigin(job_def.name, python_origin), asset_graph=job_def.asset_layer.asset_graph)
    return execute_run(job, run, instance, raise_on_error=False)


# ---------------------------------------------------------------------------
# per-partition metadata (assets/episodes.py)
# ---------------------------------------------------------------------------
@contextmanager
def partition_list_read_once(instance) -> Iterator[None]:
    """Serve the dynamic partition list from one read while per-partition metadata is attached.

    Dagster 1.13 validates each ``add_asset_metadata(partition_key=...)`` by listing every
    partition of the definition, or (1.13.27) by one ``has_dynamic_partition`` query per call:
    at 20,000 partitions that is ~50 ms per episode, ~7 ms at 80 (see docs/BENCHMARKS.md). The
    run's partition range is fixed when the run is created, so one read serves the whole loop.
    Scoped to this block and this instance object only.
    """
    original = instance.get_dynamic_partitions
    cache: dict[str, list[str]] = {}
    members: dict[str, set[str]] = {}

    def cached(partitions_def_name: str) -> list[str]:
        if partitions_def_name not in cache:
            cache[partitions_def_name] = original(partitions_def_name)
        return cache[partitions_def_name]

    def has(partitions_def_name: str, partition_key: str) -> bool:
        if partitions_def_name not in members:
            members[partitions_def_name] = set(cached(partitions_def_name))
        return partition_key in members[partitions_def_name]

    patched = {"get_dynamic_partitions": cached, "has_dynamic_partition": has}
    had_own = {name: vars(instance)[name] for name in patched if name in vars(instance)}
    for name, fn in patched.items():
        setattr(instance, name, fn)
    try:
        yield
    finally:
        for name in patched:
            if name in had_own:
                setattr(instance, name, had_own[name])
            else:
                delattr(instance, name)  # back to the class's method


def run_log_messages(instance, run_id: str) -> list:
    """The entries of ``run_id``'s event log that are log messages (``dagster_event`` None), in order.

    ``instance.all_logs`` reads and deserializes every event of the run (a fetch of 200 episodes stores
    ~420, ~0.3 s after the last download on 2 shared cores) although only the few messages are wanted; in
    SQL event logs (SQLite, PostgreSQL) those are the rows with no ``dagster_event_type``. Other storages:
    ``all_logs``, filtered here.
    """
    try:
        from dagster._core.events.log import EventLogEntry
        from dagster._core.storage.event_log.schema import SqlEventLogStorageTable
        from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage
        from dagster._core.storage.sqlalchemy_compat import db_select
        from dagster._serdes import deserialize_value
    except ImportError:  # pragma: no cover - another Dagster layout
        SqlEventLogStorage = None
    storage = instance.event_log_storage
    if SqlEventLogStorage is None or not isinstance(storage, SqlEventLogStorage):
        return [e for e in instance.all_logs(run_id) if e.dagster_event is None]
    table = SqlEventLogStorageTable
    query = (db_select([table.c.event]).where(table.c.run_id == run_id)
             .where(table.c.dagster_event_type.is_(None)).order_by(table.c.id.asc()))
    with storage.run_connection(run_id) as conn:
        rows = conn.execute(query).fetchall()
    return [deserialize_value(row[0], EventLogEntry) for row in rows]


_ALEMBIC_SCRIPTS: dict = {}


def read_alembic_scripts_once() -> bool:
    """Build alembic's ``ScriptDirectory`` once per script location in this process, not at every use.

    Dagster's SQLite storages (runs, the event log's index and every run's shard, schedules) share one
    alembic script location; each check of a schema's revision and each stamp of a new database called
    ``ScriptDirectory.from_config``, which imports every migration script again (~620 files for 7 uses
    when podrun opens a fresh data root: ~0.25 s of the instance's ~0.4 s, then again for the run's shard).
    The scripts are the installed package's and do not change while the process runs; the directory's
    options come from the script location and version locations, the cache's key. Returns whether it
    applied (once is enough; later calls change nothing).
    """
    try:
        from alembic.script import ScriptDirectory
    except ImportError:  # pragma: no cover - Dagster's SQL storage needs alembic
        return False
    original = ScriptDirectory.__dict__.get("from_config")
    if not isinstance(original, classmethod):  # pragma: no cover - another alembic layout: keep its behaviour
        return False
    if getattr(original.__func__, "_podinsight_once", False):
        return True
    build = original.__func__

    def from_config(cls, config):
        key = (cls, config.get_main_option("script_location"), config.get_main_option("version_locations"))
        script = _ALEMBIC_SCRIPTS.get(key)
        if script is None:
            script = _ALEMBIC_SCRIPTS[key] = build(cls, config)
        return script

    from_config._podinsight_once = True
    ScriptDirectory.from_config = classmethod(from_config)
    return True
