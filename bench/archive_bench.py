"""Search benchmark: the transcript index (SQLite FTS5) over 10,000 synthetic 30-minute episodes.

Not a test. Run from the repository root:

    .venv/bin/python bench/archive_bench.py            # 10,000 episodes (~5-10 minutes on 2 cores)
    .venv/bin/python bench/archive_bench.py --quick    # 600 episodes, to check the script works

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
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

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


def timed(fn) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def latencies(index: TranscriptIndex, queries: list[str], feed: str | None = None) -> dict:
    ms, hits = [], []
    for q in queries:
        t = time.perf_counter()
        found = index.search(q, feed=feed, limit=10, log=False)
        ms.append((time.perf_counter() - t) * 1000)
        hits.append(len(found))
    ms.sort()
    return {"queries": len(ms), "median_ms": round(statistics.median(ms), 2),
            "p90_ms": round(ms[int(0.9 * (len(ms) - 1))], 2), "max_ms": round(ms[-1], 2),
            "queries_with_hits": sum(1 for h in hits if h)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--episodes", type=int, default=None)
    args = ap.parse_args()
    total = args.episodes or (600 if args.quick else 10_000)
    new = min(1000, total // 2)
    out_dir = ROOT / "bench" / "out"
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
    gen = episodes(rng, vocab, 0, first)
    while True:
        g0 = time.perf_counter()
        batch = [doc for _, doc in zip(range(200), gen)]
        t_gen += time.perf_counter() - g0
        if not batch:
            break
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


if __name__ == "__main__":
    main()
