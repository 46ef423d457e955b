"""The transcript step's work stage by stage, beside the bare faster-whisper loop: GPU (or CPU) speed and where it goes.

Not a test (tests/test_gpu_transcribe_bench.py runs its CPU mode on a tiny input). Run from the
repository root:

    .venv/bin/python bench/gpu_transcribe_bench.py --device cpu --model tiny.en --long-minutes 4 --short-clips 12
    .venv/bin/python bench/gpu_transcribe_bench.py --device cuda                 # base, float16, >= 2 h of long episodes
    .venv/bin/python bench/gpu_transcribe_bench.py --device cuda --cores 4       # again on 4 cores (a g5.xlarge's)

``--cores N`` re-runs the script under ``taskset -c 0-(N-1)``. ``--device cuda`` without a CUDA device
(ctranslate2 sees none) writes a report that says why it skipped and exits 0. bench/gpu_device_run.sh
runs both GPU runs on a machine with a GPU.

Inputs, built once under bench/out/gpu-bench/ from the bundled demo MP3s (16 kHz mono 32 kbit/s) by
copying their MP3 frames (PyAV, no re-encoding, no ffmpeg needed; deterministic):
  long   ``--long-files`` episodes (default 3) of ``--long-minutes`` each (default 48: 2.4 h of speech in all),
         the nine demo episodes repeated in turn, each file starting at another one;
  short  ``--short-clips`` clips (default 72) of 5-30 s cut at seeded offsets (seed 11).

Per set, in one process, the model loaded once (outside the timing) and warmed up on one clip:
  bare     faster-whisper's ``BatchedInferencePipeline.transcribe`` over the files one by one with the project's
           settings (VAD, word timings, no timestamp tokens, the same batch size), each file decoded by
           ``decode_audio``; speakers and chapters are not part of it;
  project  ``iter_transcribe`` over all files (prefetch thread: decode, VAD, features; cross-episode
           batches), then per episode the speakers step's work (voice embeddings of every segment,
           clustering; the audio decoded again when the process no longer holds it) and the chapters
           step's (sentence embeddings, TextTiling).

Stages are timed by wrapping the functions that do them (``whisper_internals``, ``prepare.decode``,
``batching.finish``; for the bare loop, faster-whisper's own). Main-thread stages plus "other" add up
to the wall time (shares sum to 1); decode, VAD and features of the project run in its prefetch
thread, overlapping the model: their seconds are listed with the share of wall time they would take
alone ("background"), and the main thread's "waiting for audio" is what they cost it. GPU use:
``nvidia-smi`` sampled every 200 ms during each run (mean utilisation, peak memory). CPU use: the
process's CPU time over wall time (1.0 = one core busy). Real-time factor: audio seconds per wall second.
Words: the project's text against the bare loop's, word error rate per file (same settings, so ~0).

Writes JSON (--out) and a Markdown section (--markdown) for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import harness  # noqa: E402  (bench/: paths, the demo episodes, timing, the machine's description)
from harness import DEMO, OUT  # noqa: E402

PINNED_ENV = "PODINSIGHT_BENCH_CORES"
MAIN, BACKGROUND = "main", "background"


# ---------------------------------------------------------------------------
# Inputs: MP3 frames of the demo episodes copied into longer files and cut into clips
# ---------------------------------------------------------------------------
def _copy_frames(dest: Path, pieces: list[tuple[Path, float, float | None]]) -> None:
    """Write ``dest`` from (source, start s, end s or None) pieces, MP3 frames copied as they are."""
    import av

    tmp = dest.with_suffix(".part")
    with av.open(str(tmp), "w", format="mp3") as out:
        ost, offset = None, 0
        for src, start, end in pieces:
            with av.open(str(src)) as inp:
                ist = inp.streams.audio[0]
                ost = ost or out.add_stream_from_template(ist)
                lo, hi = int(start / ist.time_base), None if end is None else int(end / ist.time_base)
                first, last = None, 0
                for pkt in inp.demux(ist):
                    if pkt.dts is None or pkt.pts < lo or (hi is not None and pkt.pts >= hi):
                        continue
                    first = pkt.pts if first is None else first
                    pts = pkt.pts - first + offset
                    last = max(last, pkt.pts - first + (pkt.duration or 0))
                    pkt.pts = pkt.dts = pts
                    pkt.stream = ost
                    out.mux(pkt)
                offset += last
    tmp.rename(dest)


def _demo_seconds() -> dict[Path, float]:
    import av

    out = {}
    for p in DEMO:
        with av.open(str(p)) as c:
            out[p] = c.duration / 1_000_000
    return out


def build_long(folder: Path, files: int, minutes: float) -> list[Path]:
    lengths = _demo_seconds()
    paths = []
    for k in range(files):
        dest = folder / f"long-{minutes:g}min-{k + 1}.mp3"
        if not dest.exists():
            pieces, total, i = [], 0.0, k
            while total < minutes * 60:
                src = DEMO[i % len(DEMO)]
                take = min(lengths[src], minutes * 60 - total)
                pieces.append((src, 0.0, None if take >= lengths[src] else take))
                total += take
                i += 1
            _copy_frames(dest, pieces)
        paths.append(dest)
    return paths


def build_short(folder: Path, count: int, seed: int = 11, lo: float = 5.0, hi: float = 30.0) -> list[Path]:
    lengths = _demo_seconds()
    rng = random.Random(seed)
    paths = []
    for i in range(count):
        src = DEMO[i % len(DEMO)]
        length = rng.uniform(lo, min(hi, lengths[src]))
        start = rng.uniform(0, max(0.0, lengths[src] - length))
        dest = folder / f"clip-{seed}-{i + 1:03d}.mp3"
        if not dest.exists():
            _copy_frames(dest, [(src, start, start + length)])
        paths.append(dest)
    return paths


# ---------------------------------------------------------------------------
# Measuring: stage clock, GPU sampler
# ---------------------------------------------------------------------------
class StageClock:
    """Seconds per (stage, thread), from wrapped functions; ``restore`` puts the originals back."""

    def __init__(self):
        self.seconds: dict[tuple[str, str], float] = defaultdict(float)
        self._lock = threading.Lock()
        self._undo: list[tuple[object, str, object]] = []

    def add(self, stage: str, seconds: float) -> None:
        thread = MAIN if threading.current_thread() is threading.main_thread() else BACKGROUND
        with self._lock:
            self.seconds[(stage, thread)] += seconds

    @contextlib.contextmanager
    def timing(self, stage: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - started)

    def wrap(self, owner: object, name: str, stage: str) -> None:
        real = getattr(owner, name)
        clock = self

        def timed(*args, **kwargs):
            with clock.timing(stage):
                return real(*args, **kwargs)

        setattr(owner, name, timed)
        self._undo.append((owner, name, real))

    def restore(self) -> None:
        for owner, name, real in reversed(self._undo):
            setattr(owner, name, real)
        self._undo.clear()

    def stages(self, wall: float) -> list[dict]:
        """Main-thread stages and "other" (their shares add up to 1), then background stages."""
        main = {s: v for (s, t), v in self.seconds.items() if t == MAIN}
        rows = [{"stage": s, "thread": MAIN, "seconds": round(v, 3), "share": round(v / wall, 4)}
                for s, v in main.items()]
        other = max(0.0, wall - sum(main.values()))
        rows.append({"stage": "other", "thread": MAIN, "seconds": round(other, 3), "share": round(other / wall, 4)})
        rows += [{"stage": s, "thread": BACKGROUND, "seconds": round(v, 3), "share": round(v / wall, 4)}
                 for (s, t), v in self.seconds.items() if t == BACKGROUND]
        return rows


class GpuSampler:
    """``nvidia-smi`` every 200 ms in a thread: (time, utilisation %, memory MiB) samples."""

    def __init__(self):
        self.samples: list[tuple[float, float, float]] = []
        self.why_not = None
        exe = shutil.which("nvidia-smi")
        if exe is None:
            self.why_not, self._proc = "no nvidia-smi", None
            return
        self._proc = subprocess.Popen([exe, "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits",
                                       "-lms", "200"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self._proc.stdout:
            with contextlib.suppress(ValueError):
                util, mem = (float(x) for x in line.split(",")[:2])
                self.samples.append((time.perf_counter(), util, mem))

    def window(self, t0: float, t1: float) -> dict:
        got = [(u, m) for t, u, m in self.samples if t0 <= t <= t1]
        if not got:
            return {"gpu_util_mean": None, "gpu_mem_max_mib": None, "gpu_samples": 0, "gpu_note": self.why_not}
        return {"gpu_util_mean": round(sum(u for u, _ in got) / len(got), 1),
                "gpu_mem_max_mib": max(m for _, m in got), "gpu_samples": len(got)}

    def close(self) -> None:
        if self._proc is not None:
            self._proc.terminate()


# ---------------------------------------------------------------------------
# The two variants
# ---------------------------------------------------------------------------
def run_bare(engine, paths: list[Path], batch_size: int, clock: StageClock) -> tuple[float, list[str]]:
    """faster-whisper's BatchedInferencePipeline over the files one by one (the engine's loaded model)."""
    import faster_whisper.transcribe as fwt
    from faster_whisper import BatchedInferencePipeline
    from faster_whisper.audio import decode_audio
    from faster_whisper.feature_extractor import FeatureExtractor

    pipe = BatchedInferencePipeline(engine.model)
    clock.wrap(fwt, "get_speech_timestamps", "VAD")
    clock.wrap(FeatureExtractor, "__call__", "features")
    clock.wrap(BatchedInferencePipeline, "generate_segment_batched", "model (encoder + beam search)")
    clock.wrap(fwt.WhisperModel, "add_word_timestamps", "word timings")
    clock.wrap(fwt.WhisperModel, "detect_language", "language detection")
    texts, audio_sec = [], 0.0
    try:
        for p in paths:
            with clock.timing("decode"):
                audio = decode_audio(str(p), sampling_rate=16000)
            segments, info = pipe.transcribe(audio, beam_size=engine.options.beam_size, batch_size=batch_size,
                                             vad_filter=True, word_timestamps=True, without_timestamps=True,
                                             language="en" if not engine.multilingual else None)
            texts.append(" ".join(s.text.strip() for s in segments))
            audio_sec += info.duration
    finally:
        clock.restore()
    return audio_sec, texts


class _Source:
    """A path whose decoded samples the transcript step keeps for the speakers step (as the asset does)."""

    def __init__(self, path: Path):
        self.path, self.decoded_key = path, f"bench:{path}"

    def __call__(self):
        return contextlib.nullcontext(self.path)

    def __str__(self) -> str:
        return str(self.path)


def run_project(engine, paths: list[Path], clock: StageClock, speakers: bool, chapters: bool):
    """iter_transcribe over all files, then the speakers and chapters steps' work per episode."""
    from podinsight_dagster.chapters.steps import generate_chapters
    from podinsight_dagster.speakers.diarize import diarize, embed_segments
    from podinsight_dagster.speakers.encoder import load_encoder
    from podinsight_dagster.transcribe import batching, prepare
    from podinsight_dagster.transcribe import whisper_internals as wi
    from podinsight_dagster.transcribe.audio import DECODED, decode
    from podinsight_dagster.transcribe.options import Transcript

    class TimedPrefetcher(prepare.Prefetcher):
        def __iter__(self):
            items = super().__iter__()
            while True:
                with clock.timing("waiting for audio"):
                    item = next(items, None)
                if item is None:
                    return
                yield item

    clock.wrap(prepare, "decode", "decode")
    clock.wrap(wi, "speech_clips", "VAD")
    clock.wrap(wi, "speech_chunks", "features")
    clock.wrap(wi, "log_mel", "features")
    clock.wrap(wi, "detect_language", "language detection")
    clock.wrap(wi, "encode", "model: encoder")
    clock.wrap(wi, "stack_encoded", "model: encoder")
    clock.wrap(wi, "generate", "model: beam search")
    clock.wrap(wi, "find_alignment", "word timings")
    clock.wrap(wi, "place_words", "word timings")
    clock.wrap(batching, "finish", "results (sentences, checks)")
    real_prefetcher, batching.Prefetcher = batching.Prefetcher, TimedPrefetcher
    sources = [_Source(p) for p in paths]
    transcripts: list[Transcript | None] = [None] * len(paths)
    errors = []
    try:
        for index, result in batching.iter_transcribe(engine, sources):
            if isinstance(result, Transcript):
                transcripts[index] = result
            else:
                errors.append(str(result))
    finally:
        batching.Prefetcher = real_prefetcher
        clock.restore()
    transcribed = time.perf_counter()
    encoder = None
    for src, t in zip(sources, transcripts):
        if t is None:
            continue
        if speakers and t.segments:
            with clock.timing("speakers"):
                audio = DECODED.take(src.decoded_key)
                if audio is None:  # evicted (the process holds ~70 min): the step decodes it again
                    audio = decode(src.path)
                encoder = encoder or load_encoder()
                diarize(t, None, emb=embed_segments(t, audio, encoder))
        if chapters:
            with clock.timing("chapters"):
                generate_chapters(t)
    for src in sources:  # leave nothing behind for the next run
        DECODED.take(src.decoded_key)
    return transcripts, errors, transcribed


