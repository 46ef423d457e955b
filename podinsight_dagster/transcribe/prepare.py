"""Episodes made ready for the model ahead of it: decode, VAD, chunks and log-Mel features, in a background thread.

``prepare`` does one episode: PyAV decodes it to 16 kHz mono, Silero VAD finds its
speech (``get_speech_timestamps`` with the batched pipeline's settings), the speech is
packed into chunks of at most 30 s (``collect_chunks``) and each chunk gets its log-Mel
features. ``Prefetcher`` runs ``prepare`` over the inputs in a thread while the model
works on the episodes before them. A file that cannot be read, decoded or prepared is
handed on as ``(index, TranscriptionError)``: it fails alone.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Sequence

from podinsight_dagster.transcribe import whisper_internals as wi
from podinsight_dagster.transcribe.audio import DECODED, decode, describe_source, open_source
from podinsight_dagster.transcribe.engine import Engine
from podinsight_dagster.transcribe.options import SAMPLE_RATE, AudioSource, TranscriptionError


@dataclass
class Episode:
    """One episode on its way through the model: its speech chunks' features, then each chunk's decoded result."""

    index: int
    name: str
    duration: float
    clips: list[dict]                 # VAD speech spans, in samples
    metadata: list[dict]              # per chunk: offset and duration in speech time
    features: list                    # per chunk: log-Mel features (n_mels, frames), unpadded
    language: str = "en"
    language_probability: float = 1.0
    outputs: list = field(default_factory=list)   # per chunk: faster-whisper Segments
    raw: list = field(default_factory=list)       # per chunk: (avg_logprob, no_speech_prob)
    done: int = 0
    last_speech: float = 0.0
    wall: float = 0.0
    detected_language: str | None = None
    detected_probability: float | None = None
    error: TranscriptionError | None = None
    alone: bool = False               # decode in a window of its own (its packed result was doubtful)

    @property
    def vad_speech(self) -> float:
        return sum(c["end"] - c["start"] for c in self.clips) / SAMPLE_RATE


def prepare(engine: Engine, index: int, source: AudioSource) -> Episode:
    """Decode, VAD, chunk and featurize one episode (runs in the prefetch thread)."""
    try:
        with open_source(source) as path:
            name = str(path)
            audio = decode(path)
    except TranscriptionError:
        raise
    except Exception as exc:  # noqa: BLE001 - a storage copy that fails is this episode's problem
        raise TranscriptionError(f"cannot read audio {describe_source(source)}: {type(exc).__name__}: {exc}") from exc
    keep = getattr(source, "decoded_key", None)
    if keep:  # the source asks for its samples to be kept for a later step of this process (diarization)
        DECODED.put(keep, audio)
    chunk_length = wi.window_seconds(engine.model)
    if engine.options.vad_filter:
        clips = wi.speech_clips(audio, chunk_length)
    else:  # no VAD: the audio in consecutive 30 s windows
        step = chunk_length * SAMPLE_RATE
        clips = [{"start": s, "end": min(s + step, audio.size)} for s in range(0, audio.size, step)]
    features, metadata = [], []
    if clips:
        chunks, metadata = wi.speech_chunks(audio, clips, max_duration=chunk_length)
        features = [wi.log_mel(engine.model, c) for c in chunks]
    return Episode(index=index, name=name, duration=audio.size / SAMPLE_RATE, clips=clips,
                   metadata=metadata, features=features)


class Prefetcher:
    """Prepares episodes in a background thread, ahead of the consumer.

    It keeps going while fewer than ``depth`` episodes or fewer than ``chunks`` speech chunks
    are waiting: long episodes are held two at a time, short ones enough to fill the next
    batches, so the model never waits for a run of small files to be decoded one by one.
    """

    _END = object()

    def __init__(self, engine: Engine, sources: Sequence[AudioSource], depth: int, chunks: int):
        self._items: deque = deque()
        self._chunks = 0
        self._depth, self._max_chunks = max(1, depth), max(1, chunks)
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, args=(engine, list(sources)),
                                        name="transcribe-prefetch", daemon=True)
        self._thread.start()

    @staticmethod
    def _size(item) -> int:
        return len(item.features) if isinstance(item, Episode) else 0

    def _put(self, item) -> bool:
        with self._cond:
            while not self._stop and len(self._items) >= self._depth and self._chunks >= self._max_chunks:
                self._cond.wait()
            if self._stop:
                return False
            self._items.append(item)
            self._chunks += self._size(item)
            self._cond.notify_all()
            return True

    def _run(self, engine: Engine, sources: list) -> None:
        if engine.device == "cpu":
            # Let the model's threads come first: preparing the next episodes only needs the
            # time they leave over, and it is queued ahead anyway.
            with contextlib.suppress(OSError, AttributeError):
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        try:
            for i, src in enumerate(sources):
                if self._stop:
                    return
                try:
                    item = prepare(engine, i, src)
                except TranscriptionError as exc:
                    item = (i, exc)
                except Exception as exc:  # noqa: BLE001 - e.g. VAD on garbage: fail the episode, not the run
                    item = (i, TranscriptionError(
                        f"cannot prepare audio {describe_source(src)}: {type(exc).__name__}: {exc}"))
                if not self._put(item):
                    return
        finally:
            with self._cond:
                self._items.append(self._END)
                self._cond.notify_all()

    def __iter__(self):
        while True:
            with self._cond:
                while not self._items:
                    self._cond.wait()
                item = self._items.popleft()
                self._chunks -= self._size(item)
                self._cond.notify_all()
            if item is self._END:
                return
            yield item

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout=30)
