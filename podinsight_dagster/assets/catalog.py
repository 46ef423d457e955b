"""Catalog assets: ``feeds`` (the tier*_feeds.yaml catalog) and ``episode_manifest``.

``episode_manifest`` is the run-book's generate_manifest.py: it polls every feed
with a conditional GET, registers new episodes in the checkpoint store and as
``episodes`` partitions, and writes manifest.csv plus its dated copy in
``pod-insights-manifests/<yyyymmdd>.csv``.
"""


from dagster import AssetExecutionContext, Failure, MaterializeResult, MetadataValue, asset

from podinsight_dagster.fetch.catalog import CatalogError
from podinsight_dagster.fetch.discover import discover
from podinsight_dagster.partitions import EPISODES
from podinsight_dagster.resources.seams import (CatalogResource, CheckpointsResource, HttpResource,
                                                ObjectStoresResource, services_from)


@asset(group_name="catalog", description="The feed catalog: every feeds/tier*_feeds.yaml, validated.")
def feeds(context: AssetExecutionContext, catalog: CatalogResource) -> MaterializeResult:
    try:
        loaded = catalog.load()
    except CatalogError as exc:
        raise Failure(str(exc), allow_retries=False) from exc
    table = "\n".join(["| slug | tier | url |", "|---|---|---|"]
                      + [f"| {f.slug} | {f.tier} | {f.url} |" for f in loaded.feeds])
    return MaterializeResult(metadata={
        "feeds": len(loaded.feeds),
        "tiers": MetadataValue.json(sorted({str(f.tier) for f in loaded.feeds})),
        "sources": MetadataValue.json(loaded.sources),
        "catalog": MetadataValue.md(table),
    })


@asset(group_name="catalog", deps=[feeds],
       description="Episodes of every feed (manifest.csv); registers new `episodes` partitions.")
def episode_manifest(context: AssetExecutionContext, catalog: CatalogResource, stores: ObjectStoresResource,
                     checkpoints: CheckpointsResource, http: HttpResource) -> MaterializeResult:
    try:
        loaded = catalog.load()
    except CatalogError as exc:
        raise Failure(str(exc), allow_retries=False) from exc
    services = services_from(stores=stores, checkpoints=checkpoints, http=http)
    result = discover(services, loaded)
    register_partitions(context.instance, [row["partition_key"] for row in result.manifest_rows])
    failed = [f for f in result.feeds if f.status == "failed"]
    for f in failed:
        context.log.warning(f"feed {f.slug} failed: {f.error}")
    for f in result.feeds:
        if f.status == "partial":  # a later page of a paged feed failed: the earlier pages are in
            context.log.warning(f"feed {f.slug}: {f.error}")
    if failed and len(failed) == len(result.feeds):
        raise Failure(f"every feed failed: {'; '.join(f'{f.slug}: {f.error}' for f in failed)}")
    feed_table = "\n".join(["| feed | status | episodes | new | error |", "|---|---|---|---|---|"] + [
        f"| {f.slug} | {f.status} | {f.episodes} | {f.new} | {(f.error or '').replace('|', '/')} |"
        for f in result.feeds])
    return MaterializeResult(metadata={
        "episodes": len(result.manifest_rows),
        "new_episodes": len(result.new_partition_keys),
        "feeds_ok": sum(f.status == "ok" for f in result.feeds),
        "feeds_not_modified": sum(f.status == "not_modified" for f in result.feeds),
        "feeds_failed": len(failed),
        "feeds": MetadataValue.md(feed_table),
        "manifest": MetadataValue.path(str(result.manifest_path)) if result.manifest_path else None,
        "manifest_key": f"{services.manifests.name}/{result.manifest_key}",
    })


def register_partitions(instance, keys: list[str]) -> list[str]:
    """Add the keys that the instance lacks to the ``episodes`` partitions; return those added."""
    existing = set(instance.get_dynamic_partitions(EPISODES))
    missing = list(dict.fromkeys(k for k in keys if k not in existing))
    if missing:
        instance.add_dynamic_partitions(EPISODES, missing)
    return missing
