"""Speech to text with faster-whisper, offline, many episodes at once.

One model load per process and options (``load_engine`` caches it): a run over
many episodes pays the load once.

``transcribe_many`` (and ``iter_transcribe``, which yields results as episodes
finish) is the one transcription path; ``Engine.transcribe`` is the same path for
a single file. It is faster-whisper's ``BatchedInferencePipeline.transcribe``
taken apart so that one batch can hold chunks of several episodes
(faster-whisper's open request #1264):

1. a background thread decodes the next episodes (PyAV, 16 kHz mono), finds
   their speech with Silero VAD (``get_speech_timestamps`` with the pipeline's
   settings), packs it into chunks of at most 30 s (``collect_chunks``) and
   computes their log-Mel features, while the model works on the current ones;
2. the language is fixed per episode: ``en`` for an English-only model, the
   option's language, or detected on the episode's first 30 s of speech exactly
   as the pipeline does;
3. chunks wait in one queue per language and go through the model
   ``batch_size`` at a time (``generate_segment_batched``: encode, then beam
   search without timestamp tokens), so the last, partial batch of one episode
   is filled with the first chunks of the next. Word timings are aligned for the
   whole batch at once and then placed per episode, each with its own
   last-speech state, exactly as the pipeline does for one episode;
4. when an episode's last chunk is back, its timings are mapped from speech time
   back to audio time (``restore_speech_timestamps``) and the chunks are split
   into sentence segments (``split_into_sentences``).

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

import contextlib
import os
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, ContextManager, Iterable, Iterator, Sequence, Union

import numpy as np

from podinsight_dagster.transcribe.models import resolve_model

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
    """How to transcribe. ``Settings.transcribe_options()`` fills it from the configuration."""

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


@dataclass
class Segment:
    start: float
    end: float
    text: str
    avg_logprob: float | None       # None for publisher transcripts (no model score)
    no_speech_prob: float | None
    compression_ratio: float
    words: list[Word] = field(default_factory=list)
    speaker: str | None = None      # a publisher transcript's speaker name; ASR has no diarization yet


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


AudioSource = Union[str, Path, Callable[[], ContextManager[Path]]]


class Engine:
    """A loaded model plus what decoding with it needs (tokenizers and options per language)."""

    def __init__(self, options: TranscribeOptions):
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        self.options = options
        self.model_path = resolve_model(options.model, Path(options.model_cache), options.allow_download)
        self.device, self.compute_type = pick_device(options.device, options.compute_type)
        threads = options.cpu_threads or (os.cpu_count() or 1)
        self.model = WhisperModel(self.model_path, device=self.device, compute_type=self.compute_type,
                                  cpu_threads=threads, local_files_only=not options.allow_download)
        self.pipeline = BatchedInferencePipeline(self.model)
        self.multilingual = bool(self.model.model.is_multilingual)
        self._lock = threading.Lock()  # one model call at a time per loaded model
        self._decoding_cache: dict[str, tuple] = {}

    def transcribe(self, audio_path: AudioSource) -> Transcript:
        """One episode; raises TranscriptionError. The same code path as ``transcribe_many``."""
        result = transcribe_many(self, [audio_path])[0]
        if isinstance(result, TranscriptionError):
            raise result
        return result

    # -- internals shared by the batch path ------------------------------------------------
    def decoding(self, language: str):
        """(tokenizer, faster-whisper TranscriptionOptions) for a language, as the batched pipeline builds them."""
        cached = self._decoding_cache.get(language)
        if cached is not None:
            return cached
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import TranscriptionOptions, get_suppressed_tokens

        tokenizer = Tokenizer(self.model.hf_tokenizer, self.multilingual, task="transcribe",
                              language=language if self.multilingual else "en")
        opts = TranscriptionOptions(
            beam_size=self.options.beam_size, best_of=5, patience=1, length_penalty=1, repetition_penalty=1,
            no_repeat_ngram_size=0, log_prob_threshold=LOG_PROB_THRESHOLD, no_speech_threshold=NO_SPEECH_THRESHOLD,
            compression_ratio_threshold=2.4, temperatures=[0.0], initial_prompt=None, prefix=None,
            suppress_blank=True, suppress_tokens=get_suppressed_tokens(tokenizer, [-1]),
            prepend_punctuations="\"'“¿([{-", append_punctuations="\"'.。,，!！?？:：”)]}、",
            max_new_tokens=None, hotwords=None, word_timestamps=self.options.word_timestamps,
            hallucination_silence_threshold=None, condition_on_previous_text=False, clip_timestamps=None,
            prompt_reset_on_temperature=0.5, multilingual=False, without_timestamps=True,
            max_initial_timestamp=0.0,
        )
        self._decoding_cache[language] = (tokenizer, opts)
        return tokenizer, opts

    def language_checker(self) -> "Engine | None":
        """The multilingual engine that checks an English-only model's episodes, if the options name one."""
        name = self.options.language_check_model
        if self.multilingual or not name or name == self.options.model:
            return None
        return load_engine(replace(self.options, model=name, language_check_model=None))


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
        speaker=chunk.speaker,
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


