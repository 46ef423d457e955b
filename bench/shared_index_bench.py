"""The shared search index of the aws deployment (archive/shared.py) against the local SQLite index, side by side
in one run, on moto's server on loopback (a separate process).

Not a test. Run from the repository root:

    .venv/bin/python bench/shared_index_bench.py              # 2,000 episodes (~35 passages each)
    .venv/bin/python bench/shared_index_bench.py --quick      # 200

The synthetic archive of bench/archive_bench.py (30-minute episodes, Zipf words, 100 feeds), with random unit
vectors per passage (no model for the passages; the questions are embedded by the real encoder). Measured:

(1) indexing: the local ``TranscriptIndex`` (batches of 200) and the shared index's writer (one entry object
    per episode, create-only PUT), episodes/s;
(2) a new machine's first search: the replica's catch-up (LIST, GET of every entry, indexing it);
(3) per query, as ``podrun search`` does it (open the index as a reader, search, close): full text (100
    queries: 50 single words, 50 pairs of words not side by side) and hybrid ``--meaning`` (20 questions),
    local vs shared (the shared reader lists the log from its last listing to find new entries, then
    searches its replica); medians and the ratio shared / local. The shared reader is measured with no
    skew margin (the steady state: nothing written in the last 10 minutes) and, on 20 queries, with the
    10-minute margin right after the whole archive was written (each search lists every entry again).

Writes bench/out/shared_index_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil

import numpy as np

import archive_bench as ab  # noqa: E402  (the synthetic archive)
import harness  # noqa: E402  (bench/: paths, timing, moto)

from podinsight_dagster.archive.index import TranscriptIndex, passages_of  # noqa: E402
from podinsight_dagster.archive.shared import SKEW_MARGIN_SEC, SharedTranscriptIndex  # noqa: E402

QUESTIONS = ["why do we need sleep", "how far away are the stars", "how to borrow money for a house",
             "training for a marathon", "what makes bread rise", "how do bees make honey",
             "why do data pipelines break", "writing good tests", "the history of printing", "life at sea",
             "how computers recognise speech", "what bacteria do in the body", "ancient rome", "saving money",
             "learning a language", "climate and weather", "music and memory", "cooking pasta", "space travel",
             "raising children"]


def median_ms(fn, items) -> dict:
    stats = harness.latency_stats(harness.times_ms(fn, items))
    return {"median_ms": stats["median_ms"], "p90_ms": stats["p90_ms"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--episodes", type=int, default=None)
    args = ap.parse_args()
    total = args.episodes or (200 if args.quick else 2000)
    work = harness.OUT / "shared_index"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    proc, url = harness.start_moto()
    try:
        os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
        import boto3

        from podinsight_dagster.chapters.embed import encoder
        from podinsight_dagster.store.s3 import S3ObjectStore

        s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
        s3.create_bucket(Bucket="pod-insights-stage")
        store = S3ObjectStore(s3, "pod-insights-stage")
        enc = encoder()
        rng = np.random.default_rng(12)
        vocab = ab.vocabulary(rng)
        docs = list(ab.episodes(rng, vocab, 0, total))
        emb = {}
        for d in docs:
            v = rng.standard_normal((len(passages_of(d.segments)), 384)).astype(np.float32)
            emb[d.partition_key] = v / np.linalg.norm(v, axis=1, keepdims=True)
        report: dict = {"episodes": total, "passages": sum(len(v) for v in emb.values()),
                        "machine": f"{os.cpu_count()} cores, load average {harness.load1():.1f} at start"}

        # (1) indexing
        local = TranscriptIndex(work / "local.sqlite", encoder=enc)
        def load(index):
            for at in range(0, total, 200):
                index.index(docs[at:at + 200], embeddings=emb)

        local_s, _ = harness.timed(lambda: (load(local), local.optimize()))
        local.close()
        writer = SharedTranscriptIndex(store, work / "writer.sqlite", encoder=enc)
        shared_s, _ = harness.timed(lambda: load(writer))
        writer.close()
        report["indexing"] = {"local_episodes_per_s": round(total / local_s, 1),
                              "shared_writer_episodes_per_s": round(total / shared_s, 1)}
        print(json.dumps(report["indexing"]), flush=True)

        # (2) a new machine's first search
        catch_up_s, _ = harness.timed(
            lambda: SharedTranscriptIndex(store, work / "machine-b.sqlite", create=False, encoder=enc).close())
        report["new_machine_catch_up_s"] = round(catch_up_s, 2)
        print("catch-up", report["new_machine_catch_up_s"], flush=True)

        # (3) per query, as podrun search does it
        words = [str(vocab[int(r)]) for r in np.exp(rng.uniform(np.log(200), np.log(ab.VOCAB), 50)).astype(int)]
        pairs = [f"{vocab[int(a)]} {vocab[int(b)]}" for a, b in
                 np.exp(rng.uniform(np.log(50), np.log(2000), (50, 2))).astype(int)]
        queries = words + pairs

        def local_words(q):
            idx = TranscriptIndex(work / "local.sqlite", create=False, encoder=enc)
            idx.search(q, limit=10, log=False)
            idx.close()

        def shared_words(q, margin=0):
            idx = SharedTranscriptIndex(store, work / "machine-b.sqlite", create=False, encoder=enc,
                                        skew_margin_sec=margin)
            idx.search(q, limit=10, log=False)
            idx.close()

        def shared_words_after_burst(q):
            # Every entry was written in the last 10 minutes: each search lists them all again (the margin).
            shared_words(q, margin=SKEW_MARGIN_SEC)

        def local_meaning(q):
            idx = TranscriptIndex(work / "local.sqlite", create=False, encoder=enc)
            idx.search_meaning(q, limit=10, log=False)
            idx.close()

        def shared_meaning(q):
            idx = SharedTranscriptIndex(store, work / "machine-b.sqlite", create=False, encoder=enc,
                                        skew_margin_sec=0)
            idx.search_meaning(q, limit=10, log=False)
            idx.close()

        local_meaning(QUESTIONS[0])  # numba and the encoder loaded once, for both
        found = sum(1 for q in pairs if TranscriptIndex(work / "local.sqlite", create=False).search(q, log=False))
        result = {}
        for name, fn, items in (("full_text_local", local_words, queries), ("full_text_shared", shared_words, queries),
                                ("hybrid_local", local_meaning, QUESTIONS), ("hybrid_shared", shared_meaning, QUESTIONS),
                                ("full_text_shared_after_burst", shared_words_after_burst, queries[:20])):
            result[name] = median_ms(fn, items)
            print(name, result[name], flush=True)
        result["full_text_ratio"] = round(result["full_text_shared"]["median_ms"] / result["full_text_local"]["median_ms"], 2)
        result["hybrid_ratio"] = round(result["hybrid_shared"]["median_ms"] / result["hybrid_local"]["median_ms"], 2)
        result["word_pairs_with_hits"] = found
        # Listing the whole log (a new machine; hourly): one LIST per 1,000 entries.
        list_ms = harness.times_ms(lambda _: list(store.list_keys("_index/log/")), range(5))
        result["list_whole_log_ms"] = round(sum(list_ms) / 5, 2)
        report["per_query"] = result
        report["machine"] += f", {harness.load1():.1f} at the end"
        (harness.OUT / "shared_index_bench.json").write_text(json.dumps(report, indent=2))
        print(json.dumps(report, indent=2))
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    main()
