"""Transcribing many episodes at once: the loop that feeds cross-episode batches and hands back each episode's result.

One model load per process and options (``engine.load_engine`` caches it): a run over
many episodes pays the load once. faster-whisper is used only through
``whisper_internals``.

``transcribe_many`` (and ``iter_transcribe``, which yields results as episodes
finish) is the one transcription path; ``transcribe_one`` is the same path for
a single file. It is faster-whisper's ``BatchedInferencePipeline.transcribe``
taken apart so that one batch can hold chunks of several episodes
(faster-whisper's open request #1264):

1. a background thread (``prepare.Prefetcher``) decodes the next episodes
   (PyAV, 16 kHz mono), finds their speech with Silero VAD (``get_speech_timestamps`` with the pipeline's
   settings), packs it into chunks of at most 30 s (``collect_chunks``) and
   computes their log-Mel features, while the model works on the current ones;
2. the language is fixed per episode: ``en`` for an English-only model, the
   option's language, or detected on the episode's first 30 s of speech exactly
   as the pipeline does;
3. chunks wait in one queue per language and go through the model
   ``batch_size`` at a time (``batch_decode.run_batch``, as ``generate_segment_batched``: encode, then beam
   search without timestamp tokens), so the last, partial batch of one episode
   is filled with the first chunks of the next. Word timings are aligned for the
   whole batch at once and then placed per episode, each with its own
   last-speech state, exactly as the pipeline does for one episode;
4. when an episode's last chunk is back, its timings are mapped from speech time
   back to audio time (``restore_speech_timestamps``) and the chunks are split
   into sentence segments (``results.finish``).

Short one-chunk episodes can also share one 30-s window (``pack_gap_sec``; ``packing``).

An episode's text is therefore the one the pipeline gives for it alone; only the
batch neighbours differ. A file that cannot be decoded, or decodes to much less
than its header declares (truncated), fails alone with a ``TranscriptionError``;
the other episodes go on.

Quality guards: a chunk the model itself calls silence (no-speech probability
over 0.6 *and* mean log-probability under -1.0, Whisper's own rule, which the
batched pipeline leaves out) yields no text, so silence, music or noise that gets
past VAD does not turn into invented words. Repetition loops and high compression
ratios are flagged in the KPIs (``kpis.py``).
"""

from __future__ import annotations

import time
from collections import deque
from typing import Iterable, Iterator, Sequence

from podinsight_dagster.transcribe import whisper_internals as wi
from podinsight_dagster.transcribe.batch_decode import detect_language, run_batch
from podinsight_dagster.transcribe.engine import Engine
from podinsight_dagster.transcribe.options import AudioSource, Transcript, TranscriptionError
from podinsight_dagster.transcribe.packing import PackStats, gap_frames, take_windows
from podinsight_dagster.transcribe.prepare import Episode, Prefetcher
from podinsight_dagster.transcribe.results import finish


