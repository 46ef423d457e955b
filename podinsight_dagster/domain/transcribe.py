"""Speech to text with faster-whisper, offline.

One model load per process and options (``load_engine`` caches it): a run over
many episodes pays the load once. Transcription uses faster-whisper's
``BatchedInferencePipeline`` with Silero VAD, which skips silence and batches the
speech chunks of an episode through the decoder.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .models import resolve_model

SAMPLE_RATE = 16000


class TranscriptionError(RuntimeError):
    """An episode that cannot be transcribed (undecodable or empty audio)."""


@dataclass(frozen=True)
class TranscribeOptions:
    model: str = "base"
    device: str = "auto"            # "auto": cuda when present, else cpu
    compute_type: str = "auto"      # "auto": float16 on GPU, int8 on CPU
    batch_size: int = 8
    cpu_threads: int = 0            # 0: one per core
    beam_size: int = 5
    vad_filter: bool = True
    word_timestamps: bool = True    # word timings make subtitle cues line up with speech
    language: str | None = None     # None: detect
    model_cache: str = str(Path.home() / ".cache" / "podinsight" / "models")
    allow_download: bool = False


@dataclass
class Word:
    start: float
    end: float
    word: str
    probability: float


@dataclass
class Segment:
    start: float
    end: float
    text: str
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    words: list[Word] = field(default_factory=list)


@dataclass
class Transcript:
    text: str
    language: str
    language_probability: float
    duration: float
    speech_duration: float
    segments: list[Segment]
    model: str
    device: str
    compute_type: str
    wall_sec: float
    source: str = "asr"

    @property
    def realtime_factor(self) -> float:
        """Audio seconds per wall-clock second (higher is faster)."""
        return self.duration / self.wall_sec if self.wall_sec > 0 else 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["realtime_factor"] = round(self.realtime_factor, 3)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Transcript":
        segs = [Segment(**{**s, "words": [Word(**w) for w in s.get("words") or []]}) for s in d["segments"]]
        fields = {k: d[k] for k in cls.__dataclass_fields__ if k in d and k != "segments"}
        return cls(segments=segs, **fields)


def _cuda_available() -> bool:
    try:
        import ctranslate2

        return ctranslate2.get_cuda_device_count() > 0
    except Exception:  # noqa: BLE001 - no CUDA runtime at all
        return False


def pick_device(device: str, compute_type: str) -> tuple[str, str]:
    if device == "auto":
        device = "cuda" if _cuda_available() else "cpu"
    if compute_type == "auto":
        compute_type = "float16" if device == "cuda" else "int8"
    return device, compute_type


class Engine:
    """A loaded model plus the batched pipeline over it."""

    def __init__(self, options: TranscribeOptions):
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        self.options = options
        self.model_path = resolve_model(options.model, Path(options.model_cache), options.allow_download)
        self.device, self.compute_type = pick_device(options.device, options.compute_type)
        threads = options.cpu_threads or (os.cpu_count() or 1)
        self.model = WhisperModel(self.model_path, device=self.device, compute_type=self.compute_type,
                                  cpu_threads=threads, local_files_only=not options.allow_download)
        self.pipeline = BatchedInferencePipeline(self.model)
        self._lock = threading.Lock()  # one decode at a time per loaded model

    def transcribe(self, audio_path: Path) -> Transcript:
        import numpy as np
        from faster_whisper.audio import decode_audio

        started = time.perf_counter()
        try:
            audio = decode_audio(str(audio_path), sampling_rate=SAMPLE_RATE)
        except Exception as exc:  # noqa: BLE001 - PyAV raises many types for bad input
            raise TranscriptionError(f"cannot decode audio {audio_path}: {type(exc).__name__}: {exc}") from exc
        if audio.size == 0:
            raise TranscriptionError(f"cannot decode audio {audio_path}: no samples (empty or truncated file)")
        duration = float(audio.shape[0]) / SAMPLE_RATE
        opts = self.options
        with self._lock:
            segments_iter, info = self.pipeline.transcribe(
                np.asarray(audio, dtype=np.float32), language=opts.language, beam_size=opts.beam_size,
                batch_size=opts.batch_size, vad_filter=opts.vad_filter, word_timestamps=opts.word_timestamps,
                without_timestamps=True,
            )
            raw_segments = list(segments_iter)
        segments: list[Segment] = []
        for s in raw_segments:
            if not s.text.strip():
                continue
            words = [Word(round(float(w.start), 3), round(float(w.end), 3), w.word, round(float(w.probability), 4))
                     for w in (s.words or [])]
            chunk = Segment(
                start=round(max(0.0, float(s.start)), 3), end=round(min(duration, float(s.end)), 3),
                text=s.text.strip(), avg_logprob=round(float(s.avg_logprob), 4),
                no_speech_prob=round(float(s.no_speech_prob), 4),
                compression_ratio=round(float(s.compression_ratio), 3), words=words,
            )
            segments.extend(split_into_sentences(chunk))
        segments.sort(key=lambda s: (s.start, s.end))
        wall = time.perf_counter() - started
        return Transcript(
            text=" ".join(s.text for s in segments),
            language=info.language,
            language_probability=round(float(info.language_probability), 4),
            duration=round(duration, 3),
            # Sentence spans come from word timings, so their sum is time actually spoken
            # (the batched pipeline reports the whole duration as "after VAD").
            speech_duration=round(sum(s.end - s.start for s in segments), 3),
            segments=segments,
            model=opts.model,
            device=self.device,
            compute_type=self.compute_type,
            wall_sec=round(wall, 3),
        )


MAX_SEGMENT_SEC = 15.0


def split_into_sentences(chunk: Segment) -> list[Segment]:
    """Split a batched-pipeline chunk (up to 30 s) into sentence-sized segments by word timings.

    The batched pipeline decodes each VAD chunk without timestamp tokens (that keeps
    its accuracy and speed); word timings then place each sentence in time. A
    chunk without word timings stays whole.
    """
    if not chunk.words:
        return [chunk]
    out: list[Segment] = []
    current: list[Word] = []
    for word in chunk.words:
        current.append(word)
        ends_sentence = word.word.rstrip().endswith((".", "?", "!"))
        too_long = current[-1].end - current[0].start >= MAX_SEGMENT_SEC
        if ends_sentence or too_long:
            out.append(_segment_from_words(chunk, current))
            current = []
    if current:
        out.append(_segment_from_words(chunk, current))
    return out


def _segment_from_words(chunk: Segment, words: list[Word]) -> Segment:
    return Segment(
        start=words[0].start, end=max(words[-1].end, words[0].start),
        text="".join(w.word for w in words).strip(), avg_logprob=chunk.avg_logprob,
        no_speech_prob=chunk.no_speech_prob, compression_ratio=chunk.compression_ratio, words=list(words),
    )


_ENGINES: dict[TranscribeOptions, Engine] = {}
_ENGINES_LOCK = threading.Lock()


def load_engine(options: TranscribeOptions) -> Engine:
    """The process-wide engine for these options: a model is loaded once per process."""
    with _ENGINES_LOCK:
        engine = _ENGINES.get(options)
        if engine is None:
            engine = _ENGINES[options] = Engine(options)
        return engine
