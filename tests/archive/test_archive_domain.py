"""The archive's domain: DuckDB views in the Athena shape, the FTS5 index (incremental), the Parquet roll-up."""

from __future__ import annotations

import pytest

from podinsight_dagster.archive.index import SearchError, TranscriptIndex, passages_of
from podinsight_dagster.archive.passages import episode_doc
from podinsight_dagster.archive.rollup import roll_up, rollup_views
from podinsight_dagster.archive.views import SEGMENT_COLUMNS, QueryError, create_views, run_query
from podinsight_dagster.services import archive_uri, build_duckdb, build_transcript_index, stage_uri
from podinsight_dagster.transcribe.options import Segment, Transcript
from podinsight_dagster.transcribe.steps import segments_rows

from .conftest import EPISODES, stage_episode

ATHENA_COLUMNS = ["text", "start_sec", "end_sec", "speaker"]  # run-book Appendix B, then partitions
ATHENA_PARTITIONS = ["feed_slug", "guid"]


def _views(settings):
    con = build_duckdb(settings)
    create_views(con, stage_uri(settings))
    return con


def test_segments_view_has_exactly_the_columns_the_pipeline_writes(settings, staged):
    t = Transcript(text="a", language="en", language_probability=1.0, duration=1.0, speech_duration=1.0,
                   segments=[Segment(0.0, 1.0, "a", -0.1, 0.1, 1.0, speaker="Ann")], model=None, device=None,
                   compute_type=None, wall_sec=0.1)
    written = set(segments_rows(t)[0])
    assert written == set(SEGMENT_COLUMNS)  # every field a segments.json row can have, no more
    got = run_query(_views(settings), "SELECT * FROM segments LIMIT 0").columns
    assert got[:4] == ATHENA_COLUMNS and got[-2:] == ATHENA_PARTITIONS
    assert set(got) == written | set(ATHENA_PARTITIONS)


def test_views_answer_sql_over_the_stage_layout(settings, staged):
    con = _views(settings)
    rows = run_query(con, "SELECT feed_slug, count(*) AS n FROM segments GROUP BY 1 ORDER BY 1").rows
    assert rows == [("garden-hour", 2), ("tech-talk", 5)]
    eps = run_query(con, "SELECT partition_key, title, words, cost_usd > 0 FROM episodes ORDER BY 1").rows
    assert [e[:2] for e in eps] == [("garden-hour/gh-0001", "Tomatoes"), ("tech-talk/tt-0001", "Rust in production"),
                                    ("tech-talk/tt-0002", "Databases")]
    assert all(e[2] > 0 and e[3] for e in eps)
    [(speaker, guid)] = run_query(con, "SELECT DISTINCT speaker, guid FROM segments WHERE text LIKE '%DuckDB%'").rows
    assert (speaker, guid) == (0, "tt-0002")
    assert run_query(con, "SELECT count(*) FROM transcripts").rows == [(3,)]
    assert run_query(con, "SELECT round(sum(words_per_minute)) > 0 FROM kpis").rows == [(True,)]


def test_views_are_empty_before_anything_is_transcribed(settings):
    con = _views(settings)
    for view in ("episodes", "transcripts", "segments", "kpis"):
        assert run_query(con, f"SELECT count(*) FROM {view}").rows == [(0,)]


def test_bad_sql_is_one_sentence(settings, staged):
    with pytest.raises(QueryError, match="^the query failed: .*") as err:
        run_query(_views(settings), "SELEC nonsense")
    assert "\n" not in str(err.value)
    with pytest.raises(QueryError, match="no_such_table"):
        run_query(_views(settings), "SELECT * FROM no_such_table")


def test_passages_keep_segment_offsets():
    segs = [{"text": "x" * 300, "start_sec": 0.0}, {"text": "y" * 300, "start_sec": 5.0}, {"text": "z", "start_sec": 9.0}]
    [(text1, start1, offs1), (text2, start2, _)] = passages_of(segs)
    assert (start1, offs1) == (0.0, [[0, 0.0], [301, 5.0]]) and (text2, start2) == ("z", 9.0)


