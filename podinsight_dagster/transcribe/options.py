"""What transcription takes and gives: options, transcripts, segments, words, errors and thresholds."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, ContextManager, Union

SAMPLE_RATE = 16000
TRANSCRIPT_SOURCES = ("prefer_publisher", "always_asr", "both")

# Whisper's own "this window is silence" rule (openai/whisper transcribe.py defaults), plus a
# no-speech probability so high that the model's text is noise whatever its confidence.
NO_SPEECH_THRESHOLD = 0.6
LOG_PROB_THRESHOLD = -1.0
NO_SPEECH_ALONE = 0.9
# English-only models cannot detect a language: a non-English episode comes out as a few
# low-confidence English phrases. Chunk-weighted means beyond these flag it (see _english_only_check).
MISMATCH_LOGPROB = -0.8
MISMATCH_NO_SPEECH = 0.4
MISMATCH_WORDS_PER_SPEECH_MIN = 60.0
DEGENERATE_WORDS_PER_SPEECH_MIN = 400.0   # no one speaks this fast: the decoder is looping
COMPRESSION_RATIO_LIMIT = 2.4
# A decoded length this much under the length the container declares means a truncated file.
TRUNCATION_TOLERANCE = (0.97, 1.0)   # (fraction of declared, seconds of slack)


class TranscriptionError(RuntimeError):
    """An episode that cannot be transcribed (undecodable, truncated or empty audio)."""


@dataclass(frozen=True)
class TranscribeOptions:
    """How to transcribe. ``services.transcribe_options(settings)`` fills it from the configuration."""

    model: str = "base"
    device: str = "auto"            # auto: cuda if present
    compute_type: str = "auto"      # auto: float16 on a GPU, int8 on a CPU
    batch_size: int = 8
    cpu_threads: int = 0            # 0: one per core
    beam_size: int = 5
    vad_filter: bool = True
    word_timestamps: bool = True    # word timings make subtitle cues line up with speech
    language: str | None = None     # None: detect (multilingual models); English-only models use "en"
    model_cache: str = str(Path.home() / ".cache" / "podinsight" / "models")
    allow_download: bool = False
    # Where transcripts come from: the publisher's podcast:transcript when there is one
    # (prefer_publisher), always our ASR (always_asr), or both, compared (both).
    transcript_source: str = "prefer_publisher"
    # A multilingual model (e.g. "base") used only to detect the language of episodes given to
    # an English-only model; None: a confidence heuristic instead (see _english_only_check).
    language_check_model: str | None = None
    prefetch: int = 2               # episodes decoded ahead of the model (more when short: 2 batches' worth)
    # Seconds of silence between the speech of different one-chunk episodes packed into one 30-s window
    # (one encoder pass and one decode for several short episodes, split back by word timings);
    # 0: every chunk gets a window of its own. Needs word timings. Like batch_size, it is not part of
    # the transcript's code version: it changes which episodes share the model's work, not the method.
    pack_gap_sec: float = 0.0

    def __post_init__(self) -> None:
        if self.transcript_source not in TRANSCRIPT_SOURCES:
            raise ValueError(f"transcript source {self.transcript_source!r}: expected one of "
                             f"{', '.join(TRANSCRIPT_SOURCES)}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {self.batch_size}")


@dataclass
class Word:
    start: float
    end: float
    word: str
    probability: float
    speaker: str | None = None      # the segment's speaker (diarization or the publisher's label)


@dataclass
class Segment:
    start: float
    end: float
    text: str
    avg_logprob: float | None       # None for publisher transcripts (no model score)
    no_speech_prob: float | None
    compression_ratio: float
    words: list[Word] = field(default_factory=list)
    speaker: str | None = None      # a publisher transcript's speaker name, or diarization's (speakers/)
    # Overlapped speech (speakers/overlap.py): every voice heard in the segment, its own speaker first.
    overlap: bool = False
    speakers: list[str] | None = None
    recovered: bool = False         # words heard only on the second hearing of an overlapped stretch


_OVERLAP_KEYS = ("overlap", "speakers", "recovered")


@dataclass
class Transcript:
    text: str
    language: str
    language_probability: float
    duration: float
    speech_duration: float
    segments: list[Segment]
    model: str | None
    device: str | None
    compute_type: str | None
    wall_sec: float
    source: str = "asr"                     # "asr" or "publisher"
    vad_speech_duration: float | None = None  # seconds VAD kept (ASR only)
    chunks: int = 0                         # VAD chunks decoded (ASR only)
    dropped_chunks: int = 0                 # chunks the model called silence: no text kept
    mean_chunk_logprob: float | None = None   # over all decoded chunks, dropped ones included
    mean_no_speech_prob: float | None = None
    detected_language: str | None = None    # by the language check model, for English-only models
    language_mismatch: bool | None = None   # episode likely not in the model's language
    language_check: str | None = None       # "detected", "heuristic" or None (not checked)
    # Why the text should not be trusted (None: no known reason). Set whenever the language check
    # flags a mismatch or cannot decide (the heuristic found the output doubtful but not conclusive).
    unreliable_reason: str | None = None
    publisher_url: str | None = None
    publisher_format: str | None = None     # json, vtt, srt, text, html
    publisher_error: str | None = None      # why the publisher transcript was not used
    publisher_asr_agreement: float | None = None  # 1 - WER(publisher, ASR), source "both"
    asr_error: str | None = None            # source "both": why the ASR side failed
    # Who spoke, set by the diarization asset (speakers/steps.py): [{id, name, role, source, talk_sec}]
    speakers: list[dict] | None = None

    @property
    def vad_speech_sec(self) -> float | None:
        """Seconds of the audio VAD found to be speech (None for publisher transcripts)."""
        return self.vad_speech_duration

    @property
    def realtime_factor(self) -> float:
        """Audio seconds per wall-clock second (higher is faster)."""
        return self.duration / self.wall_sec if self.wall_sec > 0 else 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        for seg in d["segments"]:   # overlap marks only where there is overlap: other transcripts keep their shape
            for key in _OVERLAP_KEYS:
                if not seg[key]:
                    del seg[key]
        d["realtime_factor"] = round(self.realtime_factor, 3)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Transcript":
        segs = [Segment(**{**s, "words": [Word(**w) for w in s.get("words") or []]}) for s in d["segments"]]
        fields = {k: d[k] for k in cls.__dataclass_fields__ if k in d and k != "segments"}
        return cls(segments=segs, **fields)



# A file path, or a callable returning a context manager that yields one (e.g. a storage copy).
AudioSource = Union[str, Path, Callable[[], ContextManager[Path]]]


# Bump when a change to the transcription code changes its output (decoding, segmentation, guards):
# every transcript then shows stale (Dagster code_version) and `podrun transcribe --stale` redoes them.
TRANSCRIPTION_CODE_VERSION = "1"


def transcript_code_version(o: TranscribeOptions) -> str:
    """What changes a transcript's content: model, compute type, beam size, VAD, language settings, source, code."""
    import hashlib
    import json

    parts = {"model": o.model, "compute_type": o.compute_type, "beam_size": o.beam_size, "vad": o.vad_filter,
             "word_timestamps": o.word_timestamps, "language": o.language,
             "language_check_model": o.language_check_model, "source": o.transcript_source,
             "code": TRANSCRIPTION_CODE_VERSION}
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]
    return f"{TRANSCRIPTION_CODE_VERSION}-{digest}"