# ---------------------------------------------------------------------------
# One run of the whole benchmark
# ---------------------------------------------------------------------------
def machine(device: str) -> dict:
    import ctranslate2
    import faster_whisper

    gpu = None
    if shutil.which("nvidia-smi"):
        gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True).stdout.strip() or None
    return {"cpu": harness.cpu_model(), "cores_available": len(os.sched_getaffinity(0)),
            "cores_machine": os.cpu_count(), "load_1min": round(harness.load1(), 2), "gpu": gpu, "python": platform.python_version(),
            "faster_whisper": faster_whisper.__version__, "ctranslate2": ctranslate2.__version__,
            "cuda_devices": ctranslate2.get_cuda_device_count(), "device": device}


def cuda_missing() -> str | None:
    """Why the GPU mode cannot run here, or None."""
    try:
        import ctranslate2
    except Exception as exc:  # noqa: BLE001
        return f"ctranslate2 cannot be imported ({exc})"
    try:
        count = ctranslate2.get_cuda_device_count()
    except Exception as exc:  # noqa: BLE001 - no CUDA runtime at all
        return f"ctranslate2 finds no CUDA runtime ({exc})"
    if count < 1:
        smi = "nvidia-smi found" if shutil.which("nvidia-smi") else "no nvidia-smi on PATH"
        return f"ctranslate2 {ctranslate2.__version__} sees no CUDA device ({smi})"
    return None


