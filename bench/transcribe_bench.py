"""Transcription benchmark: audio seconds per wall second and peak RSS, three ways.

Not a test. Run from the repository root (needs ffmpeg to build the audio sets):

    .venv/bin/python bench/transcribe_bench.py                    # tiny.en, 2 rounds, ~15 min on 2 cores
    .venv/bin/python bench/transcribe_bench.py --models tiny.en base --rounds 1
    .venv/bin/python bench/transcribe_bench.py --quick            # small sets, to check the script works

Two audio sets, built from the bundled demo MP3s (espeak-ng speech, 16 kHz mono 32 kbit/s)
with ffmpeg under bench/out/ (git-ignored):

  long   4 episodes of ~5.7 min (7 demo episodes each, concatenated): 22.6 min of audio
  short  40 clips of 10-40 s cut from the demo episodes at random offsets (seed 7): ~17 min

Variants, each run in a fresh Python process (its peak RSS is the child's ru_maxrss, read
with os.wait4), all with the same model, compute type (int8 on CPU, float16 on CUDA), beam
size 5 and batch size 8:

  (a) the run-book's way: ``WhisperModel.transcribe(path, beam_size=5)`` one episode at a
      time (faster-whisper's defaults: no VAD, no word timings, timestamped decoding);
  (b) bare ``BatchedInferencePipeline.transcribe`` per episode with the project's settings
      (VAD, word timings, no timestamp tokens, batch 8), decoding each file itself;
  (c) the project's pipeline through Dagster: ``podrun transcribe`` (the transcript, segments
      and kpis assets, in-process, on the local instance) over a data root whose raw bucket
      was filled beforehand by ``podrun fetch`` from a PodcastCDN serving the set.

Figures: "work" time is from the model load to the last result for (a) and (b) (in the
child, model load included, interpreter start and imports excluded) and the sum of the
transcript, segments and kpis step durations of the Dagster run for (c) (model load, writing
every stage file, subtitles and KPIs included; the CLI's imports, instance and run setup
excluded). "process" time is the whole child process, interpreter start to exit. Rounds
alternate the variants; the median of the rounds is reported.

Prints a Markdown section (also written to --out) for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import harness  # noqa: E402  (bench/: paths, audio sets, child processes, data roots)
from harness import OUT, build_long, build_short, run_child, wait_quiet  # noqa: E402

BATCH = 8
BEAM = 5


# ---------------------------------------------------------------------------
# Children: (a) and (b)
# ---------------------------------------------------------------------------
def child(variant: str, model: str, cache: str, paths: list[str]) -> None:
    """Runs in a fresh interpreter: transcribe ``paths`` one way, print a JSON line."""
    from faster_whisper import BatchedInferencePipeline, WhisperModel
    from faster_whisper.audio import decode_audio

    from podinsight_dagster.transcribe.models import resolve_model
    from podinsight_dagster.transcribe.engine import pick_device

    device, compute_type = pick_device("auto", "auto")
    started = time.perf_counter()
    wm = WhisperModel(resolve_model(model, Path(cache)), device=device, compute_type=compute_type,
                      cpu_threads=os.cpu_count() or 1, local_files_only=True)
    loaded = time.perf_counter()
    audio_sec, words = 0.0, 0
    if variant == "a":
        for p in paths:
            segments, info = wm.transcribe(p, beam_size=BEAM)
            words += sum(len(s.text.split()) for s in segments)
            audio_sec += info.duration
    else:
        pipe = BatchedInferencePipeline(wm)
        for p in paths:
            audio = decode_audio(p, sampling_rate=16000)
            segments, info = pipe.transcribe(audio, beam_size=BEAM, batch_size=BATCH, vad_filter=True,
                                             word_timestamps=True, without_timestamps=True)
            words += sum(len(s.text.split()) for s in segments)
            audio_sec += info.duration
    done = time.perf_counter()
    print(json.dumps({"audio_sec": audio_sec, "work_s": done - started, "load_s": loaded - started,
                      "words": words, "device": device, "compute_type": compute_type}))


def measure_ab(variant: str, model: str, cache: Path, paths: list[Path]) -> dict:
    out, wall, rss = run_child([sys.executable, __file__, "_child", variant, model, str(cache), *map(str, paths)])
    doc = json.loads(out.strip().splitlines()[-1])
    return {**doc, "process_s": wall, "rss_kib": rss, "others": harness.LAST_OTHERS[-1]}


# ---------------------------------------------------------------------------
# (c): podrun fetch once per set, then podrun transcribe on a copy of that data root
# ---------------------------------------------------------------------------
def podrun_env(home: Path, model: str, cache: Path) -> dict:
    env = harness.podrun_env(home, {"DAGSTER_HOME": str(home / "dagster")}, feeds_dir=home / "feeds", model=model,
                             model_cache=cache, allow_private_networks="127.0.0.1/32", batch_size=BATCH)
    env.pop("PODINSIGHT_ALLOW_MODEL_DOWNLOAD", None)
    return env


def prepare_root(slug: str, paths: list[Path], root: Path, cache: Path) -> Path:
    """A data root whose raw bucket holds the set, downloaded by `podrun fetch` from a loopback CDN."""
    return harness.fetched_root(slug, paths, root, lambda home: podrun_env(home, "tiny.en", cache))


def step_seconds(home: Path) -> tuple[float, dict]:
    """Sum of the transcript, segments and kpis step durations of the last transcribe run(s)."""
    from dagster import DagsterInstance, RunsFilter

    with DagsterInstance.from_config(str(home / "dagster")) as instance:
        runs = instance.get_run_records(filters=RunsFilter(job_name="transcribe_episodes"))
        steps: dict[str, float] = {}
        for rec in runs:
            for st in instance.get_run_step_stats(rec.dagster_run.run_id):
                if st.start_time and st.end_time:
                    steps[st.step_key] = steps.get(st.step_key, 0.0) + st.end_time - st.start_time
    return sum(steps.values()), steps


def measure_c(slug: str, template: Path, model: str, cache: Path, work: Path) -> dict:
    home = work / f"run-{slug}"
    shutil.rmtree(home, ignore_errors=True)
    shutil.copytree(template, home)
    out, wall, rss = run_child([harness.podrun_bin(), "transcribe", "--model", model], env=podrun_env(home, model, cache))
    work_s, steps = step_seconds(home)
    kpis = [json.loads(p.read_text()) for p in (home / "pod-insights-stage").glob("*/*/kpis/kpis.json")]
    audio = sum(k["duration_sec"] for k in kpis)
    result = {"audio_sec": audio, "work_s": work_s, "steps": steps, "process_s": wall, "rss_kib": rss,
              "others": harness.LAST_OTHERS[-1],
              "episodes": len(kpis), "words": sum(k["words"] for k in kpis),
              "device": kpis[0]["device"] if kpis else None, "compute_type": kpis[0]["compute_type"] if kpis else None}
    shutil.rmtree(home, ignore_errors=True)
    return result


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------
def machine() -> str:
    lscpu = harness.lscpu(pattern=r"Model name|^CPU\(s\)|Thread|MHz")
    mem = " ".join(harness.free_g()[1].split()[:2])
    return f"{lscpu}\nmemory: {mem} GiB; {harness.versions('faster_whisper', 'ctranslate2')}"


def summarize(runs: list[dict]) -> dict:
    med = lambda key: statistics.median(r[key] for r in runs)  # noqa: E731
    return {"audio_sec": runs[0]["audio_sec"], "work_s": med("work_s"), "process_s": med("process_s"),
            "best_s": min(r["work_s"] for r in runs), "others": [r.get("others", 0.0) for r in runs],
            "rss_mib": max(r["rss_kib"] for r in runs) / 1024, "rounds": [r["work_s"] for r in runs],
            "words": runs[0]["words"], "device": runs[0].get("device"), "compute_type": runs[0].get("compute_type")}


def report(results: dict, sets: dict, total_s: float) -> str:
    lines = [
        f"Measured by `bench/transcribe_bench.py` on {time.strftime('%Y-%m-%d')} (whole run {total_s / 60:.1f} min). "
        "The machine was shared with other jobs: each run waits for the CPU to be quiet first, and the share "
        "of the machine's CPU that other processes took during each run is given in brackets after its time; "
        "rounds alternate the order of the variants.",
        "",
        "```", machine(), "```", "",
        "Sets: " + "; ".join(f"**{name}** {len(p)} episodes, {sum(harness.duration(x) for x in p) / 60:.1f} min of audio"
                             for name, p in sets.items()) + ". Speed = audio seconds per wall second of work "
        "(model load included; see the script's docstring); process = the whole child process, imports "
        "included. Same model, compute type, beam size 5 and batch size 8 for all.",
        "",
        "| model | set | variant | speed (work, median) | work s per round (others' CPU) | "
        "speed (process) | peak RSS |",
        "|---|---|---|---|---|---|---|",
    ]
    names = {"a": "(a) `WhisperModel.transcribe`, one episode at a time",
             "b": "(b) bare `BatchedInferencePipeline`, per episode",
             "c": "(c) project: `podrun transcribe` (Dagster assets)"}
    ratios = []
    for (model, set_name), by_variant in results.items():
        for v in ("a", "b", "c"):
            if v not in by_variant:
                continue
            s = by_variant[v]
            rounds = ", ".join(f"{x:.1f} ({o:.0%})" for x, o in zip(s["rounds"], s["others"]))
            lines.append(f"| {model} ({s['compute_type']}) | {set_name} | {names[v]} | "
                         f"**{s['audio_sec'] / s['work_s']:.1f}x** | {rounds} | "
                         f"{s['audio_sec'] / s['process_s']:.1f}x | {s['rss_mib']:.0f} MiB |")
        if {"a", "b", "c"} <= set(by_variant):
            a, b, c = (by_variant[v]["work_s"] for v in "abc")
            ba, bb, bc = (by_variant[v]["best_s"] for v in "abc")
            pa, pb, pc = (by_variant[v]["process_s"] for v in "abc")
            ratios.append(f"{model}, {set_name}: (c) vs (b) **{b / c:.2f}x** (best rounds {bb / bc:.2f}x, "
                          f"whole processes {pb / pc:.2f}x); (c) vs (a) **{a / c:.2f}x** (best rounds {ba / bc:.2f}x, "
                          f"whole processes {pa / pc:.2f}x)")
    lines += ["", "Speed of (c) relative to the others (median work time of the other / of (c); "
              "above 1 = the project is faster):", ""] + [f"- {r}" for r in ratios]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["tiny.en"])
    ap.add_argument("--sets", nargs="+", default=["long", "short"])
    ap.add_argument("--variants", nargs="+", default=["a", "b", "c"])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="2 long episodes of 2 demo episodes, 8 short clips")
    ap.add_argument("--out", type=Path, default=OUT / "transcribe_bench.md")
    ap.add_argument("--max-wait", type=float, default=240.0,
                    help="seconds to wait for a quiet machine (others' CPU under 15%%) before each run")
    ap.add_argument("--cache", type=Path, default=Path(os.environ.get(
        "PODINSIGHT_MODEL_CACHE", Path.home() / ".cache" / "podinsight" / "models")))
    args = ap.parse_args()
    started = time.perf_counter()
    OUT.mkdir(parents=True, exist_ok=True)
    tag = "quick" if args.quick else "full"
    sets = {}
    if "long" in args.sets:
        sets["long"] = build_long(OUT / f"audio-{tag}" / "long", *((2, 2) if args.quick else (4, 7)))
    if "short" in args.sets:
        sets["short"] = build_short(OUT / f"audio-{tag}" / "short", 8 if args.quick else 40)
    from podinsight_dagster.transcribe.models import resolve_model
    for model in args.models:
        resolve_model(model, args.cache)  # join base once, outside the timings
    work = Path(tempfile.mkdtemp(prefix="transcribe-bench-", dir=OUT))
    roots = {name: prepare_root(f"bench-{name}", paths, OUT / f"roots-{tag}", args.cache)
             for name, paths in sets.items()} if "c" in args.variants else {}
    runs: dict = {}
    for rnd in range(args.rounds):
        for model in args.models:
            for name, paths in sets.items():
                order = args.variants if rnd % 2 == 0 else list(reversed(args.variants))
                for v in order:
                    quiet = wait_quiet(max_wait=args.max_wait)
                    if v == "c":
                        r = measure_c(f"bench-{name}", roots[name], model, args.cache, work)
                    else:
                        r = measure_ab(v, model, args.cache, paths)
                    runs.setdefault((model, name), {}).setdefault(v, []).append(r)
                    print(f"round {rnd + 1} {model} {name} ({v}): {r['audio_sec']:.0f} s audio in {r['work_s']:.1f} s "
                          f"= {r['audio_sec'] / r['work_s']:.1f}x, process {r['process_s']:.1f} s, "
                          f"RSS {r['rss_kib'] / 1024:.0f} MiB, words {r['words']}, machine busy before "
                          f"{quiet:.0%}, others' CPU during {r['others']:.0%}", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    results = {key: {v: summarize(rs) for v, rs in by_v.items()} for key, by_v in runs.items()}
    (OUT / "transcribe_bench.json").write_text(json.dumps(
        {f"{m}|{s}": by_v for (m, s), by_v in runs.items()}, indent=1, default=str))
    text = report(results, sets, time.perf_counter() - started)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print("\n" + text)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        child(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:])
    else:
        main()
