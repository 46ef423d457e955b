"""Overlapped speech benchmark: how much talked-over time is marked, how much marked time is overlapped, words kept.

Not a test. Run from the repository root (needs espeak-ng, festival voices and ffmpeg; ``make voices``):

    .venv/bin/python bench/overlap_bench.py [--model tiny.en] [--out /tmp/overlap-bench] [--pairs 0,1]

Episodes: pairs of voices of tests/support/voices.py each saying eight lines in turn, twice talking over the
other (2 s and 1.5 s, the voices summed), and the same lines taken in turn without overlap. Each is transcribed
once (the pipeline's transcriber, VAD on), diarized as the speakers step does (count estimated), then marked
(``speakers.steps.mark_overlaps``: the mixture-voice test, then a second hearing of marked regions).

Per episode: overlapped time marked (recall), marked time truly overlapped (precision), seconds marked on
the turn-taking twin, the words the second hearing added and how many of them are words of the lines that
were talked over (a word of the lost line's text, attributed to that line's voice), and the step's seconds.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import numpy as np

import harness  # noqa: F401,E402  (bench/: the repository on sys.path, so tests.support.voices imports)
from podinsight_dagster.speakers.diarize import diarize, embed_segments
from podinsight_dagster.speakers.steps import mark_overlaps
from podinsight_dagster.transcribe.options import TranscribeOptions
from podinsight_dagster.transcribe.transcriber import InProcessTranscriber
from tests.support.voices import ESPEAK_VOICES as E, FESTIVAL_VOICES as F, make_overlap_episode, overlapped_spans, \
    sentences

PAIRS = [[E[2], F[0]], [F[0], F[2]], [F[1], E[3]], [E[1], F[1]], [E[0], E[1]]]


def script(seed: int, overlap: bool):
    pool = sentences()[seed * 10:seed * 10 + 8]
    talk_over = {3: 2.0, 6: 1.5} if overlap else {}
    return [(i % 2, text, talk_over.get(i, 0.0)) for i, text in enumerate(pool)]


def _frames(spans, n):
    m = np.zeros(n, dtype=bool)
    for s, e in spans:
        m[int(s * 100):int(e * 100)] = True
    return m


def _norm(w: str) -> str:
    return re.sub(r"[^a-z0-9]", "", w.lower())


def run(pair, seed, overlap, transcriber, out: Path) -> dict:
    ep = make_overlap_episode(pair, script(seed, overlap), out / "voices")
    wav = ep.write_wav(out / f"ep{seed}{'o' if overlap else 't'}.wav")
    [(_, t)] = list(transcriber.transcribe([wav]))
    doc = t.to_dict()
    started = time.perf_counter()
    emb = embed_segments(t, ep.audio)
    result = diarize(t, None, emb=emb, embed_sec=time.perf_counter() - started)
    labels = list(result.labels)
    names = [f"S{c}" for c in range(result.num_speakers)]
    t0 = time.perf_counter()
    report = mark_overlaps(ep.audio, doc, labels, result.centroids, names, transcriber.options)
    mark_sec = time.perf_counter() - t0
    truth = overlapped_spans(ep)
    n = int(ep.duration * 100) + 1
    tm, mm = _frames(truth, n), _frames([(r["start"], r["end"]) for r in report["regions"]], n)
    # Words of the talked-over lines the second hearing added, given to the right voice: the voice that most
    # of the line's speaker's segments carry.
    lost = [(s, e, k, text) for s, e, k, text in ep.sentences if any(a < e and s < b for a, b in truth)]
    # Each true voice's label: the cluster nearest the mean voice of its lines nobody talks over.
    from podinsight_dagster.speakers.encoder import load_encoder

    voice_of = {}
    for k in range(2):
        clean = [(s, e) for s, e, kk, _ in ep.sentences if kk == k and not any(a < e and s < b for a, b in truth)]
        v = load_encoder().embed_spans(ep.audio, clean).mean(0)
        voice_of[k] = int(np.argmax(result.centroids @ v))
    right = 0
    added = [seg for seg in doc["segments"] if seg.get("recovered")]
    for seg in added:
        for w in seg["words"]:
            for s, e, k, text in lost:
                if s - 1 <= w["start"] <= e + 1 and _norm(w["word"]) in {_norm(x) for x in text.split()} \
                        and names.index(w["speaker"]) == voice_of.get(k):
                    right += 1
                    break
    return {"pair": [v for _, v in pair], "overlap": overlap, "speakers": result.num_speakers,
            "truth_sec": round(tm.sum() / 100, 2), "marked_sec": round(mm.sum() / 100, 2),
            "recall": round(float((tm & mm).sum() / tm.sum()), 3) if tm.sum() else None,
            "precision": round(float((tm & mm).sum() / mm.sum()), 3) if mm.sum() else None,
            "added_words": sum(len(s["words"]) for s in added), "added_right": right,
            "added_text": [(s["text"], s["speaker"], s["start"], s["end"], [w["probability"] for w in s["words"]]) for s in added], "voice_of": voice_of, "lost_lines": [x[3] for x in lost],
            "mark_sec": round(mark_sec, 2), "asr_sec": round(t.wall_sec, 2), "audio_sec": round(ep.duration, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny.en")
    ap.add_argument("--out", default="/tmp/overlap-bench")
    ap.add_argument("--pairs", default="", help="comma-separated indices into PAIRS (default: all)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    transcriber = InProcessTranscriber(TranscribeOptions(model=args.model))
    rows = []
    chosen = {int(x) for x in args.pairs.split(",") if x}
    for seed, pair in enumerate(PAIRS, 1):
        if chosen and seed - 1 not in chosen:
            continue
        for overlap in (True, False):
            rows.append(run(pair, seed, overlap, transcriber, out))
            print(json.dumps(rows[-1]), flush=True)
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    print(f"Machine: {harness.cpu_model()}, load {harness.load_text()}; {harness.versions('faster_whisper')}, "
          f"model {args.model}\n")
    print("| voices | speakers | overlapped s | marked s | recall | precision | turn-taking marked s | words added (right) |")
    print("|---|---|---|---|---|---|---|---|")
    for o, t in zip(rows[::2], rows[1::2]):
        print(f"| {' + '.join(o['pair'])} | {o['speakers']} | {o['truth_sec']} | {o['marked_sec']} | {o['recall']} | "
              f"{o['precision']} | {t['marked_sec']} | {o['added_words']} ({o['added_right']}) |")


if __name__ == "__main__":
    main()