# ---------------------------------------------------------------------------
# Decoding audio
# ---------------------------------------------------------------------------
def _mp3_declares_length(path: Path) -> bool:
    """Whether an MP3 carries a Xing/Info/VBRI frame count (else its duration is a bitrate guess)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(10)
            offset = 0
            if head[:3] == b"ID3" and len(head) == 10:
                size = (head[6] & 0x7F) << 21 | (head[7] & 0x7F) << 14 | (head[8] & 0x7F) << 7 | (head[9] & 0x7F)
                offset = 10 + size + (10 if head[5] & 0x10 else 0)
            fh.seek(offset)
            block = fh.read(8192)
    except OSError:
        return False
    for i in range(len(block) - 1):
        if block[i] == 0xFF and (block[i + 1] & 0xE0) == 0xE0:
            frame = block[i:i + 200]
            return b"Xing" in frame or b"Info" in frame or b"VBRI" in frame
    return False


def decode(path: Path) -> np.ndarray:
    """16 kHz mono float32 samples, as faster_whisper.audio.decode_audio gives them, with checks.

    Raises TranscriptionError for a file PyAV cannot open, one with no audio, one whose
    frames are mostly undecodable, or one that decodes to clearly less than the length
    its container declares (a truncated download). MP3 and ADTS files without a frame
    count header only have a bitrate estimate of their length, which is not checked.
    """
    import av
    from faster_whisper.audio import _group_frames, _resample_frames

    path = Path(path)
    declared: float | None = None
    stats = {"frames": 0, "invalid": 0}

    def counted(frames):
        it = iter(frames)
        while True:
            try:
                frame = next(it)
            except StopIteration:
                return
            except av.error.InvalidDataError:
                stats["invalid"] += 1
                if stats["invalid"] > 50 and stats["invalid"] > stats["frames"]:
                    raise
                continue
            stats["frames"] += 1
            yield frame

    try:
        resampler = av.audio.resampler.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        parts: list[np.ndarray] = []
        with av.open(str(path), mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise TranscriptionError(f"cannot decode audio {path}: the file has no audio stream")
            fmt = container.format.name or ""
            trusted = fmt != "aac" and (fmt != "mp3" or _mp3_declares_length(path))
            if trusted and container.duration:
                declared = container.duration / 1_000_000
            frames = _resample_frames(_group_frames(counted(container.decode(audio=0)), 500000), resampler)
            for frame in frames:
                parts.append(frame.to_ndarray().reshape(-1))
        # decode_audio runs gc.collect() here against a resampler leak of old PyAV versions
        # (faster-whisper #390); PyAV 12+ frees it, and a full collection in a big process
        # (Dagster's: ~65 ms) holds the GIL the inference thread needs.
        del resampler
    except TranscriptionError:
        raise
    except Exception as exc:  # noqa: BLE001 - PyAV raises many types for bad input
        raise TranscriptionError(f"cannot decode audio {path}: {type(exc).__name__}: {exc}") from exc
    samples = np.concatenate(parts) if parts else np.zeros(0, np.int16)
    del parts
    audio = samples.astype(np.float32)
    del samples
    audio /= 32768.0
    if audio.size == 0:
        raise TranscriptionError(f"cannot decode audio {path}: no samples (empty or truncated file)")
    if stats["invalid"] > max(3, 0.05 * stats["frames"]):
        raise TranscriptionError(f"cannot decode audio {path}: {stats['invalid']} of "
                                 f"{stats['invalid'] + stats['frames']} frames are corrupt")
    got = audio.size / SAMPLE_RATE
    frac, slack = TRUNCATION_TOLERANCE
    if declared and got < declared * frac - slack:
        raise TranscriptionError(f"cannot decode audio {path}: truncated: it decodes to {got:.1f} s "
                                 f"but its header declares {declared:.1f} s")
    return audio


# ---------------------------------------------------------------------------
# The batch path
# ---------------------------------------------------------------------------
@dataclass
class _Episode:
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

    @property
    def vad_speech(self) -> float:
        return sum(c["end"] - c["start"] for c in self.clips) / SAMPLE_RATE


def _prepare(engine: Engine, index: int, source: AudioSource) -> _Episode:
    """Decode, VAD, chunk and featurize one episode (runs in the prefetch thread)."""
    from faster_whisper.vad import VadOptions, collect_chunks, get_speech_timestamps

    opener = source if callable(source) else (lambda: contextlib.nullcontext(Path(source)))
    try:
        with opener() as path:
            name = str(path)
            audio = decode(path)
    except TranscriptionError:
        raise
    except Exception as exc:  # noqa: BLE001 - a storage copy that fails is this episode's problem
        raise TranscriptionError(f"cannot read audio {_describe(source)}: {type(exc).__name__}: {exc}") from exc
    fe = engine.model.feature_extractor
    chunk_length = fe.chunk_length
    if engine.options.vad_filter:
        clips = get_speech_timestamps(audio, VadOptions(max_speech_duration_s=chunk_length,
                                                        min_silence_duration_ms=160))
    else:  # no VAD: the audio in consecutive 30 s windows
        step = chunk_length * SAMPLE_RATE
        clips = [{"start": s, "end": min(s + step, audio.size)} for s in range(0, audio.size, step)]
    features, metadata = [], []
    if clips:
        chunks, metadata = collect_chunks(audio, clips, max_duration=chunk_length)
        features = [fe(c)[..., :-1] for c in chunks]
    return _Episode(index=index, name=name, duration=audio.size / SAMPLE_RATE, clips=clips,
                    metadata=metadata, features=features)


def _describe(source: AudioSource) -> str:
    if not callable(source):
        return str(source)
    if type(source).__str__ is not object.__str__:
        return str(source)
    return getattr(source, "__name__", None) or repr(source)


class _Prefetcher:
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
        return len(item.features) if isinstance(item, _Episode) else 0

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
                    item = _prepare(engine, i, src)
                except TranscriptionError as exc:
                    item = (i, exc)
                except Exception as exc:  # noqa: BLE001 - e.g. VAD on garbage: fail the episode, not the run
                    item = (i, TranscriptionError(
                        f"cannot prepare audio {_describe(src)}: {type(exc).__name__}: {exc}"))
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


class _PrecomputedAlignment:
    """Stands in for the model inside WhisperModel.add_word_timestamps with alignments already made.

    Alignment runs once for a whole (cross-episode) batch; the placement of words that
    follows depends on the previous chunk of the *same* episode (last speech time), so
    it runs per episode with this stand-in, reusing faster-whisper's own code.
    """

    def __init__(self, frames_per_second: int, alignments: list):
        self.frames_per_second = frames_per_second
        self._alignments = alignments

    def find_alignment(self, tokenizer, text_tokens, encoder_output, num_frames, median_filter_width=7):
        assert len(text_tokens) == len(self._alignments)
        return self._alignments


def _generate(engine: Engine, encoder_output, tokenizer, opts, n: int) -> list[dict]:
    """BatchedInferencePipeline.generate_segment_batched after its encode: beam search without timestamps."""
    model = engine.model
    prompt = model.get_prompt(tokenizer, previous_tokens=[], without_timestamps=opts.without_timestamps,
                              hotwords=opts.hotwords)
    results = model.model.generate(
        encoder_output, [list(prompt) for _ in range(n)], beam_size=opts.beam_size, patience=opts.patience,
        length_penalty=opts.length_penalty, max_length=model.max_length, suppress_blank=opts.suppress_blank,
        suppress_tokens=opts.suppress_tokens, return_scores=True, return_no_speech_prob=True,
        sampling_temperature=opts.temperatures[0], repetition_penalty=opts.repetition_penalty,
        no_repeat_ngram_size=opts.no_repeat_ngram_size)
    outputs = []
    for result in results:
        seq_len = len(result.sequences_ids[0])
        cum_logprob = result.scores[0] * (seq_len ** opts.length_penalty)
        outputs.append(dict(avg_logprob=cum_logprob / (seq_len + 1), no_speech_prob=result.no_speech_prob,
                            tokens=result.sequences_ids[0]))
    return outputs


def _run_batch(engine: Engine, items: list[tuple[_Episode, int]], language: str) -> None:
    """Decode one batch of chunks (any episodes, one language); results land in each episode.

    Beam search runs over the whole batch (that is where batching pays). On CPU the encoder
    and the word alignment run chunk by chunk: there a batch of eight 30-s windows is slower
    to encode and to align than eight single windows (the attention maps of the batch do not
    fit the caches), and the decoder takes the encoder outputs stacked. On CUDA the batch
    goes through both whole.
    """
    from math import ceil

    import ctranslate2
    from faster_whisper.audio import pad_or_trim
    from faster_whisper.transcribe import Segment as FwSegment
    from faster_whisper.transcribe import WhisperModel, Word as FwWord, get_compression_ratio

    model = engine.model
    tokenizer, opts = engine.decoding(language)
    features = np.stack([pad_or_trim(ep.features[ci]) for ep, ci in items])
    per_chunk = engine.device == "cpu" and len(items) > 1
    with engine._lock:
        if per_chunk:
            encoded = [model.encode(features[i:i + 1]) for i in range(len(items))]
            encoder_output = ctranslate2.StorageView.from_array(np.concatenate([np.asarray(e) for e in encoded]))
        else:
            encoder_output = model.encode(features)
            encoded = [encoder_output]
        outputs = _generate(engine, encoder_output, tokenizer, opts, len(items))
        # As BatchedInferencePipeline.forward: one chunk decoded without timestamps is one subsegment.
        chunk_segments, sizes = [], []
        for (ep, ci), output in zip(items, outputs):
            meta = ep.metadata[ci]
            size = int(ceil(meta["duration"]) * model.frames_per_second)
            sizes.append(size)
            subsegments, _, _ = model._split_segments_by_timestamps(
                tokenizer=tokenizer, tokens=output["tokens"], time_offset=meta["offset"], segment_size=size,
                segment_duration=meta["duration"], seek=0)
            chunk_segments.append([
                dict(text=tokenizer.decode(sub["tokens"]), avg_logprob=output["avg_logprob"],
                     no_speech_prob=output["no_speech_prob"], tokens=sub["tokens"], start=sub["start"],
                     end=sub["end"], compression_ratio=get_compression_ratio(tokenizer.decode(sub["tokens"])),
                     seek=int(meta["offset"] * model.frames_per_second))
                for sub in subsegments])
        alignments = None
        if opts.word_timestamps:
            text_tokens = [[t for sub in segs for t in sub["tokens"] if t < tokenizer.eot] for segs in chunk_segments]
            if per_chunk:
                alignments = [model.find_alignment(tokenizer, [text_tokens[i]], encoded[i], [sizes[i]])
                              for i in range(len(items))]
                alignments = [a[0] if a else [] for a in alignments]
            else:
                alignments = model.find_alignment(tokenizer, text_tokens, encoder_output, sizes)
    del encoder_output, encoded
    # Word placement per episode, in chunk order, each episode carrying its own last-speech time.
    groups: dict[int, list[int]] = {}
    for pos, (ep, _ci) in enumerate(items):
        groups.setdefault(id(ep), []).append(pos)
    for positions in groups.values():
        ep = items[positions[0]][0]
        if alignments is not None:
            stand_in = _PrecomputedAlignment(model.frames_per_second, [alignments[p] for p in positions])
            last = WhisperModel.add_word_timestamps(
                stand_in, [chunk_segments[p] for p in positions], tokenizer, None, [sizes[p] for p in positions],
                opts.prepend_punctuations, opts.append_punctuations, ep.last_speech)
            ep.last_speech = last if last is not None else ep.last_speech
        for p in positions:
            ci = items[p][1]
            segs = []
            for s in chunk_segments[p]:
                segs.append(FwSegment(
                    id=0, seek=s["seek"], start=round(s["start"], 3), end=round(s["end"], 3), text=s["text"],
                    tokens=s["tokens"], avg_logprob=s["avg_logprob"], compression_ratio=s["compression_ratio"],
                    no_speech_prob=s["no_speech_prob"], temperature=opts.temperatures[0],
                    words=[FwWord(**w) for w in s["words"]] if opts.word_timestamps else None))
            ep.outputs[ci] = segs
            ep.raw[ci] = (float(outputs[p]["avg_logprob"]), float(outputs[p]["no_speech_prob"]))
            ep.done += 1


def _detect_language(engine: Engine, ep: _Episode) -> tuple[str, float]:
    """The batched pipeline's detection: the first 30 s of the episode's speech features."""
    fe = engine.model.feature_extractor
    taken, frames = [], 0
    for f in ep.features:
        taken.append(f)
        frames += f.shape[-1]
        if frames >= fe.nb_max_frames:
            break
    else:  # the pipeline appends a dummy frame "to account for empty audio"
        taken.append(np.full((engine.model.model.n_mels, 1), -1.5, dtype="float32"))
    with engine._lock:
        language, probability, _ = engine.model.detect_language(
            features=np.concatenate(taken, axis=1), language_detection_segments=1,
            language_detection_threshold=0.5)
    return language, float(probability)


def _finish(engine: Engine, ep: _Episode) -> Transcript:
    from faster_whisper.transcribe import restore_speech_timestamps

    started = time.perf_counter()
    kept, dropped = [], 0
    for ci, segs in enumerate(ep.outputs):
        logprob, no_speech = ep.raw[ci]
        if (no_speech > NO_SPEECH_THRESHOLD and logprob < LOG_PROB_THRESHOLD) or no_speech > NO_SPEECH_ALONE:
            dropped += 1  # the model itself says this chunk is not speech: keep no text from it
            continue
        kept.extend(segs)
    raw_segments = list(restore_speech_timestamps(kept, ep.clips, SAMPLE_RATE)) if kept else []
    duration = ep.duration
    segments: list[Segment] = []
    for s in raw_segments:
        if not s.text.strip():
            continue
        # Alignment can overrun the end of the audio by a frame or two: keep every timing inside it.
        words = [Word(round(min(max(0.0, float(w.start)), duration), 3), round(min(max(0.0, float(w.end)), duration), 3),
                      w.word, round(float(w.probability), 4))
                 for w in (s.words or [])]
        chunk = Segment(
            start=round(max(0.0, float(s.start)), 3), end=round(min(duration, float(s.end)), 3),
            text=s.text.strip(), avg_logprob=round(float(s.avg_logprob), 4),
            no_speech_prob=round(float(s.no_speech_prob), 4),
            compression_ratio=round(float(s.compression_ratio), 3), words=words,
        )
        segments.extend(split_into_sentences(chunk))
    segments.sort(key=lambda s: (s.start, s.end))
    text = " ".join(s.text for s in segments)
    n = len(ep.raw)
    # Chunk means weighted by chunk length: a short tail chunk must not outvote the rest.
    weights = [m["duration"] for m in ep.metadata] if n else []
    wsum = sum(weights) or 1.0
    mean_lp = round(sum(r[0] * w for r, w in zip(ep.raw, weights)) / wsum, 4) if n else None
    mean_ns = round(sum(r[1] * w for r, w in zip(ep.raw, weights)) / wsum, 4) if n else None
    t = Transcript(
        text=text, language=ep.language, language_probability=round(float(ep.language_probability), 4),
        duration=round(duration, 3),
        # Sentence spans come from word timings, so their sum is time actually spoken
        # (the batched pipeline reports the whole duration as "after VAD").
        speech_duration=round(sum(s.end - s.start for s in segments), 3),
        segments=segments, model=engine.options.model, device=engine.device, compute_type=engine.compute_type,
        wall_sec=0.0, vad_speech_duration=round(ep.vad_speech, 3), chunks=n, dropped_chunks=dropped,
        mean_chunk_logprob=mean_lp, mean_no_speech_prob=mean_ns,
    )
    _language_check(engine, ep, t)
    ep.wall += time.perf_counter() - started
    t.wall_sec = round(ep.wall, 3)
    return t


def _language_check(engine: Engine, ep: _Episode, t: Transcript) -> None:
    """Flag an episode that is probably not in the language it was decoded as.

    English-only models (``*.en``) cannot detect a language: faster-whisper reports
    ``en`` with probability 1 for anything. With ``language_check_model`` set (e.g.
    ``base``), that multilingual model detects the language on the episode's first
    30 s of speech (one encoder pass) and the flag is as good as its detection
    (``language_check = "detected"``).

    Without it, a heuristic decides (``"heuristic"``), in three ways. English-only models
    turn foreign speech into one of two things, and which one depends on the machine (the
    same audio and model give different text on different CPUs): a few low-confidence
    English phrases ("Thank you very much."), or a confident decoder loop. The flag is set
    (``language_mismatch = True``) on a conclusive picture of either: chunk means of
    log-probability under -0.8 with a no-speech probability over 0.4 or under 60 words per
    minute of VAD speech; or over 400 words per minute of speech with a compression ratio
    over 2.4. It is cleared (``False``) only for output that looks like confident, ordinary
    speech: mean log-probability at least -0.8, no segment with a compression ratio over
    2.4 and at most 400 words per minute. Anything in between (low confidence alone, a
    loop alone) is undecided (``None``). Whenever the flag is not ``False`` the transcript's
    ``unreliable_reason`` says why its text should not be trusted.

    It is a hint, not a detection: very noisy English can trip it, and a foreign episode
    decoded into plausible, confident English passes it.
    Multilingual models detect the language of each episode; there the flag is not set.
    """
    if engine.multilingual or not t.chunks:
        return
    if ep.detected_language is not None:
        t.detected_language = ep.detected_language
        t.language_check = "detected"
        t.language_mismatch = ep.detected_language != "en" and (ep.detected_probability or 0) >= 0.5
        if t.language_mismatch:
            t.unreliable_reason = (f"language check: the speech is {ep.detected_language}, "
                                   "but the model is English-only")
        return
    words = len(t.text.split())
    wpm = words / (ep.vad_speech / 60) if ep.vad_speech > 0 else 0.0
    max_cr = max((s.compression_ratio for s in t.segments), default=0.0)
    logprob = t.mean_chunk_logprob
    no_speech = t.mean_no_speech_prob or 0.0
    low_confidence = logprob is not None and logprob < MISMATCH_LOGPROB
    unsure = low_confidence and (no_speech > MISMATCH_NO_SPEECH or wpm < MISMATCH_WORDS_PER_SPEECH_MIN)
    too_fast = wpm > DEGENERATE_WORDS_PER_SPEECH_MIN
    repetitive = max_cr > COMPRESSION_RATIO_LIMIT
    looping = too_fast and repetitive
    signs = [f"mean log-probability {logprob}" if low_confidence else "",
             f"no-speech probability {no_speech}" if unsure and no_speech > MISMATCH_NO_SPEECH else "",
             f"{wpm:.0f} words per minute of speech" if too_fast or (unsure and wpm < MISMATCH_WORDS_PER_SPEECH_MIN)
             else "",
             f"compression ratio {max_cr}" if repetitive else ""]
    why = ", ".join(x for x in signs if x)
    t.language_check = "heuristic"
    if unsure or looping:
        t.language_mismatch = True
        t.unreliable_reason = f"probably not English (English-only model): {why}"
    elif low_confidence or too_fast or repetitive:
        t.language_mismatch = None  # the heuristic cannot decide
        t.unreliable_reason = f"doubtful output, language undecided: {why}"
    else:
        t.language_mismatch = False


def iter_transcribe(engine: Engine, sources: Sequence[AudioSource]) -> Iterator[tuple[int, Transcript | TranscriptionError]]:
    """Transcribe ``sources`` (paths, or callables returning a context manager that yields a path).

    Yields ``(index, Transcript | TranscriptionError)`` as each episode finishes, in
    finishing order (roughly input order). Each transcript's ``wall_sec`` is its share of
    this call's wall time: time spent waiting for its audio, its share of every batch its
    chunks were in (by chunk count), its language detection and its post-processing, so the
    figures add up to the whole call.
    """
    batch_size = max(1, engine.options.batch_size)
    checker = engine.language_checker()
    queues: dict[str, deque] = {}
    pending: dict[int, _Episode] = {}
    prefetch = _Prefetcher(engine, sources, engine.options.prefetch, 2 * batch_size)

    def run(language: str, n: int) -> Iterator[tuple[int, Transcript | TranscriptionError]]:
        q = queues[language]
        items = []
        while q and len(items) < n:
            ep, ci = q.popleft()
            if ep.error is None:
                items.append((ep, ci))
        if not items:
            return
        started = time.perf_counter()
        try:
            _run_batch(engine, items, language)
        except Exception as exc:  # noqa: BLE001 - fail this batch's episodes, keep going with the rest
            for ep, _ci in items:
                if ep.error is None:
                    ep.error = TranscriptionError(f"decoding {ep.name} failed: {type(exc).__name__}: {exc}")
        share = (time.perf_counter() - started) / len(items)
        for ep, _ci in items:
            ep.wall += share
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
            ep: _Episode = item
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
            while len(q) >= batch_size:
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


def _finish_safely(engine: Engine, ep: _Episode) -> Transcript | TranscriptionError:
    try:
        return _finish(engine, ep)
    except Exception as exc:  # noqa: BLE001
        return TranscriptionError(f"post-processing {ep.name} failed: {type(exc).__name__}: {exc}")


def _set_language(engine: Engine, checker: Engine | None, ep: _Episode) -> None:
    started = time.perf_counter()
    if engine.options.language and engine.multilingual:
        ep.language, ep.language_probability = engine.options.language, 1.0
    elif not engine.multilingual:
        ep.language, ep.language_probability = "en", 1.0
        if checker is not None and ep.features and \
                checker.model.model.n_mels == engine.model.model.n_mels:
            ep.detected_language, ep.detected_probability = _detect_language(checker, ep)
    elif ep.features:
        ep.language, ep.language_probability = _detect_language(engine, ep)
    else:
        ep.language, ep.language_probability = "en", 0.0  # nothing to detect on
    ep.wall += time.perf_counter() - started


def transcribe_many(engine: Engine, sources: Iterable[AudioSource]) -> list[Transcript | TranscriptionError]:
    """Transcribe many episodes in one go; a list in input order, an error in place of each failure."""
    sources = list(sources)
    results: list[Transcript | TranscriptionError | None] = [None] * len(sources)
    for index, result in iter_transcribe(engine, sources):
        results[index] = result
    return [r if r is not None else TranscriptionError(f"{sources[i]}: no result") for i, r in enumerate(results)]