def measure(args) -> dict:
    from podinsight_dagster.transcribe.batching import transcribe_one
    from podinsight_dagster.transcribe.engine import load_engine
    from podinsight_dagster.transcribe.options import TranscribeOptions
    from podinsight_dagster.transcribe.text import wer

    folder = args.inputs
    folder.mkdir(parents=True, exist_ok=True)
    sets = {}
    if "long" in args.sets:
        sets["long"] = build_long(folder, args.long_files, args.long_minutes)
    if "short" in args.sets:
        sets["short"] = build_short(folder, args.short_clips)
    cores = len(os.sched_getaffinity(0))
    options = TranscribeOptions(model=args.model, model_cache=str(args.cache), device=args.device,
                                compute_type=args.compute_type, batch_size=args.batch_size, cpu_threads=cores)
    load_s, engine = harness.timed(lambda: load_engine(options))
    warm = build_short(folder, 1, seed=99)[0]
    transcribe_one(engine, warm)  # first-call allocations (CUDA kernels, cuBLAS handles) outside the timing
    sampler = GpuSampler()
    runs = []
    try:
        for name, paths in sets.items():
            for variant in ("bare", "project"):
                clock = StageClock()
                cpu0, t0 = time.process_time(), time.perf_counter()
                if variant == "bare":
                    audio_sec, texts = run_bare(engine, paths, options.batch_size, clock)
                    errors, transcribed = [], None
                else:
                    ts, errors, transcribed = run_project(engine, paths, clock, not args.no_speakers,
                                                          not args.no_chapters)
                    audio_sec = sum(t.duration for t in ts if t is not None)
                    texts = [t.text if t is not None else "" for t in ts]
                t1 = time.perf_counter()
                wall, cpu = t1 - t0, time.process_time() - cpu0
                run = {"set": name, "variant": variant, "files": len(paths), "audio_sec": round(audio_sec, 1),
                       "wall_s": round(wall, 3), "realtime_factor": round(audio_sec / wall, 1),
                       "cpu_s": round(cpu, 2), "cpu_use": round(cpu / wall, 2), "errors": errors,
                       "words": sum(len(t.split()) for t in texts), "stages": clock.stages(wall),
                       **sampler.window(t0, t1)}
                if transcribed is not None:
                    run["transcription_wall_s"] = round(transcribed - t0, 3)
                    run["transcription_realtime_factor"] = round(audio_sec / (transcribed - t0), 1)
                run["_texts"] = texts
                runs.append(run)
                print(f"{name} {variant}: {audio_sec:.0f} s of audio in {wall:.1f} s, {audio_sec / wall:.1f}x real time,"
                      f" CPU {cpu / wall:.2f}, GPU {run['gpu_util_mean']}", flush=True)
    finally:
        sampler.close()
    for name in sets:
        bare = next((r for r in runs if r["set"] == name and r["variant"] == "bare"), None)
        project = next((r for r in runs if r["set"] == name and r["variant"] == "project"), None)
        if bare and project:
            rates = [wer(a, b) for a, b in zip(bare["_texts"], project["_texts"]) if a.strip()]
            project["wer_vs_bare"] = round(sum(rates) / len(rates), 4) if rates else None
            project["speed_vs_bare"] = round(bare["wall_s"] / project["wall_s"], 3)
            project["transcription_speed_vs_bare"] = round(bare["wall_s"] / project["transcription_wall_s"], 3)
    for r in runs:
        del r["_texts"]
    return {"machine": machine(engine.device), "model": args.model, "device": engine.device,
            "compute_type": engine.compute_type, "batch_size": options.batch_size, "cores": cores,
            "model_load_s": round(load_s, 2), "runs": runs}


