"""The archive on the AWS deployment, against moto's server on loopback: `podrun query` reads the stage bucket
through DuckDB's httpfs (loaded from the duckdb-ext-httpfs package, never downloaded), `archive_rollup`
writes its Parquet files into the ALL-IN bucket, where DuckDB reads them back over S3, and `transcript_index`,
`podrun search` and `podrun report` work from the buckets.
"""

from __future__ import annotations

import csv
import io
import json

import pytest
from click.testing import CliRunner
from dagster import DagsterInstance, materialize

from podinsight_dagster.archive.rollup import rollup_views
from podinsight_dagster.assets import archive_rollup, transcript_index
from podinsight_dagster.cli import main
from podinsight_dagster.definitions import resources_for
from podinsight_dagster.partitions import EPISODES as EPISODES_DEF, RANGE_END_TAG, RANGE_START_TAG
from podinsight_dagster.services import archive_uri, build_duckdb, build_services, stage_uri
from podinsight_dagster.settings import Settings

from ..conftest import make_aws_stack
from .conftest import EPISODES, stage_episode


@pytest.fixture
def aws_staged(aws_home, moto_server):
    """The aws deployment on moto (buckets, the status table) with the three archive episodes staged in S3."""
    settings = Settings.from_env()
    make_aws_stack(moto_server, settings)
    services = build_services(settings)
    for n, (pk, (title, segs)) in enumerate(EPISODES.items()):
        stage_episode(services, pk, title, segs, published=f"2026-0{n + 1}-15T08:00:00Z")
    try:
        yield settings
    finally:
        services.close()


def podrun(*args):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_query_reads_the_stage_bucket_over_httpfs(aws_staged, moto_server):
    settings = aws_staged
    assert stage_uri(settings) == "s3://pod-insights-stage"
    keys = {o["Key"] for o in moto_server.client("s3").list_objects_v2(Bucket="pod-insights-stage")["Contents"]}
    assert "tech-talk/tt-0001/segments/segments.json" in keys  # the files lie in S3, not on disk
    assert not (settings.home / "pod-insights-stage").exists()

    out = podrun("query", "SELECT feed_slug, count(*) AS segments FROM segments GROUP BY 1 ORDER BY 1")
    assert "garden-hour  2" in out and "tech-talk    5" in out and out.rstrip().endswith("(2 rows)")
    rows = json.loads(podrun("query", "SELECT partition_key, title, duration_sec, words FROM episodes "
                                      "ORDER BY 1", "--json"))
    assert [(r["partition_key"], r["title"]) for r in rows] == [
        ("garden-hour/gh-0001", "Tomatoes"), ("tech-talk/tt-0001", "Rust in production"),
        ("tech-talk/tt-0002", "Databases")]
    assert rows[1]["duration_sec"] == 15.0 and rows[1]["words"] == 18
    got = list(csv.reader(io.StringIO(podrun(
        "query", "SELECT guid, start_sec, text FROM segments WHERE text ILIKE '%borrow checker%'", "--csv"))))
    assert got == [["guid", "start_sec", "text"], ["tt-0001", "9.5", "The borrow checker keeps us honest."]]
    # Read-only, and only the stage bucket (issue 22 item 9): another bucket is refused, in one sentence.
    other = CliRunner().invoke(main, ["query", "SELECT * FROM read_json('s3://pod-insights-raw/tech-talk/tt-0001/"
                                               "meta/meta.json')"], catch_exceptions=False)
    assert other.exit_code == 1 and other.output.startswith("Error: queries read only the archive's files: ")
    assert len(other.output.strip().splitlines()) == 1


def test_archive_rollup_writes_parquet_to_the_all_in_bucket(aws_staged, moto_server):
    settings = aws_staged
    with DagsterInstance.ephemeral() as instance:
        first = materialize([archive_rollup], instance=instance, resources=resources_for("aws"))
        assert first.success
        meta = first.asset_materializations_for_node("archive_rollup")[0].metadata
        assert (meta["episodes"].value, meta["segment_rows"].value, meta["feeds_rewritten"].value) == (3, 7, 2)
        assert meta["path"].value == "s3://pod-insights-all-in"
        keys = {o["Key"] for o in moto_server.client("s3").list_objects_v2(Bucket="pod-insights-all-in")["Contents"]}
        assert keys == {"segments/feed_slug=garden-hour/data.parquet", "segments/feed_slug=tech-talk/data.parquet",
                        "kpis/feed_slug=garden-hour/data.parquet", "kpis/feed_slug=tech-talk/data.parquet",
                        "_state/feeds.json"}

        # The Parquet files, read back over S3 (the way Athena's partition projection sees them).
        con = build_duckdb(settings)
        try:
            rollup_views(con, archive_uri(settings))
            assert con.execute("SELECT feed_slug, count(*) FROM segments_rollup GROUP BY 1 ORDER BY 1").fetchall() \
                == [("garden-hour", 2), ("tech-talk", 5)]
            assert con.execute("SELECT guid_key, words FROM kpis_rollup WHERE feed_slug = 'tech-talk' "
                               "ORDER BY 1").fetchall() == [("tt-0001", 18), ("tt-0002", 14)]
        finally:
            con.close()

        # Nothing changed: no feed is rewritten. One new episode: only its feed is.
        again = materialize([archive_rollup], instance=instance, resources=resources_for("aws"))
        assert again.asset_materializations_for_node("archive_rollup")[0].metadata["feeds_rewritten"].value == 0
        services = build_services(settings)
        try:
            stage_episode(services, "garden-hour/gh-0002", "Roses", [(0.0, 3.0, "Prune roses in March.")],
                          published="2026-04-15T08:00:00Z")
        finally:
            services.close()
        third = materialize([archive_rollup], instance=instance, resources=resources_for("aws"))
        meta = third.asset_materializations_for_node("archive_rollup")[0].metadata
        assert meta["rewritten"].value == ["garden-hour"] and meta["segment_rows"].value == 8


def test_search_and_report_on_the_aws_deployment(aws_staged, tmp_path):
    """transcript_index reads the stage bucket; a hit links to the enclosure and to the audio in the raw bucket."""
    keys = sorted(EPISODES)
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(EPISODES_DEF, keys)
        res = materialize([transcript_index], instance=instance, resources=resources_for("aws"),
                          tags={RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[-1]})
        assert res.success
    out = podrun("search", "borrow checker")
    assert out.splitlines()[:4] == [
        "1. tech-talk · Rust in production · 00:09",
        "   Welcome to tech talk. Today we talk about memory safety in Rust. The **borrow checker** keeps us honest.",
        "   https://cdn.example/tech-talk/tt-0001.mp3#t=9",
        "   s3://pod-insights-raw/tech-talk/tt-0001/audio/episode.mp3#t=9"]
    page = tmp_path / "report.html"
    assert podrun("report", "--out", str(page)).startswith(f"wrote {page}")
    html = page.read_text()
    assert "<svg" in html and "tech-talk" in html and "garden-hour" in html
