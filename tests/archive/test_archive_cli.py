"""podrun query, search and report, and the archive assets that feed them, on staged episodes."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest
from click.testing import CliRunner
from dagster import DagsterInstance, materialize

from podinsight_dagster.archive.index import MEANING_FLOOR
from podinsight_dagster.assets import archive_rollup, transcript_index
from podinsight_dagster.cli import main
from podinsight_dagster.definitions import resources_for
from podinsight_dagster.partitions import EPISODES as EPISODES_DEF, RANGE_END_TAG, RANGE_START_TAG

from .conftest import EPISODES


def podrun(*args, ok=True):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def refused(*args) -> str:
    result = podrun(*args, ok=False)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


@pytest.fixture
def indexed(settings, staged):
    """The staged episodes materialized through transcript_index and archive_rollup (one Dagster run each)."""
    keys = sorted(EPISODES)
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(EPISODES_DEF, keys)
        res = materialize([transcript_index], instance=instance, resources=resources_for("local"),
                          tags={RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[-1]})
        assert res.success
        [mat] = [e for e in res.get_asset_materialization_events()][-1:]
        roll = materialize([archive_rollup], instance=instance, resources=resources_for("local"))
        assert roll.success
        meta = roll.asset_materializations_for_node("archive_rollup")[0].metadata
        assert (meta["episodes"].value, meta["segment_rows"].value, meta["feeds_rewritten"].value) == (3, 7, 2)
    return staged


def test_query_table_json_and_csv(indexed):
    out = podrun("query", "SELECT feed_slug, count(*) AS segments FROM segments GROUP BY 1 ORDER BY 1").output
    assert out.splitlines()[0].split() == ["feed_slug", "segments"]
    assert "garden-hour  2" in out and "tech-talk    5" in out and out.rstrip().endswith("(2 rows)")
    rows = json.loads(podrun("query", "SELECT partition_key, title FROM episodes ORDER BY 1", "--json").output)
    assert rows[0] == {"partition_key": "garden-hour/gh-0001", "title": "Tomatoes"}
    got = list(csv.reader(io.StringIO(podrun("query", "SELECT guid, start_sec FROM segments WHERE speaker = 0 "
                                                      "ORDER BY guid, start_sec LIMIT 2", "--csv").output)))
    assert got == [["guid", "start_sec"], ["gh-0001", "0.0"], ["gh-0001", "6.0"]]


def test_query_bad_input_is_one_sentence(indexed):
    assert "the query failed" in refused("query", "SELEC 1")
    assert "no_table" in refused("query", "SELECT * FROM no_table")
    assert refused("query", "SELECT 1", "--json", "--csv") == "Error: choose one of --json and --csv"


def test_search_prints_snippets_and_deep_links(indexed):
    out = podrun("search", "borrow checker").output
    assert out.splitlines()[:3] == ["1. tech-talk · Rust in production · 00:09",
                                    "   Welcome to tech talk. Today we talk about memory safety in Rust. "
                                    "The **borrow checker** keeps us honest.",
                                    "   https://cdn.example/tech-talk/tt-0001.mp3#t=9"]
    assert re.search(r"file:///\S+/pod-insights-raw/tech-talk/tt-0001/audio/episode.mp3#t=9", out)
    hits = json.loads(podrun("search", "borrow", "--feed", "garden-hour", "--json").output)
    assert [(h["partition_key"], h["start_sec"]) for h in hits] == [("garden-hour/gh-0001", 6.0)]
    assert len(json.loads(podrun("search", "borrow", "--limit", "1", "--json").output)) == 1
    # README's form: --feed and --limit together, as text ("Memory" is in garden-hour too)
    out = podrun("search", "memory", "--feed", "tech-talk", "--limit", "5").output
    assert [line.split(" · ")[0] for line in out.splitlines() if re.match(r"\d+\. ", line)] == ["1. tech-talk"]
    assert len(re.findall(r"^\d+\. garden-hour", podrun("search", "memory", "--limit", "5").output, re.M)) == 1
    assert podrun("search", "xylophone").output.strip() == \
        "no matches for 'xylophone': no passage holds every word; try podrun search --meaning xylophone"


def test_search_words_are_terms_quotes_a_phrase(indexed):
    """Every word must be in the passage, anywhere in it; "quoted words" only side by side (issue 22, item 10)."""
    def found(words: str) -> list[str]:
        return [h["partition_key"] for h in json.loads(podrun("search", words, "--json").output)]

    assert found("checker safety") == ["tech-talk/tt-0001"]            # not side by side, not in this order
    assert sorted(found("memory borrow")) == ["garden-hour/gh-0001", "tech-talk/tt-0001"]
    assert found('"memory safety"') == ["tech-talk/tt-0001"]           # the phrase: only where it stands so
    assert found('"safety memory"') == []
    assert found('"memory safety" borrow') == ["tech-talk/tt-0001"]    # a phrase and a word
    assert found("what is the borrow checker?") == ["tech-talk/tt-0001"]  # a question: its common words left out
    assert found("checker tomatoes") == []                             # no passage holds both
    out = podrun("search", "why is rust safe").output
    assert out.strip() == "no matches for 'why is rust safe': no passage holds every word; " \
                          "try podrun search --meaning 'why is rust safe'"


def test_search_bad_input_is_one_sentence(settings, indexed):
    assert "no feed 'nope' in the search index" in refused("search", "borrow", "--feed", "nope")
    assert "nothing to search for" in refused("search", "!!")
    assert "Invalid value for '--limit'" in podrun("search", "x", "--limit", "0", ok=False).output
    settings.index_db.unlink()
    assert "no search index yet" in refused("search", "borrow")


def test_report_is_one_self_contained_page(indexed, tmp_path, monkeypatch):
    from podinsight_dagster.costs.budget import SpendEntry

    indexed.budget.record_spend(SpendEntry("tech-talk/tt-0001", 0.25, compute_sec=60.0, device="cpu"))
    podrun("search", "borrow")
    podrun("search", "borrow")
    out = tmp_path / "report.html"
    assert "wrote" in podrun("report", "--out", str(out)).output
    page = out.read_text()
    for title in ("Download success rate per feed", "Hours transcribed per day", "Cost per day against the ceiling",
                  "Slowest hosts", "429 responses per host", "Top search terms: hits over time"):
        assert title in page
    # success rate, hours, cost, hosts and the search term (no 429 metrics were published here)
    assert page.count("<svg") == 5 and "<h3>borrow</h3>" in page and "0.25 USD" in page
    assert not re.search(r"<script|<link|src=|@import|url\(", page)  # nothing to fetch: opens without a server
    assert "tech-talk" in page and "$40" in page
    here = tmp_path / "here"  # README's `podrun report` without --out: report.html in the current folder
    here.mkdir()
    monkeypatch.chdir(here)
    assert podrun("report").output.startswith("wrote report.html")
    assert [p.name for p in here.iterdir()] == ["report.html"] and "<svg" in (here / "report.html").read_text()


def test_report_bad_out_is_one_sentence(settings, tmp_path):
    assert "does not exist" in refused("report", "--out", str(tmp_path / "nope" / "r.html"))


def test_search_by_meaning_has_the_same_deep_links(indexed):
    hits = json.loads(podrun("search", "--meaning", "is this language safe with memory?", "--json").output)
    assert hits[0]["partition_key"] == "tech-talk/tt-0001"
    assert re.fullmatch(r"https://cdn\.example/tech-talk/tt-0001\.mp3#t=\d+", hits[0]["link"])
    only = json.loads(podrun("search", "--meaning", "--no-hybrid", "gardening vegetables", "--json").output)
    assert only[0]["feed_slug"] == "garden-hour"
    out = podrun("search", "--meaning", "which database engine runs in process").output
    assert out.startswith("1. tech-talk · Databases · 00:00") and "#t=0" in out
    assert "--no-hybrid goes with --meaning" in podrun("search", "--no-hybrid", "x", ok=False).output


def test_search_by_meaning_shows_similarity_and_leaves_out_the_unrelated(indexed):
    out = podrun("search", "--meaning", "which database engine runs in process").output
    first = out.splitlines()[0]
    assert re.fullmatch(r"1\. tech-talk · Databases · 00:00 · similarity 0\.\d\d", first), first
    assert float(first.rsplit(" ", 1)[1]) >= MEANING_FLOOR
    hits = json.loads(podrun("search", "--meaning", "which database engine runs in process", "--json").output)
    assert hits and all(h["similarity"] >= MEANING_FLOOR for h in hits)
    # Three short episodes, none about football: nothing, said in one line, rather than three unrelated hits.
    for extra in ((), ("--no-hybrid",)):
        out = podrun("search", "--meaning", *extra, "football transfer rumours").output
        assert out.strip() == "nothing close enough in meaning to 'football transfer rumours' " \
                              f"(every passage's similarity is below {MEANING_FLOOR:.2f})"
