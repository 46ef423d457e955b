"""Search by meaning: passage embeddings beside the FTS5 index, ranked by similarity, hybrid with BM25."""

import sqlite3

import pytest

from podinsight_dagster.archive.index import EpisodeDoc, SearchError, TranscriptIndex
from tests.chapters.synthetic import TOPICS


def _doc(topic: str, feed: str = "show") -> EpisodeDoc:
    segs = [{"text": t, "start_sec": 10.0 * i, "end_sec": 10.0 * i + 9} for i, t in enumerate(TOPICS[topic])]
    return EpisodeDoc(partition_key=f"{feed}/{topic}", feed_slug=feed, guid_key=topic, title=topic.title(),
                      published="2026-01-01", enclosure_url=f"https://cdn.example/{topic}.mp3", audio_uri=None,
                      duration_sec=80.0, segments=segs)


@pytest.fixture
def index(tmp_path):
    idx = TranscriptIndex(tmp_path / "index.sqlite")
    idx.index([_doc(t, feed="food" if t == "sourdough" else "show") for t in TOPICS])
    yield idx
    idx.close()


@pytest.mark.parametrize("question, topic", [
    ("Which insects make something sweet that we can eat?", "beekeeping"),
    ("How do I borrow money to buy a house?", "mortgages"),
    ("Looking at planets from my garden at night", "telescopes"),
    ("preparing for a long distance race", "marathon"),
    ("baking a loaf at home", "sourdough"),
])
@pytest.mark.parametrize("hybrid", [True, False])
def test_the_episode_about_the_question_comes_first_with_a_deep_link(index, question, topic, hybrid):
    hits = index.search_meaning(question, hybrid=hybrid, limit=3)
    assert hits[0].partition_key.endswith("/" + topic), [h.partition_key for h in hits]
    assert hits[0].link.startswith(f"https://cdn.example/{topic}.mp3#t=")


def test_feed_filter_limit_and_bad_input(index):
    hits = index.search_meaning("bread", feed="food", limit=50)
    assert hits and {h.feed_slug for h in hits} == {"food"}
    assert len(index.search_meaning("bread", limit=2)) == 2
    with pytest.raises(SearchError, match="no feed 'nope'"):
        index.search_meaning("bread", feed="nope")
    with pytest.raises(SearchError, match="nothing to search for"):
        index.search_meaning("?!")


def test_vectors_are_replaced_per_episode_and_removed_with_it(index):
    count = lambda: sqlite3.connect(index.path).execute("SELECT count(*) FROM passage_vectors").fetchone()[0]  # noqa: E731
    passages = index.stats()["passages"]
    assert count() == passages
    index.index([_doc("mortgages")])  # re-indexed: same count, not doubled
    assert count() == passages
    index.remove("show/mortgages")
    assert count() == index.stats()["passages"] < passages
    assert all(not h.partition_key.endswith("mortgages") for h in index.search_meaning("home loan", limit=20))
