"""Search benchmark: the transcript index (SQLite FTS5) over 10,000 synthetic 30-minute episodes.

Not a test. Run from the repository root:

    .venv/bin/python bench/archive_bench.py            # 10,000 episodes (~5-10 minutes on 2 cores)
    .venv/bin/python bench/archive_bench.py --quick    # 600 episodes, to check the script works
    .venv/bin/python bench/archive_bench.py --episodes 40  # quicker: indexing embeds every passage (MiniLM)

Each episode is 30 minutes of speech at 150 words per minute (4,500 words in ~375 segments of 12
words), words drawn from a 20,000-word synthetic vocabulary with a Zipf distribution (s = 1.07,
as English), 100 feeds. Measured, on the project's ``TranscriptIndex``:

(1) bulk load of the first N - 1,000 episodes (then ``optimize``);
(2) indexing 1,000 new episodes into that index (target < 30 s), and re-indexing one episode;
(3) search latency, ``TranscriptIndex.search`` with limit 10 (BM25, snippet, deep link), over
    200 queries: 100 single words with frequency rank log-uniform in [200, 20,000] and 100
    two-word phrases taken from the corpus; median, p90 and max (target: median < 100 ms);
    the same with ``--feed``; and the worst case, very frequent words (ranks 10-20).

Writes bench/out/archive_bench.json and prints the figures.

``--meaning``: search by meaning (``podrun search --meaning``) over 10,000 one-hour episodes' passages
(90 passages of ~500 characters each: 900,000), measured separately (see ``meaning_main``); writes
bench/out/meaning_bench.json.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
from pathlib import Path

import numpy as np

import harness  # noqa: E402  (bench/: paths, timing, latency statistics)
from harness import timed  # noqa: E402

ROOT = harness.REPO

from podinsight_dagster.archive.index import EpisodeDoc, TranscriptIndex  # noqa: E402

WORDS_PER_EPISODE = 4500
WORDS_PER_SEGMENT = 12
VOCAB = 20_000
FEEDS = 100


def vocabulary(rng) -> np.ndarray:
    syllables = [c + v for c in "bcdfghjklmnprstvwz" for v in ("a", "e", "i", "o", "u", "ai", "ou")]
    words: set[str] = set()
    while len(words) < VOCAB:
        n = int(rng.integers(1, 4))
        words.add("".join(syllables[int(i)] for i in rng.integers(0, len(syllables), n)))
    return np.array(sorted(words, key=lambda w: (len(w), w)), dtype=object)  # short words most frequent


def episodes(rng, vocab: np.ndarray, start: int, count: int):
    p = 1.0 / np.arange(1, VOCAB + 1) ** 1.07
    p /= p.sum()
    for n in range(start, start + count):
        ids = rng.choice(VOCAB, size=WORDS_PER_EPISODE, p=p)
        words = vocab[ids]
        segs = []
        for i, at in enumerate(range(0, WORDS_PER_EPISODE, WORDS_PER_SEGMENT)):
            segs.append({"text": " ".join(words[at:at + WORDS_PER_SEGMENT]), "start_sec": i * 4.8,
                         "end_sec": (i + 1) * 4.8})
        feed = f"feed-{n % FEEDS:03d}"
        yield EpisodeDoc(partition_key=f"{feed}/ep-{n:05d}", feed_slug=feed, guid_key=f"ep-{n:05d}",
                         title=f"Episode {n}", published=f"2026-{1 + n % 12:02d}-01T00:00:00Z",
                         enclosure_url=f"https://cdn.example/{feed}/ep-{n:05d}.mp3", audio_uri=None,
                         duration_sec=1800.0, segments=segs)


def latencies(index: TranscriptIndex, queries: list[str], feed: str | None = None) -> dict:
    hits = []
    ms = harness.times_ms(lambda q: hits.append(len(index.search(q, feed=feed, limit=10, log=False))), queries)
    return {"queries": len(ms), **harness.latency_stats(ms), "queries_with_hits": sum(1 for h in hits if h)}


def batches(gen, size: int = 200):
    """Lists of up to ``size`` items of ``gen`` with the seconds spent generating each, until it runs out."""
    while True:
        dt, batch = timed(lambda: [x for _, x in zip(range(size), gen)])
        if not batch:
            return
        yield batch, dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--episodes", type=int, default=None)
    ap.add_argument("--meaning", action="store_true", help="the search-by-meaning benchmark instead")
    ap.add_argument("--reuse", action="store_true", help="--meaning: measure the index the last run built")
    args = ap.parse_args()
    if args.meaning:
        meaning_main(args.episodes or (600 if args.quick else 10_000), reuse=args.reuse)
        return
    total = args.episodes or (600 if args.quick else 10_000)
    new = min(1000, total // 2)
    out_dir = harness.OUT
    work = out_dir / "archive_index"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    rng = np.random.default_rng(12)
    vocab = vocabulary(rng)
    index = TranscriptIndex(work / "transcript_index.sqlite")
    report: dict = {"episodes": total, "words_per_episode": WORDS_PER_EPISODE, "feeds": FEEDS}

    t_gen = t_idx = 0.0
    batch: list[EpisodeDoc] = []
    last: list[EpisodeDoc] = []
    first = total - new
    for batch, dt_gen in batches(episodes(rng, vocab, 0, first)):
        t_gen += dt_gen
        last = batch
        dt, _ = timed(lambda: index.index(batch))
        t_idx += dt
        print(f"  loaded {batch[-1].guid_key}: {t_idx:.0f} s indexing, {t_gen:.0f} s generating", flush=True)
    sample_text = " ".join(s["text"] for s in last[-1].segments[:50])
    dt_opt, _ = timed(index.optimize)
    report["bulk_load"] = {"episodes": first, "index_s": round(t_idx, 1), "optimize_s": round(dt_opt, 1),
                           "episodes_per_s": round(first / t_idx, 1)}
    # (2) 1,000 new episodes into the index, as transcript_index does after a day of transcription.
    docs = list(episodes(rng, vocab, first, new))
    dt_new, _ = timed(lambda: index.index(docs))
    report["index_new"] = {"episodes": new, "seconds": round(dt_new, 2), "target_s": 30}
    one = docs[len(docs) // 2]
    dt_one, _ = timed(lambda: index.index([one]))
    report["reindex_one_episode_ms"] = round(dt_one * 1000, 1)
    report["index_bytes"] = sum(p.stat().st_size for p in work.iterdir())
    report["index"] = index.stats()
    # (3) search latency
    qrng = np.random.default_rng(7)
    ranks = np.exp(qrng.uniform(np.log(200), np.log(VOCAB), 100)).astype(int)
    words = [str(vocab[min(r, VOCAB - 1)]) for r in ranks]
    corpus_words = sample_text.split() or list(vocab[:1000])
    phrases = []
    for _ in range(100):
        i = int(qrng.integers(0, len(corpus_words) - 1))
        phrases.append(f"{corpus_words[i]} {corpus_words[i + 1]}")
    queries = words + phrases
    index.search(queries[0], log=False)  # warm the page cache once
    report["search"] = latencies(index, queries)
    report["search_words"] = latencies(index, words)
    report["search_phrases"] = latencies(index, phrases)
    report["search_in_feed"] = latencies(index, queries, feed="feed-007")
    report["search_frequent_words"] = latencies(index, [str(w) for w in vocab[10:20]])
    index.close()
    out_dir.mkdir(exist_ok=True)
    (out_dir / "archive_bench.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


# -- search by meaning ------------------------------------------------------------------------------
QUESTIONS = [
    "why do we need to sleep", "what happens in the brain during deep sleep", "how to sleep better at night",
    "why do data pipelines break", "how to test a data pipeline before it fails", "which database runs inside the app",
    "how did ancient people build roads", "what caused the fall of an empire", "who invented printing",
    "how do bees make honey", "keeping bees in a city garden", "how do I get a mortgage for a house",
    "fixed or variable interest rate on a home loan", "what telescope should a beginner buy",
    "seeing the rings of saturn from home", "how to train for a marathon", "what to eat before a long race",
    "baking sourdough bread at home", "why is my bread dense", "how vaccines train the immune system",
]


def _real_sentences() -> list[str]:
    import re

    from tests.chapters.synthetic import TOPICS

    texts = harness.CONTENT / "texts"
    out = [s for p in sorted(texts.glob("*/*.txt")) for s in re.split(r"(?<=[.!?])\s+", p.read_text())
           if len(s.split()) >= 4]
    return out + [s for sents in TOPICS.values() for s in sents]


def _meaning_corpus(rng, anchors: np.ndarray, vocab: np.ndarray, episodes: int, per: int, first: int = 0):
    """Episodes of ``per`` passages (one segment each, ~500 characters) with their vectors.

    Vectors: each passage is two real sentence embeddings (of the demo and test transcripts) mixed
    with noise and normalised, so questions have near neighbours and the similarities spread as
    MiniLM's do (a synthetic vector per passage: embedding 900,000 passages would take hours here).
    Words: Zipf over a vocabulary whose most frequent words are those sentences' English words, so
    the hybrid's BM25 half matches the questions' words.
    """
    p = 1.0 / np.arange(1, len(vocab) + 1) ** 1.07
    p /= p.sum()
    for n in range(first, first + episodes):
        words = vocab[rng.choice(len(vocab), size=(per, 150), p=p)]
        texts = [" ".join(row) for row in words]
        texts = [t[:t.find(" ", 500)] if t.find(" ", 500) > 0 else t for t in texts]  # ~500 characters
        segs = [{"text": t, "start_sec": 40.0 * i, "end_sec": 40.0 * i + 39} for i, t in enumerate(texts)]
        a, b = anchors[rng.integers(0, len(anchors), per)], anchors[rng.integers(0, len(anchors), per)]
        v = a + 0.6 * b + rng.standard_normal((per, anchors.shape[1])).astype(np.float32) * 0.045
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        feed = f"feed-{n % FEEDS:03d}"
        yield EpisodeDoc(partition_key=f"{feed}/ep-{n:05d}", feed_slug=feed, guid_key=f"ep-{n:05d}",
                         title=f"Episode {n}", published="2026-01-01T00:00:00Z",
                         enclosure_url=f"https://cdn.example/{feed}/ep-{n:05d}.mp3", audio_uri=None,
                         duration_sec=3600.0, segments=segs), v


def _stats(ms: list[float]) -> dict:
    return {"n": len(ms), **harness.latency_stats(ms)}


def meaning_main(total: int, per: int = 90, reuse: bool = False) -> None:
    """Search by meaning over ``total`` one-hour episodes (``per`` passages each).

    Measured: (1) building the index (FTS5 rows and the vector file) and incremental updates (100 new
    episodes appended, one re-indexed); (2) the one-time costs of a process's first meaning search:
    opening the index and mapping the vector file, numba's import and the compiled scan's load, the
    first scan; (3) per question, in-process (``TranscriptIndex``, the object ``podrun search`` uses),
    20 questions x 3 rounds: the question's embedding, the scan and top-100, BM25 over its words, and
    the whole ``search_meaning`` (hybrid, the default, and ``--no-hybrid``); (4) the previous method on
    the same vectors (rows of SQLite widened to a float32 matrix, one product per question): its load
    time, its per-question time, and whether its top 100 equal the new scan's within ties; (5) the
    command a user runs, ``podrun search --meaning "..."``, as a whole process, 5 questions (and with
    ``--no-hybrid``, and a full-text ``podrun search`` for the process's fixed cost).
    """
    from podinsight_dagster.archive import vectors
    from podinsight_dagster.chapters.embed import encoder

    out_dir = harness.OUT
    work = out_dir / "meaning_index"
    path = work / "transcript_index.sqlite"
    previous = json.loads((out_dir / "meaning_bench.json").read_text()) if reuse else None
    if previous is None:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
    rng = np.random.default_rng(21)
    sentences = _real_sentences()
    enc = encoder()
    if previous is not None:
        report = {**previous, "build": {**previous["build"], "measured": "in an earlier run (--reuse)"}}
        return _meaning_measure(report, path, enc, work, out_dir)
    anchors = enc.encode(sentences)
    from podinsight_dagster.chapters.tiling import STOPWORDS

    english = sorted({w for sent in sentences + QUESTIONS for w in
                      ("".join(c for c in t if c.isalnum()) for t in sent.lower().split()) if w})
    # The English words take ranks as in real speech: function words the most frequent, every other
    # word at a rank drawn log-uniform in [200, 20,000] (as the full-text benchmark's query words), in
    # place of the synthetic word there. So the hybrid's BM25 half matches the questions' words about
    # as often as a real archive would, not in most passages.
    vocab = vocabulary(rng)
    stop = [w for w in english if w in STOPWORDS]
    content = [w for w in english if w not in STOPWORDS]
    ranks = rng.permutation(np.unique(np.exp(rng.uniform(np.log(200), np.log(VOCAB), 4 * len(content))).astype(int)))
    vocab[:len(stop)] = stop
    vocab[ranks[:len(content)] - 1] = content
    report: dict = {"episodes": total, "passages_per_episode": per, "real_sentences": len(sentences)}

    # (1) build, in batches of 200 episodes, as transcription runs would (minus the embedding model)
    index = TranscriptIndex(path, encoder=enc)
    first = total - 100
    t_idx = t_gen = 0.0
    for batch, dt_gen in batches(_meaning_corpus(rng, anchors, vocab, first, per)):
        t_gen += dt_gen
        dt, _ = timed(lambda: index.index([d for d, _ in batch], embeddings={d.partition_key: v for d, v in batch}))
        t_idx += dt
        print(f"  loaded {batch[-1][0].guid_key}: {t_idx:.0f} s indexing, {t_gen:.0f} s generating", flush=True)
    index.optimize()
    new = list(_meaning_corpus(rng, anchors, vocab, 100, per, first=first))
    dt_new, _ = timed(lambda: index.index([d for d, _ in new], embeddings={d.partition_key: v for d, v in new}))
    one = new[50]
    dt_one, _ = timed(lambda: index.index([one[0]], embeddings={one[0].partition_key: one[1]}))
    rows, live = index.vector_rows()
    vec_file = vectors.file_for(path, index.conn.execute("SELECT generation FROM vector_file").fetchone()[0])
    report["build"] = {"bulk_episodes": first, "bulk_index_s": round(t_idx, 1),
                       "append_100_episodes_s": round(dt_new, 2), "reindex_one_episode_ms": round(dt_one * 1000, 1),
                       "vector_rows": rows, "live_rows": live, "vector_file_bytes": vec_file.stat().st_size,
                       "sqlite_bytes": sum(p.stat().st_size for p in work.glob("transcript_index.sqlite*"))}
    print(json.dumps(report["build"]), flush=True)
    index.close()
    _meaning_measure(report, path, enc, work, out_dir)


def _product_top100(mat: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The previous method's search: every similarity, then the top 100 rows in order."""
    sims = mat @ q
    top = np.argpartition(-sims, 99)[:100]
    return sims, top[np.argsort(-sims[top])]


def _meaning_measure(report: dict, path: Path, enc, work: Path, out_dir: Path) -> None:
    import sqlite3

    load_before = harness.load1()

    # (2) one-time costs in this process (the file is in the page cache: it was just written)
    index = TranscriptIndex(path, create=False, encoder=enc)
    dt_open, (ids, mat) = timed(index.load_vectors)
    dt_numba, _ = timed(lambda: __import__("podinsight_dagster.archive._scan"))
    q0 = index.embed_question(QUESTIONS[0])
    dt_first, _ = timed(lambda: index.meaning_ranking(QUESTIONS[0], q=q0))
    dt_second, _ = timed(lambda: index.meaning_ranking(QUESTIONS[0], q=q0))
    report["one_time"] = {"open_and_map_ms": round(dt_open * 1000, 1), "numba_import_and_scan_load_ms":
                          round(dt_numba * 1000, 1), "first_scan_ms": round(dt_first * 1000, 1),
                          "second_scan_ms": round(dt_second * 1000, 1), "passages": int((ids >= 0).sum())}
    print(json.dumps(report["one_time"]), flush=True)

    # (3) per question, in-process
    parts: dict[str, list[float]] = {k: [] for k in ("embed", "scan_top100", "bm25_words", "hybrid", "meaning_only")}
    rankings = {}
    for _ in range(3):
        for question in QUESTIONS:
            dt, q = timed(lambda: index.embed_question(question))
            parts["embed"].append(dt * 1000)
            dt, rankings[question] = timed(lambda: index.meaning_ranking(question, q=q))
            parts["scan_top100"].append(dt * 1000)
            dt, _ = timed(lambda: index.words_ranking(question))
            parts["bm25_words"].append(dt * 1000)
            dt, _ = timed(lambda: index.search_meaning(question, log=False))
            parts["hybrid"].append(dt * 1000)
            dt, _ = timed(lambda: index.search_meaning(question, hybrid=False, log=False))
            parts["meaning_only"].append(dt * 1000)
    report["per_question"] = {k: _stats(v) for k, v in parts.items()}
    for k, v in report["per_question"].items():
        print(f"  {k}: {v}", flush=True)
    top_scores = [rankings[qu][0][1] for qu in QUESTIONS]
    report["top_similarity"] = {"min": round(min(top_scores), 3), "max": round(max(top_scores), 3)}

    # (4) the previous method on the same vectors: SQLite rows -> float32 matrix -> product
    legacy = work / "legacy_vectors.sqlite"
    legacy.unlink(missing_ok=True)
    db = sqlite3.connect(legacy)
    db.execute("CREATE TABLE passage_vectors (rowid INTEGER PRIMARY KEY, vec BLOB NOT NULL)")
    live_slots = np.flatnonzero(ids >= 0)
    for at in range(0, len(live_slots), 100_000):
        chunk = live_slots[at:at + 100_000]
        db.executemany("INSERT INTO passage_vectors VALUES (?, ?)", zip(ids[chunk].tolist(), map(bytes, mat[chunk])))
    db.commit()
    db.close()
    index.close()
    del ids, mat

    def previous_load():
        rows = sqlite3.connect(legacy).execute("SELECT rowid, vec FROM passage_vectors ORDER BY rowid").fetchall()
        pids = np.array([r[0] for r in rows], dtype=np.int64)
        m = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.int8).reshape(len(rows), -1)
        return pids, m.astype(np.float32) / 127.0

    dt_prev_load, (pids, pmat) = timed(previous_load)
    index = TranscriptIndex(path, create=False, encoder=enc)
    prev_ms, same, tie_diffs = [], 0, 0
    for question in QUESTIONS:
        q = index.embed_question(question)
        dt, (sims, top) = timed(functools.partial(_product_top100, pmat, q))
        prev_ms.append(dt * 1000)
        new = index.meaning_ranking(question, q=q)
        prev = [(int(pids[i]), float(sims[i])) for i in top]
        if [r for r, _ in new] == [r for r, _ in prev]:
            same += 1
        elif np.allclose([s for _, s in new], [s for _, s in prev], atol=1e-5):
            tie_diffs += 1  # other rows at equal scores
    report["previous_method"] = {"load_s": round(dt_prev_load, 2), "memory_mb": round(pmat.nbytes / 2**20),
                                 "product_top100": _stats(prev_ms), "questions": len(QUESTIONS),
                                 "top100_identical": same, "top100_differing_only_in_ties": tie_diffs}
    print(json.dumps(report["previous_method"]), flush=True)
    index.close()
    del pmat, pids

    # (5) the command, as a user runs it
    env = harness.podrun_env(work, {"PYTHONPATH": str(ROOT)}, index_path=path)
    for name, flags in (("podrun_search_meaning", []), ("podrun_search_meaning_no_hybrid", ["--no-hybrid"]),
                        ("podrun_search_full_text", None)):
        wall, rss = [], []
        for question in QUESTIONS[:5]:
            args = ["search", *flags, "--meaning", question] if flags is not None else ["search", question.split()[-1]]
            # /usr/bin/time for the peak RSS: getrusage(RUSAGE_CHILDREN) would count the fork of this big process
            proc, dt = harness.run_timed(["/usr/bin/time", "-f", "%M", harness.podrun_bin(), *args], env=env)
            wall.append(dt * 1000)
            if proc.returncode != 0:
                raise SystemExit(f"podrun {' '.join(args)} failed: {proc.stderr.strip()[-500:]}")
            rss.append(int(proc.stderr.strip().splitlines()[-1]) / 1024)
        report[name] = {**_stats(wall), "peak_rss_mb": round(max(rss))}
        print(name, json.dumps(report[name]), flush=True)
    out_dir.mkdir(exist_ok=True)
    report["load_average_1min"] = {"before": round(load_before, 2), "after": round(harness.load1(), 2)}
    (out_dir / "meaning_bench.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