def markdown(report: dict) -> str:
    if report.get("skipped"):
        return f"GPU transcription benchmark skipped: {report['skipped']}\n"
    m = report["machine"]
    lines = [f"`bench/gpu_transcribe_bench.py`: model {report['model']}, {report['device']} {report['compute_type']}, "
             f"batch {report['batch_size']}, {report['cores']} cores available of {m['cores_machine']} "
             f"({m['cpu']}; GPU: {m['gpu'] or 'none'}; load {m['load_1min']} at the start; Python {m['python']}, "
             f"faster-whisper {m['faster_whisper']}, ctranslate2 {m['ctranslate2']}). Model load "
             f"{report['model_load_s']} s, outside the timing.", "",
             "| set | variant | audio | wall | real time | CPU use | GPU busy (mean) | vs bare | words vs bare (WER) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in report["runs"]:
        gpu = f"{r['gpu_util_mean']} %" if r.get("gpu_util_mean") is not None else "-"
        vs = (f"{r['speed_vs_bare']}x (transcription alone {r['transcription_speed_vs_bare']}x)"
              if "speed_vs_bare" in r else "")
        rt = (f"{r['realtime_factor']}x (transcription alone {r['transcription_realtime_factor']}x)"
              if "transcription_realtime_factor" in r else f"{r['realtime_factor']}x")
        lines.append(f"| {r['set']} ({r['files']} files) | {r['variant']} | {r['audio_sec'] / 60:.1f} min | "
                     f"{r['wall_s']:.1f} s | {rt} | {r['cpu_use']} | {gpu} | {vs} | {r.get('wer_vs_bare', '')} |")
    for r in report["runs"]:
        lines += ["", f"{r['set']}, {r['variant']}: seconds (share of wall time)", "",
                  "| stage | thread | seconds | share |", "|---|---|---|---|"]
        for s in r["stages"]:
            share = f"{100 * s['share']:.1f} %" + (" (overlapped)" if s["thread"] == BACKGROUND else "")
            lines.append(f"| {s['stage']} | {s['thread']} | {s['seconds']:.2f} | {share} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    ap.add_argument("--model", default="base")
    ap.add_argument("--compute-type", default="auto")
    ap.add_argument("--batch-size", type=int, default=0, help="0: 32 on CUDA, 8 on CPU")
    ap.add_argument("--sets", nargs="+", choices=("long", "short"), default=["long", "short"])
    ap.add_argument("--long-files", type=int, default=3)
    ap.add_argument("--long-minutes", type=float, default=48.0)
    ap.add_argument("--short-clips", type=int, default=72)
    ap.add_argument("--no-speakers", action="store_true")
    ap.add_argument("--no-chapters", action="store_true")
    ap.add_argument("--cores", type=int, default=0, help="run under taskset on cores 0..N-1")
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "podinsight" / "models")
    ap.add_argument("--inputs", type=Path, default=OUT / "gpu-bench")
    ap.add_argument("--out", type=Path, default=OUT / "gpu_transcribe_bench.json")
    ap.add_argument("--markdown", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.cores and os.environ.get(PINNED_ENV) != str(args.cores):
        taskset = shutil.which("taskset")
        if taskset is None:
            print("--cores needs taskset (util-linux), which is not on PATH", file=sys.stderr)
            return 2
        env = {**os.environ, PINNED_ENV: str(args.cores)}
        os.execve(taskset, [taskset, "-c", f"0-{args.cores - 1}", sys.executable, str(Path(__file__).resolve()),
                            *(sys.argv[1:] if argv is None else argv)], env)
    if args.device == "cuda" and (why := cuda_missing()):
        report = {"skipped": f"--device cuda needs a GPU: {why}"}
        print(f"skipped: {report['skipped']}")
    else:
        if args.batch_size <= 0:
            from podinsight_dagster.transcribe.engine import pick_device

            args.batch_size = 32 if pick_device(args.device, args.compute_type)[0] == "cuda" else 8
        report = measure(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    text = markdown(report)
    if args.markdown:
        args.markdown.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
