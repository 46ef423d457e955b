"""The asset graph: catalog assets (feeds, episode_manifest), per-episode assets (raw_audio to kpis), the archive."""

from dagster import BackfillPolicy

from podinsight_dagster.assets.archive import archive_rollup, transcript_index
from podinsight_dagster.assets.catalog import episode_manifest, feeds
from podinsight_dagster.assets.episodes import (EPISODE_BACKFILL, chapters, kpis, raw_audio, segments, speakers,
                                                transcript, transcript_asset_for)

catalog_assets = [feeds, episode_manifest]
episode_assets = [raw_audio, transcript, speakers, chapters, segments, kpis]
archive_assets = [transcript_index, archive_rollup]
all_assets = [*catalog_assets, *episode_assets, *archive_assets]


def assets_for(settings) -> list:
    """``all_assets`` with ``transcript`` versioned for ``settings`` (what the definitions load), and every
    episode asset's backfill policy at ``settings.episodes_per_run`` partitions per run.

    All of them get the same policy: a backfill puts assets in one run only when their policies agree.
    """
    versioned = transcript_asset_for(settings)
    assets = [versioned if a is transcript else a for a in all_assets]
    per_run = settings.episodes_per_run
    if per_run == EPISODE_BACKFILL.max_partitions_per_run:
        return assets
    policy = BackfillPolicy.multi_run(max_partitions_per_run=per_run)
    return [a.with_attributes(backfill_policy=policy) if a.backfill_policy == EPISODE_BACKFILL else a
            for a in assets]
