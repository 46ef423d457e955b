"""Search by meaning: passage embeddings beside the FTS5 index, ranked by similarity, hybrid with BM25."""

import sqlite3

import numpy as np
import pytest

from podinsight_dagster.archive.index import MEANING_FLOOR, ROWID_SHIFT, EpisodeDoc, SearchError, TranscriptIndex
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
    # Five short episodes hold one passage about bread: the limit is seen with no relevance floor.
    assert len(index.search_meaning("bread", limit=2, floor=-1.0)) == 2
    with pytest.raises(SearchError, match="no feed 'nope'"):
        index.search_meaning("bread", feed="nope")
    with pytest.raises(SearchError, match="nothing to search for"):
        index.search_meaning("?!")


def test_vectors_are_replaced_per_episode_and_removed_with_it(index):
    passages = index.stats()["passages"]
    assert index.vector_rows() == (passages, passages)
    n = sqlite3.connect(index.path).execute("SELECT passages FROM episodes WHERE guid_key = 'mortgages'").fetchone()[0]
    index.index([_doc("mortgages")])  # re-indexed: its new vectors appended, the old ones dead
    assert index.vector_rows() == (passages + n, passages)
    index.remove("show/mortgages")
    assert index.vector_rows() == (passages + n, passages - n) == (passages + n, index.stats()["passages"])
    assert all(not h.partition_key.endswith("mortgages") for h in index.search_meaning("home loan", limit=20))
    before = [(h.partition_key, h.score) for h in index.search_meaning("home loan", limit=20)]
    index.compact()  # the live rows rewritten into the next file; the results do not change
    assert index.vector_rows() == (passages - n, passages - n)
    assert sorted(p.name for p in index.path.parent.glob("*.i8")) == ["index.vectors-2.i8"]
    assert [(h.partition_key, h.score) for h in index.search_meaning("home loan", limit=20)] == before


def _unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _synthetic_index(path, episodes=120, per=40, seed=5):
    """Episodes whose passage vectors are given (clustered like topics), so thousands of rows cost no model."""
    rng = np.random.default_rng(seed)
    centres = _unit(rng.standard_normal((30, 384)))
    docs, emb = [], {}
    for e in range(episodes):
        feed = f"feed-{e % 4}"
        segs = [{"text": f"passage {e} {i} " + "words " * 100, "start_sec": 30.0 * i, "end_sec": 30.0 * i + 29}
                for i in range(per)]
        docs.append(EpisodeDoc(f"{feed}/ep{e}", feed, f"ep{e}", None, None, None, None, None, segs))
        noise = rng.standard_normal((per, 384)) * 0.05  # per-component: a noise vector of norm ~1
        emb[docs[-1].partition_key] = _unit(centres[rng.integers(0, len(centres), per)] + noise)
    index = TranscriptIndex(path)
    for at in range(0, episodes, 40):
        index.index(docs[at:at + 40], embeddings={d.partition_key: emb[d.partition_key] for d in docs[at:at + 40]})
    return index, docs, emb, rng


def _previous_ranking(index, emb, q, feed=None, depth=100):
    """The ranking as it was computed before the vector file: every vector widened to float32, one product."""
    ids = dict(sqlite3.connect(index.path).execute("SELECT partition_key, id FROM episodes"))
    rowids = np.concatenate([(ids[pk] << ROWID_SHIFT) + np.arange(len(v)) for pk, v in emb.items()])
    mat = np.concatenate([np.clip(np.rint(v * 127), -127, 127).astype(np.int8) for v in emb.values()])
    sims = (mat.astype(np.float32) / 127.0) @ q
    if feed is not None:
        sims[[not pk.startswith(feed + "/") for pk, v in emb.items() for _ in range(len(v))]] = -np.inf
    top = np.argsort(-sims, kind="stable")[:depth]
    return dict(zip(rowids.tolist(), sims.tolist())), [float(sims[i]) for i in top]


def _assert_same_within_ties(got, previous):
    every, top = previous
    assert len(got) == len(top)
    for (rowid, score), expected in zip(got, top):
        assert abs(score - every[rowid]) < 1e-5   # each hit has the score the float32 product gave it
        assert abs(score - expected) < 1e-5       # and the same score at every rank: order differs only in ties


def test_ranking_is_the_previous_float32_products_within_ties_after_updates_and_compaction(tmp_path):
    index, docs, emb, rng = _synthetic_index(tmp_path / "index.sqlite")
    questions = _unit(rng.standard_normal((6, 384)) * 0.05 + np.array([emb[d.partition_key][0] for d in docs[:6]]))
    check = lambda feed=None: [_assert_same_within_ties(index.meaning_ranking("q", feed=feed, q=q),  # noqa: E731
                                                        _previous_ranking(index, emb, q, feed)) for q in questions]
    check()
    check(feed="feed-2")
    # Re-index a third of the episodes with new vectors: appended, old rows dead; then compact.
    changed = docs[::3]
    for d in changed:
        emb[d.partition_key] = _unit(rng.standard_normal((len(d.segments), 384)))
    index.index(changed, embeddings={d.partition_key: emb[d.partition_key] for d in changed})
    total, live = index.vector_rows()
    assert (total, live) == (sum(len(v) for v in emb.values()) + 40 * len(changed), sum(len(v) for v in emb.values()))
    check()
    index.compact()
    assert index.vector_rows() == (live, live)
    check(feed="feed-1")
    index.close()


def test_an_index_with_vectors_in_sqlite_is_moved_to_the_vector_file(tmp_path):
    index, docs, emb, rng = _synthetic_index(tmp_path / "index.sqlite", episodes=10, per=5)
    q = emb[docs[3].partition_key][2]
    expected = index.meaning_ranking("q", q=q, depth=20)
    # Make it an index as the previous version wrote it: vectors as rows of passage_vectors, no file.
    ids, mat = index.load_vectors()
    index.close()
    db = sqlite3.connect(tmp_path / "index.sqlite")
    db.execute("CREATE TABLE passage_vectors (rowid INTEGER PRIMARY KEY, vec BLOB NOT NULL)")
    db.executemany("INSERT INTO passage_vectors VALUES (?, ?)", [(int(r), m.tobytes()) for r, m in zip(ids, mat)])
    db.execute("ALTER TABLE episodes DROP COLUMN vec_start")
    db.execute("ALTER TABLE episodes DROP COLUMN vec_count")
    db.execute("DROP TABLE vector_file")
    db.commit()
    db.close()
    for f in tmp_path.glob("*.i8"):
        f.unlink()
    index = TranscriptIndex(tmp_path / "index.sqlite", create=False)
    assert index.meaning_ranking("q", q=q, depth=20) == expected
    assert index.vector_rows() == (50, 50)
    assert not sqlite3.connect(index.path).execute(
        "SELECT 1 FROM sqlite_master WHERE name = 'passage_vectors'").fetchone()
    index.close()


@pytest.mark.parametrize("hybrid", [True, False])
def test_each_hit_has_its_similarity_and_nothing_below_the_floor_is_shown(index, hybrid):
    hits = index.search_meaning("How do I borrow money to buy a house?", hybrid=hybrid, limit=10)
    assert hits and all(h.similarity >= MEANING_FLOOR for h in hits)
    assert hits[0].partition_key == "show/mortgages"
    everything = index.search_meaning("How do I borrow money to buy a house?", hybrid=hybrid, limit=10, floor=-1.0)
    assert len(hits) < len(everything) == 5  # one passage per episode: the floor left out the unrelated ones
    # A question about nothing these episodes hold finds nothing, not ten unrelated passages.
    assert index.search_meaning("the rules of cricket", hybrid=hybrid) == []
