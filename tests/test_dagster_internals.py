"""Contracts of the Dagster internals Pod-Insight relies on (podinsight_dagster/dagster_internals.py).

Each test fails with a sentence naming the Dagster version the use was written against and the one
installed, so an upgrade that breaks a private API says which use to revisit (or drop, when a public API
now covers it).
"""

import uuid

import dagster
import pytest
from dagster import AssetKey, DagsterInstance, Definitions, DynamicPartitionsDefinition, asset, define_asset_job

from podinsight_dagster.dagster_internals import (DAGSTER_VERSION, dispose_event_log_connections,
                                                  execute_with_workspace_origin, partition_list_read_once,
                                                  read_alembic_scripts_once, remember_event_log_schema,
                                                  reuse_event_log_connections,
                                                  run_log_messages, workspace_repository_origins)
from podinsight_dagster.instance import prepare_instance

BROKEN = (f"Dagster {dagster.__version__} (dagster_internals.py was written against {DAGSTER_VERSION}): "
          "the private API behind {use} changed; revisit it or use a public API that now covers it")

contract_parts = DynamicPartitionsDefinition(name="contract_parts")
STORAGE_READS: list[int] = []  # per run of contract_partitioned (materialize runs it in this process)


@asset
def contract_value() -> int:
    return 1


@asset(partitions_def=contract_parts)
def contract_partitioned(context) -> None:
    """Attaches metadata to every partition of the run inside partition_list_read_once, counting storage reads."""
    storage = context.instance.event_log_storage
    reads = []
    originals = {name: getattr(storage, name) for name in ("get_dynamic_partitions", "has_dynamic_partition")}
    for name, fn in originals.items():
        setattr(storage, name, lambda *a, _fn=fn, _name=name, **k: (reads.append(_name), _fn(*a, **k))[1])
    try:
        with partition_list_read_once(context.instance):
            for pk in context.partition_keys:
                context.add_asset_metadata({"n": 1}, partition_key=pk)
    finally:
        for name in originals:
            delattr(storage, name)
    STORAGE_READS.append(len(reads))


@asset
def contract_logged(context) -> None:
    context.log.warning("first warning\nsecond line")
    context.log.info("some info")


contract_defs = Definitions(assets=[contract_value, contract_partitioned],
                            jobs=[define_asset_job("contract_job", [contract_value])])


@pytest.fixture
def sqlite_instance(settings):
    with DagsterInstance.from_config(str(prepare_instance(settings))) as instance:
        yield instance


def test_reuse_event_log_connections_applies_and_events_are_stored(sqlite_instance):
    assert reuse_event_log_connections(sqlite_instance), BROKEN.format(use="reuse_event_log_connections")
    result = dagster.materialize([contract_value], instance=sqlite_instance)
    assert result.success
    assert sqlite_instance.get_latest_materialization_event(AssetKey("contract_value")) is not None, \
        BROKEN.format(use="reuse_event_log_connections (events no longer stored through _connect)")


def test_remember_event_log_schema_applies_and_asks_the_schema_once(sqlite_instance):
    use = "remember_event_log_schema"
    storage = sqlite_instance.event_log_storage
    asked = []
    ask_table = storage.has_table
    storage.has_table = lambda name: (asked.append(name), ask_table(name))[1]  # what the wrapper will call
    assert remember_event_log_schema(sqlite_instance), BROKEN.format(use=use)
    for _ in range(2):
        assert dagster.materialize([contract_value], instance=sqlite_instance).success
    assert sqlite_instance.get_latest_materialization_event(AssetKey("contract_value")) is not None, \
        BROKEN.format(use=use + " (asset events no longer stored)")
    assert len(asked) == len(set(asked)), BROKEN.format(use=use + f" (has_table asked again: {asked})")


