"""The asset graph: catalog assets (feeds, episode_manifest), per-episode assets (raw_audio to kpis), the archive."""

from podinsight_dagster.assets.archive import archive_rollup, transcript_index
from podinsight_dagster.assets.catalog import episode_manifest, feeds
from podinsight_dagster.assets.episodes import (chapters, kpis, raw_audio, segments, speakers, transcript,
                                                transcript_asset_for)

catalog_assets = [feeds, episode_manifest]
episode_assets = [raw_audio, transcript, speakers, chapters, segments, kpis]
archive_assets = [transcript_index, archive_rollup]
all_assets = [*catalog_assets, *episode_assets, *archive_assets]


def assets_for(settings) -> list:
    """``all_assets`` with ``transcript`` versioned for ``settings`` (what the definitions load)."""
    versioned = transcript_asset_for(settings)
    return [versioned if a is transcript else a for a in all_assets]
