"""podrun --dagster-url: work launched on a running `dagster dev` through its GraphQL API."""

from click.testing import CliRunner
from dagster import AssetKey, DagsterInstance

from podinsight_dagster.cli import main
from podinsight_dagster.store.checkpoints import SqliteCheckpointStore


def test_podrun_fetch_through_a_running_deployment(settings, demo_catalog, dagster_dev):
    demo_catalog(["tech-talk"])
    result = CliRunner().invoke(main, ["fetch", "--dagster-url", dagster_dev], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "backfill" in result.output and "COMPLETED" in result.output
    assert SqliteCheckpointStore(settings.checkpoint_db).counts()["downloaded"] == 3
    with DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        assert len(instance.get_materialized_partitions(AssetKey("raw_audio"))) == 3
        runs = instance.get_runs()
        backfill_runs = [r for r in runs if r.tags.get("dagster/backfill")]
        assert len(backfill_runs) == 1  # a UI-style backfill; its 3 episodes share one run
