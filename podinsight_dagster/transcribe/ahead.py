"""Later steps' heavy work started as each episode's transcript is done, while the model transcribes the next ones.

The speakers step's voice encoder (one voice per segment, then the overlap test's screening windows) and the
chapters step's sentence encoder used to run after the whole transcript step, one step after the other, on a
waiting user's time. On a CPU the model leaves part of the machine idle (the beam search's many small steps,
the waits for audio), so the transcript step hands each transcribed episode to one background thread here
(not niced, unlike the prefetch thread: the model waits for audio, but no step waits for this work sooner than the
speakers step would have made it, and on a shared machine a niced thread only cedes the process's share to others),
which computes what those steps compute first,
from the same inputs and with the same calls, so with the same numbers. The steps take the results by key and
use them only when they were made from the very transcript they read (the segments' spans, the sentences' texts);
anything missing, dropped or different is computed there as before. Nothing here is written anywhere: it lives in
this process only (a Pipes or Batch transcriber's worker is another process, and its run's steps compute as before).
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

# What the results may hold at once: filterbanks are ~16 KB per second of audio (about 2.3 hours of audio in
# 128 MB); the oldest are dropped first (their step then computes them itself).
MAX_BYTES = 128 << 20


@dataclass
class Voices:
    """An episode's voice-encoder work, as the speakers step would do it first (speakers/steps.py)."""
    spans: tuple[tuple[float, float], ...]    # the transcript segments' (start, end) these were made from
    feats: np.ndarray                         # the encoder's log-mel filterbank of the whole episode
    emb: np.ndarray                           # one voice per segment (diarize.embed_segments)
    screen: np.ndarray                        # the overlap test's screening windows' voices (overlap.screen_windows)
    embed_sec: float                          # the segment voices' encoder time (what diarization reports)

    @property
    def nbytes(self) -> int:
        return self.feats.nbytes + self.emb.nbytes + self.screen.nbytes


def _voices(audio: np.ndarray, spans: tuple) -> Voices:
    from podinsight_dagster.speakers.encoder import load_encoder
    from podinsight_dagster.speakers.overlap import segment_and_screen_voices

    import scipy.cluster.hierarchy  # noqa: F401 - the clustering's import (~0.3 s), off the speakers step's time

    encoder = load_encoder()
    started = time.perf_counter()
    feats = encoder.log_mel(audio)
    # What the speakers step does when nothing was made ahead (speakers/steps.py prepare_episode): the same calls.
    emb, screen = segment_and_screen_voices(encoder, audio, spans, feats)
    return Voices(spans, feats, emb, screen, time.perf_counter() - started)


def _nice_this_thread() -> None:
    # The model's threads come first: this work only needs the time they leave over.
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


class Ahead:
    """One background thread and what it made, by key, each handed out once (``voices``, ``sentences``)."""

    def __init__(self, max_bytes: int = MAX_BYTES, nice: bool = False):
        self.max_bytes, self.nice = max_bytes, nice
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._voices: OrderedDict[str, Future] = OrderedDict()
        self._sentences: OrderedDict[tuple[str, ...], Future] = OrderedDict()

    def _submit(self, fn, *args) -> Future:
        # A daemon thread of its own, not a ThreadPoolExecutor: the interpreter waits for an executor's queued
        # work at exit, and work nobody will take (a step that failed first) must not hold a process up.
        future: Future = Future()
        self._queue.put((future, fn, args))
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="ahead", daemon=True)
            self._thread.start()
        return future

    def _work(self) -> None:
        if self.nice:
            _nice_this_thread()
        while True:
            future, fn, args = self._queue.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to whoever takes the result
                future.set_exception(exc)

    def submit_voices(self, key: str, spans: Sequence[tuple[float, float]],
                      load_audio: Callable[[], np.ndarray | None]) -> None:
        """Compute the episode's ``Voices`` for ``spans`` in the background; ``load_audio`` runs there too."""
        spans = tuple((float(s), float(e)) for s, e in spans)

        def work() -> Voices | None:
            audio = load_audio()
            return None if audio is None else _voices(audio, spans)

        with self._lock:
            old = self._voices.pop(key, None)
            if old is not None:
                old.cancel()
            self._voices[key] = self._submit(work)
            self._trim()

    def voices(self, key: str, spans: Sequence[tuple[float, float]]) -> Voices | None:
        """The episode's ``Voices`` when made for exactly these spans (waits for them if under way), else None
        (also when still queued: it is taken off the queue, and the caller makes them)."""
        with self._lock:
            future = self._voices.pop(key, None)
        if future is None or future.cancel():  # none, or not started yet: the step does it now, not after the queue
            return None
        try:
            got = future.result()
        except Exception:  # noqa: BLE001 - the step computes them itself, and meets the error there if it is real
            return None
        if got is None or got.spans != tuple((float(s), float(e)) for s, e in spans):
            return None
        return got

    def submit_sentences(self, texts: Sequence[str], encode: Callable[[list[str]], np.ndarray]) -> None:
        """Compute ``encode(texts)`` (the chapters step's sentence vectors) in the background."""
        key = tuple(texts)
        with self._lock:
            if key not in self._sentences:
                self._sentences[key] = self._submit(encode, list(key))
                self._trim()

    def sentences(self, texts: Sequence[str]) -> np.ndarray | None:
        """The vectors of exactly these texts when submitted (waits for them if under way), else None."""
        with self._lock:
            future = self._sentences.pop(tuple(texts), None)
        if future is None or future.cancel():  # as voices
            return None
        try:
            return future.result()
        except Exception:  # noqa: BLE001 - as voices
            return None

    def _trim(self) -> None:
        # Under the lock. Results not yet taken count by their size; ones still running count as nothing.
        def size(f: Future) -> int:
            if not f.done() or f.cancelled() or f.exception() is not None:
                return 0
            got = f.result()
            return 0 if got is None else (got.nbytes if isinstance(got, (Voices, np.ndarray)) else 0)

        for table in (self._voices, self._sentences):
            while len(table) > 1 and sum(size(f) for f in self._voices.values()) + sum(
                    size(f) for f in self._sentences.values()) > self.max_bytes:
                _, dropped = table.popitem(last=False)
                dropped.cancel()

    def clear(self) -> None:
        with self._lock:
            for table in (self._voices, self._sentences):
                for f in table.values():
                    f.cancel()
                table.clear()


AHEAD = Ahead()