def test_search_ranks_highlights_and_links_into_the_audio(settings, staged):
    index = build_transcript_index(settings)
    counts = index.index(episode_doc(staged, pk) for pk in EPISODES)
    assert set(counts) == set(EPISODES)
    hits = index.search("borrow checker")
    assert len(hits) == 1
    hit = hits[0]
    assert (hit.feed_slug, hit.partition_key, hit.title) == ("tech-talk", "tech-talk/tt-0001", "Rust in production")
    assert hit.start_sec == 9.5 and "The **borrow checker** keeps" in hit.snippet
    assert hit.link == "https://cdn.example/tech-talk/tt-0001.mp3#t=9"
    assert hit.audio.startswith("file:///") and hit.audio.endswith("tech-talk/tt-0001/audio/episode.mp3#t=9")
    # Porter stemming: "borrowing" finds "borrow"; --feed narrows the hits.
    assert {h.feed_slug for h in index.search("borrowing")} == {"tech-talk", "garden-hour"}
    [garden] = index.search("borrow", feed="garden-hour")
    assert garden.start_sec == 6.0 and garden.link.endswith("#t=6")
    assert len(index.search("borrow", limit=1)) == 1
    with pytest.raises(SearchError, match="no feed 'nope' in the search index"):
        index.search("borrow", feed="nope")
    with pytest.raises(SearchError, match="nothing to search for"):
        index.search("  ?! ")
    assert index.top_searches(1) == [("borrow", 2)]
    assert index.hits_by_month("borrow") == {"2026-01": 1, "2026-03": 1}


def test_reindexing_one_episode_leaves_the_others_alone(settings, staged):
    index = build_transcript_index(settings)
    index.index(episode_doc(staged, pk) for pk in EPISODES)
    others = index.conn.execute("SELECT rowid, text FROM passages WHERE rowid >> 20 != 1 ORDER BY rowid").fetchall()
    stage_episode(staged, "tech-talk/tt-0001", "Rust in production", [(0.0, 3.0, "Now about Zig instead.")],
                  published="2026-01-15T08:00:00Z")
    index.index([episode_doc(staged, "tech-talk/tt-0001")])
    assert index.search("borrow checker", log=False) == []
    assert [h.partition_key for h in index.search("zig", log=False)] == ["tech-talk/tt-0001"]
    assert index.conn.execute("SELECT rowid, text FROM passages WHERE rowid >> 20 != 1 ORDER BY rowid").fetchall() == others
    assert index.stats() == {"episodes": 3, "passages": 3, "feeds": 2}
    assert index.remove("tech-talk/tt-0001") and index.stats()["episodes"] == 2


def test_no_index_yet_is_one_sentence(settings):
    with pytest.raises(SearchError, match="no search index yet"):
        TranscriptIndex(settings.index_db, create=False)


def test_rollup_writes_one_parquet_file_per_feed_and_rewrites_only_changed_feeds(settings, staged):
    con = build_duckdb(settings)
    stage, archive = stage_uri(settings), archive_uri(settings)
    first = roll_up(con, stage, archive)
    assert (sorted(first.feeds_rewritten), first.episodes, first.segment_rows, first.files) == (
        ["garden-hour", "tech-talk"], 3, 7, 4)
    files = sorted(p.relative_to(settings.archive_root).as_posix() for p in settings.archive_root.rglob("*.parquet"))
    assert files == ["kpis/feed_slug=garden-hour/data.parquet", "kpis/feed_slug=tech-talk/data.parquet",
                     "segments/feed_slug=garden-hour/data.parquet", "segments/feed_slug=tech-talk/data.parquet"]
    again = roll_up(con, stage, archive)
    assert again.feeds_rewritten == [] and sorted(again.feeds_unchanged) == ["garden-hour", "tech-talk"]
    stage_episode(staged, "garden-hour/gh-0002", "Beans", [(0.0, 2.0, "Beans climb.")], published="2026-04-01")
    third = roll_up(con, stage, archive)
    assert third.feeds_rewritten == ["garden-hour"] and third.feeds_unchanged == ["tech-talk"]
    rollup_views(con, archive)
    rows = run_query(con, "SELECT feed_slug, count(*) FROM segments_rollup GROUP BY 1 ORDER BY 1").rows
    assert rows == [("garden-hour", 3), ("tech-talk", 5)]
    cols = run_query(con, "SELECT * FROM segments_rollup LIMIT 0").columns
    assert cols[:4] == ATHENA_COLUMNS and "guid" in cols and "feed_slug" in cols
    assert run_query(con, "SELECT count(*) FROM kpis_rollup").rows == [(4,)]
