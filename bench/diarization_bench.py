"""Diarization benchmark: error, speaker count and cost against transcription, on generated multi-speaker episodes.

Not a test. Run from the repository root (needs espeak-ng, festival voices and ffmpeg; ``make voices``):

    PYTHONPATH=$PWD .venv/bin/python bench/diarization_bench.py [--model base] [--seconds 120]

For each episode of the set (tests/support/voices.py: 2, 3 and 4 speakers, espeak-ng and festival
voices, turns of 2-20 s) it transcribes the MP3 with the pipeline's transcriber, diarizes the
ASR segments (the speakers step's own path: decode, embed, cluster) and scores the labels
against the true speaker of every sentence (diarization error after the best label matching).
The same segments are also embedded with the package's own window sampling (every 0.4 s, all
windows; the pipeline's before issue 10), to compare error and encoder time.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from podinsight_dagster.speakers.diarize import diarize
from podinsight_dagster.speakers.encoder import load_encoder
from podinsight_dagster.speakers.metrics import diarization_error
from podinsight_dagster.transcribe.audio import decode
from podinsight_dagster.transcribe.options import TranscribeOptions
from podinsight_dagster.transcribe.transcriber import InProcessTranscriber
from tests.support.voices import ESPEAK_VOICES as E, FESTIVAL_VOICES as F, make_episode

SETS = {
    "2-speaker": [[E[0], E[1]], [E[2], F[0]], [F[0], F[2]], [F[1], E[3]], [E[1], F[1]], [F[0], F[1]]],
    "3-speaker": [[E[0], F[1], F[0]], [E[2], E[3], F[2]]],
    "4-speaker": [[E[2], E[3], F[1], F[2]], [E[0], E[1], F[0], F[1]]],
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny.en")
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--out", default="bench/out/diarization")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = out / "voices"
    transcriber = InProcessTranscriber(TranscribeOptions(model=args.model))
    encoder = load_encoder()
    rows = []
    for name, episodes in SETS.items():
        for i, voices in enumerate(episodes):
            ep = make_episode(voices, args.seconds, cache, seed=100 + i)
            mp3 = ep.write_mp3(out / f"{name}-{i}.mp3")
            (_, t), = list(transcriber.transcribe([mp3]))
            ref = [(s, e, k) for s, e, k, _ in ep.sentences]
            started = time.perf_counter()
            audio = decode(mp3)
            est = diarize(t, audio, encoder=encoder)
            est_sec = time.perf_counter() - started
            given = diarize(t, audio, num_speakers=len(voices), encoder=encoder)
            hyp = lambda d: [(s.start, s.end, lab) for s, lab in zip(t.segments, d.labels)]  # noqa: E731
            # The package's own sampling (windows every 0.4 s, all of them), as the pipeline had it before.
            started = time.perf_counter()
            dense = encoder.embed_spans(audio, [(s.start, s.end) for s in t.segments],
                                        stride=encoder.params.stride, max_windows=None)
            dense_sec = time.perf_counter() - started
            d_est = diarize(t, None, emb=dense)
            d_given = diarize(t, None, num_speakers=len(voices), emb=dense)
            row = {"set": name, "voices": [v[1] for v in voices], "audio_sec": round(ep.duration, 1),
                   "segments": len(t.segments), "speakers_estimated": est.num_speakers,
                   "error_estimated": round(diarization_error(ref, hyp(est)), 4),
                   "error_given": round(diarization_error(ref, hyp(given)), 4),
                   "transcribe_sec": round(t.wall_sec, 2), "diarize_sec": round(est_sec, 2),
                   "dense_speakers_estimated": d_est.num_speakers,
                   "dense_error_estimated": round(diarization_error(ref, hyp(d_est)), 4),
                   "dense_error_given": round(diarization_error(ref, hyp(d_given)), 4),
                   "dense_embed_sec": round(dense_sec, 2)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    for name in SETS:
        part = [r for r in rows if r["set"] == name]
        audio_min = sum(r["audio_sec"] for r in part) / 60
        print(f"{name} (package sampling): error estimated "
              f"{sum(r['dense_error_estimated'] for r in part) / len(part):.3f} "
              f"given {sum(r['dense_error_given'] for r in part) / len(part):.3f}, count right "
              f"{sum(r['dense_speakers_estimated'] == len(r['voices']) for r in part)}/{len(part)}, "
              f"embed {sum(r['dense_embed_sec'] for r in part) / audio_min:.2f} s/audio min")
        print(f"{name}: error estimated {sum(r['error_estimated'] for r in part) / len(part):.3f} "
              f"given {sum(r['error_given'] for r in part) / len(part):.3f}, "
              f"count right {sum(r['speakers_estimated'] == len(r['voices']) for r in part)}/{len(part)}, "
              f"diarize {sum(r['diarize_sec'] for r in part) / audio_min:.2f} s/audio min, "
              f"transcribe {sum(r['transcribe_sec'] for r in part) / audio_min:.2f} s/audio min")


if __name__ == "__main__":
    main()
