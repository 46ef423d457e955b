"""Archive assets: the search index (per episode, kept up to date by every transcription run) and the Parquet roll-up."""

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from podinsight_dagster.archive.passages import episode_doc
from podinsight_dagster.archive.rollup import roll_up
from podinsight_dagster.assets.episode_runs import assets_in_run, each_episode, left_to_other_runs, run_per_episode
from podinsight_dagster.assets.episodes import EPISODE_BACKFILL, kpis, segments
from podinsight_dagster.store.checkpoints import SEGMENTS
from podinsight_dagster.store.claims import upstream_gate
from podinsight_dagster.partitions import episodes_partitions
from podinsight_dagster.resources.seams import ArchiveResource, CheckpointsResource, ObjectStoresResource, services_from


@asset(partitions_def=episodes_partitions, deps=[segments], group_name="archive", backfill_policy=EPISODE_BACKFILL,
       description="Search index (BM25 words and passage vectors) of the episode's segments; re-indexing one "
                   "episode touches only its own rows. Local: a SQLite FTS5 file; aws: one entry object per "
                   "episode in the stage bucket (_index/entries/), which every machine's `podrun search` reads.")
def transcript_index(context: AssetExecutionContext, stores: ObjectStoresResource, checkpoints: CheckpointsResource,
                     archive: ArchiveResource):
    services = services_from(stores=stores, checkpoints=checkpoints)
    index = archive.index()
    try:
        # The last episode asset of a transcription run: it names every episode whose earlier stage in
        # this run failed. Materialized alone, it reads whatever segments are stored.
        in_run = assets_in_run(context)
        gate = ("kpis", "kpis") if "kpis" in in_run else (SEGMENTS, "segments") if "segments" in in_run else None
        left = left_to_other_runs(context) if gate else frozenset()

        def step(pk: str) -> dict:
            if gate:
                upstream_gate(services.checkpoints, pk, *gate, left)
            doc = episode_doc(services, pk)
            return {"passages": index.index([doc])[pk], "segments": len(doc.segments)}

        def summary(done: dict[str, dict]) -> dict:
            # episode_count, not stats(): on aws that would fetch every task's entries into this task.
            return {"indexed_episodes": index.episode_count(),
                    "passages_indexed_in_run": sum(d.get("passages", 0) for d in done.values() if isinstance(d, dict)),
                    "index_path": MetadataValue.path(index.location)}

        yield from run_per_episode(context, each_episode(list(context.partition_keys), step), summary,
                                   checkpoints=services.checkpoints)
    finally:
        index.close()


@asset(deps=[segments, kpis], group_name="archive",
       description="The ALL-IN roll-up: segments and KPIs as Parquet, one file per feed per table "
                   "(<archive>/<table>/feed_slug=<slug>/data.parquet); only feeds with changed episodes are rewritten.")
def archive_rollup(context: AssetExecutionContext, archive: ArchiveResource) -> MaterializeResult:
    con = archive.duckdb()
    try:
        result = roll_up(con, archive.stage_uri(), archive.archive_uri())
    finally:
        con.close()
    context.log.info(f"rewrote {len(result.feeds_rewritten)} feeds, {len(result.feeds_unchanged)} unchanged")
    return MaterializeResult(metadata={
        "episodes": result.episodes, "segment_rows": result.segment_rows, "files_written": result.files,
        "feeds_rewritten": len(result.feeds_rewritten), "feeds_unchanged": len(result.feeds_unchanged),
        "rewritten": MetadataValue.json(result.feeds_rewritten), "path": MetadataValue.path(archive.archive_uri())})
