"""resemblyzer's side of the diarization comparison: one voice embedding per span, in its own virtualenv.

Run only by bench/diarization_bench.py, with the Python of a separate virtualenv that has resemblyzer
0.1.4 and torch (never the project's .venv: the project stays torch-free). Imports nothing of the
project. Reads a job file (JSON: a list of {"audio": path of a float32 16 kHz mono .npy, "spans":
[[start_sec, end_sec], ...], "out": path of the .npy to write}) and writes, per job, the (spans, 256)
L2-normalised embeddings; prints one JSON line: model load seconds and embedding seconds per job.

Each span's audio goes through resemblyzer's own ``preprocess_wav`` (volume normalisation, long
silences trimmed with webrtcvad) and ``VoiceEncoder.embed_utterance`` (1.6 s partial windows at
50 % overlap, averaged), as its README does for an utterance.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np


def main() -> None:
    jobs = json.loads(open(sys.argv[1]).read())
    started = time.perf_counter()
    import torch
    from resemblyzer import VoiceEncoder, preprocess_wav

    encoder = VoiceEncoder("cpu", verbose=False)
    # One short utterance first: librosa's numba functions compile on first use (part of loading).
    encoder.embed_utterance(preprocess_wav(np.random.default_rng(0).normal(0, 0.1, 32000).astype(np.float32),
                                           source_sr=16000))
    load_sec = time.perf_counter() - started
    # torch's default threads (one per core), as onnxruntime's default for the project's encoder.
    report = {"load_sec": round(load_sec, 3), "torch": torch.__version__, "threads": torch.get_num_threads(),
              "jobs": []}
    for job in jobs:
        audio = np.load(job["audio"])
        t0 = time.perf_counter()
        out = np.zeros((len(job["spans"]), 256), dtype=np.float32)
        for i, (start, end) in enumerate(job["spans"]):
            wav = audio[int(start * 16000):int(end * 16000)]
            if wav.size:
                trimmed = preprocess_wav(wav, source_sr=16000)
                wav = trimmed if trimmed.size >= 1600 else wav  # all trimmed away: keep the raw span
            if wav.size:
                out[i] = encoder.embed_utterance(wav)
        np.save(job["out"], out)
        report["jobs"].append({"out": job["out"], "embed_sec": round(time.perf_counter() - t0, 3)})
    print(json.dumps(report))


if __name__ == "__main__":
    main()
