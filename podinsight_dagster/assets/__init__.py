"""The asset graph: catalog assets (feeds, episode_manifest) and per-episode assets (raw_audio to kpis)."""

from podinsight_dagster.assets.catalog import episode_manifest, feeds
from podinsight_dagster.assets.episodes import kpis, raw_audio, segments, speakers, transcript

catalog_assets = [feeds, episode_manifest]
episode_assets = [raw_audio, transcript, speakers, segments, kpis]
all_assets = [*catalog_assets, *episode_assets]