def test_workspace_repository_origins_name_the_code_location():
    remote, python_origin = workspace_repository_origins()
    use = "workspace_repository_origins"
    assert remote.code_location_origin.location_name, BROKEN.format(use=use)
    assert remote.repository_name == "__repository__", BROKEN.format(use=use)
    assert python_origin.code_pointer.module == "podinsight_dagster.definitions", BROKEN.format(use=use)


def test_execute_with_workspace_origin_records_the_run_under_the_workspaces_job(sqlite_instance):
    job = contract_defs.resolve_job_def("contract_job")
    run_id = str(uuid.uuid4())
    result = execute_with_workspace_origin(job, sqlite_instance, run_config={}, tags={"contract": "yes"},
                                           run_id=run_id)
    use = "execute_with_workspace_origin"
    assert result.success, BROKEN.format(use=use)
    run = sqlite_instance.get_run_by_id(run_id)
    assert run.tags["contract"] == "yes", BROKEN.format(use=use)
    assert run.remote_job_origin.job_name == "contract_job", BROKEN.format(use=use)
    assert run.remote_job_origin.repository_origin == workspace_repository_origins()[0], BROKEN.format(use=use)
    assert sqlite_instance.get_latest_materialization_event(AssetKey("contract_value")) is not None


def test_partition_list_read_once_serves_per_partition_metadata_from_one_read():
    with DagsterInstance.ephemeral() as instance:
        keys = [f"p{i}" for i in range(20)]
        instance.add_dynamic_partitions("contract_parts", keys)
        result = dagster.materialize([contract_partitioned], instance=instance,
                                     tags={"dagster/asset_partition_range_start": keys[0],
                                           "dagster/asset_partition_range_end": keys[-1]})
        assert result.success
        [mat] = [m for m in result.asset_materializations_for_node("contract_partitioned")
                 if m.partition == keys[0]]
        reads = STORAGE_READS[-1]
        assert reads <= 1, BROKEN.format(use=f"partition_list_read_once ({reads} partition reads for 20 keys)")
        assert mat.metadata["n"].value == 1


def test_run_log_messages_are_the_runs_messages_without_its_events(sqlite_instance):
    """What podrun reads for a run's warning lines (SQL: rows with no dagster_event_type), on the SQLite
    event log with podrun's reused engines, then those engines closed and opened again on use."""
    assert reuse_event_log_connections(sqlite_instance)
    result = dagster.materialize([contract_logged], instance=sqlite_instance)
    assert result.success
    every = sqlite_instance.all_logs(result.run_id)
    messages = run_log_messages(sqlite_instance, result.run_id)
    use = "run_log_messages"
    assert messages == [e for e in every if e.dagster_event is None], BROKEN.format(use=use)
    assert len(messages) < len(every) and any(e.user_message.startswith("first warning") for e in messages)
    dispose_event_log_connections(sqlite_instance)
    assert run_log_messages(sqlite_instance, result.run_id) == messages


def test_read_alembic_scripts_once_builds_one_script_directory_and_fresh_databases_are_at_head(tmp_path):
    from alembic.script import ScriptDirectory
    from dagster._core.storage.runs.sqlite import sqlite_run_storage
    from dagster._core.storage.sql import check_alembic_revision, get_alembic_config

    use = "read_alembic_scripts_once"
    assert read_alembic_scripts_once() and read_alembic_scripts_once(), BROKEN.format(use=use)
    config = get_alembic_config(sqlite_run_storage.__file__)
    assert ScriptDirectory.from_config(config) is ScriptDirectory.from_config(get_alembic_config(__file__)), \
        BROKEN.format(use=use)
    with DagsterInstance.from_config(str(tmp_path)) as instance:  # a fresh data root: every schema stamped
        assert dagster.materialize([contract_value], instance=instance).success
        with instance.run_storage.connect() as conn:
            db_revision, head = check_alembic_revision(config, conn)
    assert db_revision == head, BROKEN.format(use=use + f" (stamped {db_revision}, head {head})")
