"""Packing short episodes into shared 30-s windows: word error rate and time, packed against unpacked.

Not a test. Run from the repository root (needs ffmpeg):

    PYTHONPATH=$PWD .venv/bin/python bench/pack_bench.py                 # 80 clips of 5-30 s, gaps 0 and 1.0 s
    PYTHONPATH=$PWD .venv/bin/python bench/pack_bench.py --gaps 0 0.5 1.0 --count 40

The clips are podrun_transcribe_bench's short set (cut from the demo MP3s, whose texts are known:
podinsight_dagster/demo/content/texts). Each gap setting transcribes all clips in one
``transcribe_many`` call (one process, the model loaded once, outside the timing). Reference text
of a clip: the stretch of its episode's text that the unpacked (gap 0) transcript aligns to best
(semi-global word alignment), so every setting is scored against the same words; clips are cut
mid-word, so the boundary words count against every setting alike.

Also checked: every word of a packed transcript comes from its own clip's episode text. A word
that is in a neighbour's text and not in its own is counted as a stray (the "wrong episode" check).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict, fields, replace
from pathlib import Path

import harness  # noqa: E402  (bench/: paths, the demo episodes, audio sets)

from podinsight_dagster.transcribe.batching import transcribe_many  # noqa: E402
from podinsight_dagster.transcribe.engine import Engine  # noqa: E402
from podinsight_dagster.transcribe.packing import PackStats  # noqa: E402
from podinsight_dagster.transcribe.options import TranscribeOptions, Transcript  # noqa: E402
from podinsight_dagster.transcribe.text import normalize_text, wer  # noqa: E402

TEXTS = harness.CONTENT / "texts"
STAT_KEYS = [f.name for f in fields(PackStats)]


def reference_words(path: Path) -> list[str]:
    return normalize_text(path.read_text()).split()


def best_span(ref: list[str], hyp: list[str]) -> tuple[int, int]:
    """The stretch ref[a:b] the hypothesis aligns to with the fewest edits (free start and end in ref)."""
    if not hyp:
        return 0, 0
    n, m = len(ref), len(hyp)
    # cost[j]: edits aligning hyp[:i] ending at ref[:j]; start[j]: where in ref that alignment began
    prev = [0] * (n + 1)
    prev_start = list(range(n + 1))
    for i in range(1, m + 1):
        cur = [i] + [0] * n
        cur_start = [0] + [0] * n
        for j in range(1, n + 1):
            sub = prev[j - 1] + (ref[j - 1] != hyp[i - 1])
            dele = cur[j - 1] + 1          # a ref word skipped
            ins = prev[j] + 1              # a hyp word extra
            best = min(sub, dele, ins)
            cur[j] = best
            cur_start[j] = prev_start[j - 1] if best == sub else (cur_start[j - 1] if best == dele else prev_start[j])
        prev, prev_start = cur, cur_start
    b = min(range(n + 1), key=lambda j: prev[j])
    return prev_start[b], b


def score(results: dict, sources: list[Path], texts: dict) -> dict:
    """Mean WER per setting against one reference stretch per clip, and the stray-word count."""
    summary = {}
    spans = []
    for i, src in enumerate(sources):
        found = [best_span(texts[src], normalize_text(r["texts"][i]).split()) for r in results.values()]
        found = [f for f in found if f[1] > f[0]] or [(0, 0)]
        spans.append((min(a for a, _ in found), max(b for _, b in found)))
    for gap, r in results.items():
        wers, strays, empty = [], 0, 0
        for i, src in enumerate(sources):
            a, b = spans[i]
            wers.append(wer(" ".join(texts[src][a:b]), r["texts"][i]))
            own = set(texts[src])
            others = set().union(*(set(texts[s]) for s in set(sources) if s != src))
            strays += sum(1 for w in normalize_text(r["texts"][i]).split() if w in others and w not in own)
            empty += not r["texts"][i].strip()
        summary[gap] = {"wall_s": r["wall_s"], "cpu_s": r.get("cpu_s"), **{k: r[k] for k in STAT_KEYS if k in r}, "mean_wer": round(statistics.mean(wers), 4),
                        "median_wer": round(statistics.median(wers), 4), "max_wer": round(max(wers), 4),
                        "stray_words": strays, "empty": empty, "words": sum(len(t.split()) for t in r["texts"])}
        print(f"gap {gap}: {json.dumps(summary[gap])}", flush=True)
    return summary


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny.en")
    ap.add_argument("--count", type=int, default=80)
    ap.add_argument("--gaps", type=float, nargs="+", default=[0.0, 1.0])
    ap.add_argument("--rounds", type=int, default=1, help="repeat the settings (times; the last round is scored)")
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "podinsight" / "models"))
    ap.add_argument("--out", type=Path, default=harness.OUT / "pack_bench.json")
    args = ap.parse_args()
    clips = harness.build_short(harness.OUT / "ptb-full" / "short", args.count, 11, 5.0, 30.0, prefix="clip", digits=3) \
        if args.count == 80 else harness.build_short(harness.OUT / f"pack-{args.count}", args.count, 11, 5.0, 30.0,
                                                prefix="clip", digits=3)
    sources = [harness.DEMO[i % len(harness.DEMO)] for i in range(len(clips))]
    texts = {s: reference_words(TEXTS / s.parent.name / (s.stem + ".txt")) for s in set(sources)}
    base = TranscribeOptions(model=args.model, model_cache=args.cache)
    results: dict[float, dict] = {}
    engine = Engine(base)
    for gap in args.gaps * args.rounds:
        engine.options = replace(base, pack_gap_sec=gap)
        transcribe_many(engine, clips[:2])  # warm-up: first-call allocations outside the timing
        counted = PackStats()
        cpu = time.process_time()
        wall, out = harness.timed(lambda: transcribe_many(engine, clips, stats=counted))
        cpu = time.process_time() - cpu
        stats = asdict(counted)
        assert all(isinstance(t, Transcript) for t in out), [str(t) for t in out if not isinstance(t, Transcript)]
        results[gap] = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "texts": [t.text for t in out], **stats}
        print(f"gap {gap}: {wall:.1f} s, CPU {cpu:.1f} s, {json.dumps(stats)}", flush=True)
    summary = score(results, sources, texts)
    args.out.write_text(json.dumps({"summary": summary, "results": {str(k): v for k, v in results.items()}},
                                   indent=1))


if __name__ == "__main__":
    main()