def iter_transcribe(engine: Engine, sources: Sequence[AudioSource], stats: PackStats | None = None,
                    ) -> Iterator[tuple[int, Transcript | TranscriptionError]]:
    """Transcribe ``sources`` (paths, or callables returning a context manager that yields a path).

    Yields ``(index, Transcript | TranscriptionError)`` as each episode finishes, in
    finishing order (roughly input order). Each transcript's ``wall_sec`` is its share of
    this call's wall time: time spent waiting for its audio, its share of every batch its
    chunks were in (by chunk count), its language detection and its post-processing, so the
    figures add up to the whole call. ``stats``, when given, counts this call's windows and packing.
    """
    stats = stats if stats is not None else PackStats()
    batch_size = max(1, engine.options.batch_size)
    checker = engine.language_checker()
    queues: dict[str, deque] = {}
    pending: dict[int, Episode] = {}
    prefetch = Prefetcher(engine, sources, engine.options.prefetch, 2 * batch_size)

    gap = gap_frames(engine)
    limit = wi.window_frames(engine.model)
    # With packing, a batch waits for twice its chunks: enough short episodes to pair up.
    ready = 2 * batch_size if gap else batch_size

    def run(language: str, n: int) -> Iterator[tuple[int, Transcript | TranscriptionError]]:
        windows = take_windows(queues[language], n, limit, gap)
        items = [item for window in windows for item in window]
        if not items:
            return
        started = time.perf_counter()
        try:
            stats.add(run_batch(engine, windows, language))
        except Exception as exc:  # noqa: BLE001 - fail this batch's episodes, keep going with the rest
            for ep, _ci in items:
                if ep.error is None:
                    ep.error = TranscriptionError(f"decoding {ep.name} failed: {type(exc).__name__}: {exc}")
        share = (time.perf_counter() - started) / len(items)
        for ep, _ci in items:
            ep.wall += share
        for item in reversed(items):  # packed results that were doubtful: again, each in a window of its own
            ep, ci = item
            if ep.error is None and ep.outputs[ci] is None:
                queues[language].appendleft(item)
        for ep in {id(ep): ep for ep, _ in items}.values():
            if ep.index not in pending:
                continue
            if ep.error is not None:
                del pending[ep.index]
                yield ep.index, ep.error
            elif ep.done == len(ep.features):
                del pending[ep.index]
                yield ep.index, _finish_safely(engine, ep)

    try:
        waited = time.perf_counter()
        for item in prefetch:
            now = time.perf_counter()
            if isinstance(item, tuple):
                yield item[0], item[1]
                waited = time.perf_counter()
                continue
            ep: Episode = item
            ep.wall += now - waited
            try:
                _set_language(engine, checker, ep)
            except Exception as exc:  # noqa: BLE001
                yield ep.index, TranscriptionError(f"language detection failed for {ep.name}: {exc}")
                waited = time.perf_counter()
                continue
            ep.outputs = [None] * len(ep.features)
            ep.raw = [None] * len(ep.features)
            if not ep.features:  # no speech at all
                yield ep.index, _finish_safely(engine, ep)
                waited = time.perf_counter()
                continue
            pending[ep.index] = ep
            q = queues.setdefault(ep.language, deque())
            q.extend((ep, ci) for ci in range(len(ep.features)))
            while len(q) >= ready:
                yield from run(ep.language, batch_size)
            waited = time.perf_counter()
        # Inputs exhausted: flush what is left, language by language.
        for language, q in queues.items():
            while q:
                yield from run(language, batch_size)
        for ep in list(pending.values()):  # defensive: nothing should be left
            yield ep.index, ep.error or TranscriptionError(f"{ep.name}: chunks lost")
    finally:
        prefetch.close()


def _finish_safely(engine: Engine, ep: Episode) -> Transcript | TranscriptionError:
    try:
        return finish(engine, ep)
    except Exception as exc:  # noqa: BLE001
        return TranscriptionError(f"post-processing {ep.name} failed: {type(exc).__name__}: {exc}")


def _set_language(engine: Engine, checker: Engine | None, ep: Episode) -> None:
    started = time.perf_counter()
    if engine.options.language and engine.multilingual:
        ep.language, ep.language_probability = engine.options.language, 1.0
    elif not engine.multilingual:
        ep.language, ep.language_probability = "en", 1.0
        if checker is not None and ep.features and \
                wi.mel_count(checker.model) == wi.mel_count(engine.model):
            ep.detected_language, ep.detected_probability = detect_language(checker, ep)
    elif ep.features:
        ep.language, ep.language_probability = detect_language(engine, ep)
    else:
        ep.language, ep.language_probability = "en", 0.0  # nothing to detect on
    ep.wall += time.perf_counter() - started


def transcribe_many(engine: Engine, sources: Iterable[AudioSource],
                    stats: PackStats | None = None) -> list[Transcript | TranscriptionError]:
    """Transcribe many episodes in one go; a list in input order, an error in place of each failure."""
    sources = list(sources)
    results: list[Transcript | TranscriptionError | None] = [None] * len(sources)
    for index, result in iter_transcribe(engine, sources, stats):
        results[index] = result
    return [r if r is not None else TranscriptionError(f"{sources[i]}: no result") for i, r in enumerate(results)]


def transcribe_one(engine: Engine, source: AudioSource) -> Transcript:
    """One episode; raises TranscriptionError. The same code path as ``transcribe_many``."""
    result = transcribe_many(engine, [source])[0]
    if isinstance(result, TranscriptionError):
        raise result
    return result
