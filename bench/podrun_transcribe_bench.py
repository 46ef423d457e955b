"""The command a user runs against the bare loop: whole processes, interpreter start to exit.

Not a test. Run from the repository root (needs ffmpeg):

    .venv/bin/python bench/podrun_transcribe_bench.py              # tiny.en, 3 rounds, 80 short + 6 long
    .venv/bin/python bench/podrun_transcribe_bench.py --quick      # 8 short clips, 2 long, 1 round
    .venv/bin/python bench/podrun_transcribe_bench.py --env PODINSIGHT_DIARIZATION=off --label no-diar
    .venv/bin/python bench/podrun_transcribe_bench.py --before /tmp/old   # + (c0): another tree's podrun

``--before DIR`` adds variant (c0): the same ``podrun transcribe`` with ``PYTHONPATH=DIR``, i.e. the package
``podinsight_dagster`` of another tree (``git archive <commit> podinsight_dagster | tar -x -C DIR``), in the same
rounds, so a change is measured against what it changed under the same load. ``--short-count``,
``--long-files`` and ``--long-join`` size the sets between ``--quick`` and the full ones.

Variants, each a fresh process timed from ``Popen`` to exit (``os.wait4``):

  (b) bare: ``python bench/transcribe_bench.py _child b ...``, i.e. faster-whisper's
      ``BatchedInferencePipeline`` over the files one by one (VAD, word timings, no timestamp
      tokens, batch 8; the same settings as the project), interpreter start, imports and model
      load included;
  (c) ``.venv/bin/podrun transcribe --model tiny.en`` over a data root prepared beforehand by
      ``podrun fetch`` from a loopback CDN (only the transcribe command is timed; each run gets a
      fresh copy of the fetched root). Default settings: the ``transcribe_episodes`` job,
      transcript -> speakers -> segments -> kpis -> transcript_index.

Sets (built with ffmpeg from the bundled demo MP3s, under bench/out/, git-ignored):
  short  80 clips of 5-30 s cut at random offsets (seed 11)
  long   6 episodes of 7 demo episodes each, concatenated (~5.7 min each)

Rounds alternate the order of (b) and (c); medians are reported. For (c) the Dagster event log
gives the per-phase breakdown: process start -> run start (interpreter, imports, CLI, instance,
run creation), each step's start -> end, the gaps between steps, and run end -> process exit.
The 1-minute load average is read before every measured process.

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

import harness  # noqa: E402  (bench/: audio sets, child processes, data roots)
import transcribe_bench as tb  # noqa: E402  (the bare loop's child, the podrun environment and data root)
from harness import OUT, REPO, load1  # noqa: E402

STEPS = ("transcript", "speakers", "chapters", "segments", "kpis", "transcript_index")


def build_short(folder: Path, count: int = 80, seed: int = 11, lo: float = 5.0, hi: float = 30.0) -> list[Path]:
    """The issue's short set: 80 clips of 5-30 s (transcribe_bench's builder, other lengths and seed)."""
    return harness.build_short(folder, count, seed, lo, hi, prefix="clip", digits=3)


def run_bare(model: str, cache: Path, paths: list[Path]) -> dict:
    load = load1()
    out, wall, rss = harness.run_child([sys.executable, str(REPO / "bench" / "transcribe_bench.py"), "_child", "b",
                                        model, str(cache), *map(str, paths)])
    doc = json.loads(out.strip().splitlines()[-1])
    return {"process_s": wall, "work_s": doc["work_s"], "load_s": doc["load_s"], "audio_sec": doc["audio_sec"],
            "words": doc["words"], "rss_mib": rss / 1024, "load1": load, "others": harness.LAST_OTHERS[-1],
            "cpu_s": harness.LAST_CPU[-1]}


def phases(home: Path, t0: float, t1: float) -> dict:
    """Per-phase seconds of the transcribe run(s) from the Dagster event log (wall-clock epoch times)."""
    from dagster import DagsterEventType, DagsterInstance, RunsFilter

    ends = {DagsterEventType.RUN_SUCCESS, DagsterEventType.RUN_FAILURE}
    with DagsterInstance.from_config(str(home / "dagster")) as instance:
        recs = instance.get_run_records(filters=RunsFilter(job_name="transcribe_episodes"))
        out: dict[str, float] = {}
        created, finished = [], []
        for rec in recs:
            rid = rec.dagster_run.run_id
            created.append(rec.create_timestamp.timestamp())
            finished += [ev.timestamp for ev in instance.all_logs(rid, of_type=ends)]
            for st in instance.get_run_step_stats(rid):
                if st.start_time and st.end_time:
                    out[st.step_key] = out.get(st.step_key, 0.0) + st.end_time - st.start_time
        step_sum = sum(out.values())
        out["process start -> run created"] = min(created) - t0
        out["run: outside steps"] = (max(finished) - min(created)) - step_sum
        out["run end -> process exit"] = t1 - max(finished)
        out["runs"] = len(recs)
    return out


def run_podrun(slug: str, template: Path, model: str, cache: Path, work: Path, extra_env: dict) -> dict:
    home = work / f"run-{slug}"
    shutil.rmtree(home, ignore_errors=True)
    shutil.copytree(template, home)
    env = {**tb.podrun_env(home, model, cache), **extra_env}
    load = load1()
    t0 = time.time()
    _, wall, rss = harness.run_child([harness.podrun_bin(), "transcribe", "--model", model], env=env)
    t1 = t0 + wall
    kpis = [json.loads(p.read_text()) for p in (home / "pod-insights-stage").glob("*/*/kpis/kpis.json")]
    result = {"process_s": wall, "rss_mib": rss / 1024, "load1": load, "others": harness.LAST_OTHERS[-1],
              "cpu_s": harness.LAST_CPU[-1],
              "audio_sec": sum(k["duration_sec"] for k in kpis), "episodes": len(kpis),
              "words": sum(k["words"] for k in kpis), "phases": phases(home, t0, t1)}
    shutil.rmtree(home, ignore_errors=True)
    return result


def machine() -> str:
    return f"{harness.lscpu(head=10)}\n{harness.versions('faster_whisper', 'ctranslate2', 'dagster')}"


def report(runs: dict, sets: dict, label: str, extra_env: dict, total_s: float) -> str:
    med = statistics.median
    lines = [
        f"Measured by `bench/podrun_transcribe_bench.py` on {time.strftime('%Y-%m-%d %H:%M')} "
        f"({label}; whole run {total_s / 60:.1f} min{'; env ' + ' '.join(f'{k}={v}' for k, v in extra_env.items()) if extra_env else ''}). "
        "Each time is a whole process, `Popen` to exit; the 1-minute load average read just before it is in brackets.",
        "", "```", machine(), "```", "",
        "Sets: " + "; ".join(f"**{n}** {len(p)} files, {sum(harness.duration(x) for x in p) / 60:.1f} min of audio"
                             for n, p in sets.items()) + ".",
        "",
        "| set | (b) bare loop, s per round (load) | (c) `podrun transcribe`, s per round (load) | "
        "(b) / (c), median | peak RSS (b) / (c) |",
        "|---|---|---|---|---|",
    ]
    for name in sets:
        b, c = runs[name]["b"], runs[name]["c"]
        fb = ", ".join(f"{r['process_s']:.1f} ({r['load1']:.2f})" for r in b)
        fc = ", ".join(f"{r['process_s']:.1f} ({r['load1']:.2f})" for r in c)
        ratio = med(r["process_s"] for r in b) / med(r["process_s"] for r in c)
        lines.append(f"| {name} | {fb} | {fc} | **{ratio:.2f}x** | "
                     f"{max(r['rss_mib'] for r in b):.0f} / {max(r['rss_mib'] for r in c):.0f} MiB |")
    if any(runs[n].get("c0") for n in sets):
        lines += ["", "(c0) the other tree's `podrun transcribe` (`--before`), same rounds:", "",
                  "| set | (c0) s per round (load) | (b) / (c0), median | (c0) / (c), median | peak RSS (c0) |",
                  "|---|---|---|---|---|"]
        for name in sets:
            b, c, c0 = runs[name]["b"], runs[name]["c"], runs[name]["c0"]
            f0 = ", ".join(f"{r['process_s']:.1f} ({r['load1']:.2f})" for r in c0)
            mb, mc, m0 = (med(r["process_s"] for r in x) for x in (b, c, c0))
            lines.append(f"| {name} | {f0} | **{mb / m0:.2f}x** | {m0 / mc:.2f}x | "
                         f"{max(r['rss_mib'] for r in c0):.0f} MiB |")
    variants_all = [v for v in ("b", "c0", "c") if any(runs[n].get(v) for n in sets)]
    lines += ["", "CPU seconds of each process (user + system, `wait4`; its work, less bent by the machine's other "
              "load than its wall time), median of the rounds (per round in brackets):", "",
              "| set | " + " | ".join(f"({v})" for v in variants_all) + " | (b) / (c), CPU |",
              "|---|" + "---|" * (len(variants_all) + 1)]
    for name in sets:
        cells = [f"{med(r['cpu_s'] for r in runs[name][v]):.1f} ("
                 + ", ".join(f"{r['cpu_s']:.1f}" for r in runs[name][v]) + ")" for v in variants_all]
        ratio = med(r["cpu_s"] for r in runs[name]["b"]) / med(r["cpu_s"] for r in runs[name]["c"])
        lines.append(f"| {name} | " + " | ".join(cells) + f" | **{ratio:.2f}x** |")
    lines += ["", "Where a `podrun transcribe` process spends its time (median of the rounds, seconds; "
              "from the Dagster event log):", "",
              "| phase | " + " | ".join(sets) + " |", "|---|" + "---|" * len(sets)]
    keys = ["process start -> run created", *STEPS, "run: outside steps", "run end -> process exit"]
    variants = [v for v in ("c0", "c") if any(runs[n].get(v) for n in sets)]
    if variants != ["c"]:
        lines[-2:] = ["| phase | " + " | ".join(f"{n} {v}" for n in sets for v in variants) + " |",
                      "|---|" + "---|" * (len(sets) * len(variants))]
    for k in keys:
        row = []
        for name in sets:
            for v in variants:
                vals = [r["phases"].get(k, 0.0) for r in runs[name][v]]
                row.append(f"{med(vals):.2f}")
        lines.append(f"| {k} | " + " | ".join(row) + " |")
    lines.append("| **whole process** | " + " | ".join(
        f"**{med(r['process_s'] for r in runs[n][v]):.2f}**" for n in sets for v in variants) + " |")
    lines.append("| bare loop: whole process (model load) | " + " | ".join(
        f"{med(r['process_s'] for r in runs[n]['b']):.2f} ({med(r['load_s'] for r in runs[n]['b']):.2f})"
        for n in sets) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny.en")
    ap.add_argument("--sets", nargs="+", default=["short", "long"])
    ap.add_argument("--variants", nargs="+", default=["b", "c"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--env", nargs="*", default=[], help="KEY=VALUE settings for (c) only")
    ap.add_argument("--label", default="default settings")
    ap.add_argument("--max-wait", type=float, default=60.0)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--before", type=Path, default=None, help="adds (c0): podrun with PYTHONPATH=this folder")
    ap.add_argument("--short-count", type=int, default=None)
    ap.add_argument("--long-files", type=int, default=None)
    ap.add_argument("--long-join", type=int, default=None)
    ap.add_argument("--cache", type=Path, default=Path(os.environ.get(
        "PODINSIGHT_MODEL_CACHE", Path.home() / ".cache" / "podinsight" / "models")))
    args = ap.parse_args()
    extra_env = dict(kv.split("=", 1) for kv in args.env)
    started = time.perf_counter()
    tag = "quick" if args.quick else "full"
    count = args.short_count or (8 if args.quick else 80)
    files, join = (args.long_files or (2 if args.quick else 6)), (args.long_join or (2 if args.quick else 7))
    if args.short_count or args.long_files or args.long_join:
        tag = f"s{count}-l{files}x{join}"
    if args.before:
        args.variants = [*args.variants, "c0"] if "c0" not in args.variants else args.variants
    sets = {}
    if "short" in args.sets:
        sets["short"] = build_short(OUT / f"ptb-{tag}" / "short", count)
    if "long" in args.sets:
        sets["long"] = harness.build_long(OUT / f"ptb-{tag}" / "long", files, join)
    work = Path(tempfile.mkdtemp(prefix="ptb-", dir=OUT))
    roots = {n: tb.prepare_root(f"ptb-{n}", p, OUT / f"ptb-roots-{tag}", args.cache) for n, p in sets.items()}
    runs: dict = {n: {v: [] for v in args.variants} for n in sets}
    before_env = {"PYTHONPATH": str(args.before.resolve())} if args.before else {}
    for rnd in range(args.rounds):
        for name, paths in sets.items():
            order = args.variants if rnd % 2 == 0 else list(reversed(args.variants))
            for v in order:
                harness.wait_quiet(threshold=0.5, max_wait=args.max_wait)
                r = (run_bare(args.model, args.cache, paths) if v == "b"
                     else run_podrun(f"ptb-{name}", roots[name], args.model, args.cache, work,
                                     {**extra_env, **(before_env if v == "c0" else {})}))
                runs[name][v].append(r)
                extra = (" " + json.dumps({k: round(x, 2) for k, x in r["phases"].items()})) if v != "b" else ""
                print(f"round {rnd + 1} {name} ({v}): process {r['process_s']:.1f} s, CPU {r['cpu_s']:.1f} s, "
                      f"audio {r['audio_sec']:.0f} s, "
                      f"words {r['words']}, RSS {r['rss_mib']:.0f} MiB, load1 {r['load1']:.2f}, "
                      f"others' CPU {r['others']:.0%}{extra}", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    (OUT / f"podrun_transcribe_bench-{tag}.json").write_text(json.dumps(runs, indent=1, default=str))
    if {"b", "c"} <= set(args.variants):
        text = report(runs, sets, args.label, extra_env, time.perf_counter() - started)
        out = args.out or OUT / f"podrun_transcribe_bench-{tag}.md"
        out.write_text(text + "\n")
        print("\n" + text)


if __name__ == "__main__":
    main()
