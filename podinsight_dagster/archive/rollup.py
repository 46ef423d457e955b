"""The roll-up (run-book's ALL-IN bucket): segments and KPIs as Parquet, one file per feed per table.

Layout, Hive-style so DuckDB (``hive_partitioning``) and Athena (partition projection on
``feed_slug``) both read it:

    <archive>/segments/feed_slug=<slug>/data.parquet   text, start_sec, end_sec, speaker, ..., guid
    <archive>/kpis/feed_slug=<slug>/data.parquet       guid_key, partition_key, duration_sec, ...
    <archive>/_state/feeds.json                        per feed: fingerprint, episodes, rows

A query over 10,000 episodes reads one file per feed instead of 20,000 small JSON files. A feed is
rewritten only when its fingerprint changed (its episodes, or a re-transcribed one: the KPIs'
wall time and segment count enter the fingerprint), so a roll-up after a day of new episodes
rewrites only the feeds that got them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from podinsight_dagster.archive.views import create_views

TABLES = ("segments", "kpis")


@dataclass
class RollupResult:
    feeds_rewritten: list[str] = field(default_factory=list)
    feeds_unchanged: list[str] = field(default_factory=list)
    episodes: int = 0
    segment_rows: int = 0
    files: int = 0


def _is_local(uri: str) -> bool:
    return "://" not in uri


def _state(con, archive: str) -> dict[str, str]:
    path = f"{archive}/_state/feeds.json"
    # A wildcard, so the glob lists: over S3, DuckDB's glob of a literal path returns it unchecked.
    found = [f for (f,) in con.execute("SELECT file FROM glob(?)", [f"{archive}/_state/*.json"]).fetchall()]
    if not any(f.endswith("/_state/feeds.json") for f in found):
        return {}
    return dict(con.execute(f"SELECT feed_slug, fingerprint FROM read_json('{path}')").fetchall())


def fingerprints(con, stage: str) -> dict[str, tuple[str, int]]:
    """Per feed: a hash of its episodes' KPIs (which change whenever an episode is re-transcribed), episodes."""
    create_views(con, stage)
    rows = con.execute("""
        SELECT feed_slug, md5(string_agg(concat_ws(':', guid_key, wall_sec, segments, words), ','
                                         ORDER BY guid_key)), count(*)
        FROM kpis GROUP BY feed_slug ORDER BY feed_slug""").fetchall()
    return {slug: (fp, n) for slug, fp, n in rows}


def _copy(con, select: str, dest: str) -> None:
    if _is_local(dest):
        Path(dest).parent.mkdir(parents=True, exist_ok=True)
        tmp = dest + ".tmp"
        con.execute(f"COPY ({select}) TO '{tmp}' (FORMAT parquet, COMPRESSION zstd)")
        os.replace(tmp, dest)  # readers see the old file or the new one, never half of one
    else:  # one S3 PUT: the object appears whole
        con.execute(f"COPY ({select}) TO '{dest}' (FORMAT parquet, COMPRESSION zstd)")


def roll_up(con, stage: str, archive: str, full: bool = False) -> RollupResult:
    """Rewrite the Parquet files of every feed whose episodes changed (every feed with ``full``)."""
    stage, archive = stage.rstrip("/"), archive.rstrip("/")
    current = fingerprints(con, stage)
    before = {} if full else _state(con, archive)
    result = RollupResult()
    for slug, (fp, episodes) in current.items():
        result.episodes += episodes
        if before.get(slug) == fp:
            result.feeds_unchanged.append(slug)
            continue
        create_views(con, stage, feed=slug)
        _copy(con, "SELECT * EXCLUDE (feed_slug) FROM segments ORDER BY guid, start_sec",
              f"{archive}/segments/feed_slug={slug}/data.parquet")
        _copy(con, "SELECT * EXCLUDE (feed_slug) FROM kpis ORDER BY guid_key",
              f"{archive}/kpis/feed_slug={slug}/data.parquet")
        result.feeds_rewritten.append(slug)
        result.files += 2
    if current:
        values = ", ".join(f"('{slug}', '{fp}', {n})" for slug, (fp, n) in current.items())
        state_sql = f"SELECT * FROM (VALUES {values}) AS t(feed_slug, fingerprint, episodes)"
        dest = f"{archive}/_state/feeds.json"
        if _is_local(dest):
            Path(dest).parent.mkdir(parents=True, exist_ok=True)
            con.execute(f"COPY ({state_sql}) TO '{dest}.tmp' (FORMAT json)")
            os.replace(dest + ".tmp", dest)
        else:
            con.execute(f"COPY ({state_sql}) TO '{dest}' (FORMAT json)")
    create_views(con, stage)
    if current:
        result.segment_rows = con.execute(
            f"SELECT count(*) FROM read_parquet('{archive}/segments/*/data.parquet')").fetchone()[0]
    return result


def rollup_views(con, archive: str) -> None:
    """Views ``segments_rollup`` and ``kpis_rollup`` over the Parquet files (feed_slug from the folder)."""
    for table in TABLES:
        con.execute(f"CREATE OR REPLACE VIEW {table}_rollup AS SELECT * FROM "
                    f"read_parquet('{archive.rstrip('/')}/{table}/*/data.parquet', hive_partitioning=true)")
