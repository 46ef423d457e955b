"""Transcribing many episodes at once: prefetch, cross-episode batches, language detection and check.

One model load per process and options (``engine.load_engine`` caches it): a run over
many episodes pays the load once. faster-whisper's private internals are used only
through ``whisper_internals``.

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
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

import numpy as np

from podinsight_dagster.transcribe.audio import DECODED, decode, describe_source, open_source
from podinsight_dagster.transcribe.engine import Engine
from podinsight_dagster.transcribe.options import (COMPRESSION_RATIO_LIMIT, DEGENERATE_WORDS_PER_SPEECH_MIN,
                                                   LOG_PROB_THRESHOLD, MISMATCH_LOGPROB, MISMATCH_NO_SPEECH,
                                                   MISMATCH_WORDS_PER_SPEECH_MIN, NO_SPEECH_ALONE,
                                                   NO_SPEECH_THRESHOLD, SAMPLE_RATE, AudioSource, Segment,
                                                   Transcript, TranscriptionError, Word)
from podinsight_dagster.transcribe.whisper_internals import place_words, split_segments_by_timestamps

MAX_SEGMENT_SEC = 15.0
# Windows decoded, episodes decoded packed, and packed results decoded again alone, since the process
# started (for the benchmarks).
PACK_STATS = {"windows": 0, "packed": 0, "again_alone": 0}
# A packed episode with fewer words than this share of its part of the window's words is decoded again alone.
PACK_MIN_WORD_SHARE = 0.5


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
    alone: bool = False               # decode in a window of its own (its packed result was doubtful)

    @property
    def vad_speech(self) -> float:
        return sum(c["end"] - c["start"] for c in self.clips) / SAMPLE_RATE


def _prepare(engine: Engine, index: int, source: AudioSource) -> _Episode:
    """Decode, VAD, chunk and featurize one episode (runs in the prefetch thread)."""
    from faster_whisper.vad import VadOptions, collect_chunks, get_speech_timestamps

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


def _packable(ep: _Episode) -> bool:
    """Only one-chunk episodes share a window: their word placement needs no state from an earlier chunk."""
    return len(ep.features) == 1 and not ep.alone


def _take_windows(q: deque, n: int, limit: int, gap: int) -> list[list[tuple[_Episode, int]]]:
    """Up to ``n`` model windows from the queue's head, each one chunk or several packed one-chunk episodes.

    Windows start from the queue's head, in order (so every chunk waits at most a few batches); with
    ``gap`` > 0 a packable one's free space is then filled, best fit first, with the longest queued
    one-chunk episodes that still fit with ``gap`` frames before each.
    """
    windows: list[list[tuple[_Episode, int]]] = []
    while q and len(windows) < n:
        ep, ci = q.popleft()
        if ep.error is not None:
            continue
        window = [(ep, ci)]
        if gap and _packable(ep):
            used = ep.features[ci].shape[-1]
            while True:
                best, best_frames = -1, 0
                for j, (other, oci) in enumerate(q):
                    if other.error is None and _packable(other):
                        frames = other.features[oci].shape[-1]
                        if used + gap + frames <= limit and frames > best_frames:
                            best, best_frames = j, frames
                if best < 0:
                    break
                window.append(q[best])
                del q[best]
                used += gap + best_frames
        windows.append(window)
    return windows


def _window_features(window: list[tuple[_Episode, int]], gap: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """A window's features (parts joined by ``gap`` frames of padding) and each part's frame span in it."""
    from faster_whisper.audio import pad_or_trim

    if len(window) == 1:
        ep, ci = window[0]
        return pad_or_trim(ep.features[ci]), [(0, ep.features[ci].shape[-1])]
    parts, spans, at = [], [], 0
    # The gap is the features' floor (silence, as Whisper's log-Mel clamps it), not the 0 that
    # pad_or_trim pads a window's end with: after a gap of padding the decoder often takes the
    # window to be over and drops the next episode's words (one clip in 80 lost all its words).
    floor = min(float(ep.features[ci].min()) for ep, ci in window)
    for k, (ep, ci) in enumerate(window):
        f = ep.features[ci]
        if k:
            parts.append(np.full((f.shape[0], gap), floor, dtype=f.dtype))
            at += gap
        parts.append(f)
        spans.append((at, at + f.shape[-1]))
        at += f.shape[-1]
    return pad_or_trim(np.concatenate(parts, axis=1)), spans


def _run_batch(engine: Engine, windows: list[list[tuple[_Episode, int]]], language: str) -> None:
    """Decode one batch of windows (chunks of any episodes, one language); results land in each episode.

    A window is one chunk, or several one-chunk episodes packed with silence between them
    (``pack_gap_sec``): one encoder pass and one beam search for all of them, the words then
    split back per episode by their timings. Beam search runs over the whole batch (that is
    where batching pays). On CPU the encoder and the word alignment run window by window: there
    a batch of eight 30-s windows is slower to encode and to align than eight single windows
    (the attention maps of the batch do not fit the caches), and the decoder takes the encoder
    outputs stacked. On CUDA the batch goes through both whole.
    """
    from math import ceil

    import ctranslate2
    from faster_whisper.transcribe import Segment as FwSegment
    from faster_whisper.transcribe import Word as FwWord, get_compression_ratio

    model = engine.model
    fps = model.frames_per_second
    tokenizer, opts = engine.decoding(language)
    gap = _gap_frames(engine)
    built = [_window_features(w, gap) for w in windows]
    PACK_STATS["windows"] += len(windows)
    PACK_STATS["packed"] += sum(len(w) for w in windows if len(w) > 1)
    features = np.stack([f for f, _ in built])
    per_chunk = engine.device == "cpu" and len(windows) > 1
    with engine._lock:
        if per_chunk:
            encoded = [model.encode(features[i:i + 1]) for i in range(len(windows))]
            encoder_output = ctranslate2.StorageView.from_array(np.concatenate([np.asarray(e) for e in encoded]))
        else:
            encoder_output = model.encode(features)
            encoded = [encoder_output]
        outputs = _generate(engine, encoder_output, tokenizer, opts, len(windows))
        # As BatchedInferencePipeline.forward: one chunk decoded without timestamps is one subsegment.
        # A packed window is decoded as one chunk in its own time (offset 0) and split afterwards.
        chunk_segments, sizes = [], []
        for window, (_f, spans), output in zip(windows, built, outputs):
            if len(window) == 1:
                ep, ci = window[0]
                meta = ep.metadata[ci]
            else:
                meta = {"offset": 0.0, "duration": spans[-1][1] / fps}
            size = int(ceil(meta["duration"]) * fps)
            sizes.append(size)
            subsegments = split_segments_by_timestamps(
                model, tokenizer, output["tokens"], time_offset=meta["offset"], segment_size=size,
                segment_duration=meta["duration"])
            chunk_segments.append([
                dict(text=tokenizer.decode(sub["tokens"]), avg_logprob=output["avg_logprob"],
                     no_speech_prob=output["no_speech_prob"], tokens=sub["tokens"], start=sub["start"],
                     end=sub["end"], compression_ratio=get_compression_ratio(tokenizer.decode(sub["tokens"])),
                     seek=int(meta["offset"] * fps))
                for sub in subsegments])
        alignments = None
        if opts.word_timestamps:
            text_tokens = [[t for sub in segs for t in sub["tokens"] if t < tokenizer.eot] for segs in chunk_segments]
            if per_chunk:
                alignments = [model.find_alignment(tokenizer, [text_tokens[i]], encoded[i], [sizes[i]])
                              for i in range(len(windows))]
                alignments = [a[0] if a else [] for a in alignments]
            else:
                alignments = model.find_alignment(tokenizer, text_tokens, encoder_output, sizes)
    del encoder_output, encoded

    def fw_segments(segs: list[dict]) -> list:
        return [FwSegment(
            id=0, seek=s["seek"], start=round(s["start"], 3), end=round(s["end"], 3), text=s["text"],
            tokens=s["tokens"], avg_logprob=s["avg_logprob"], compression_ratio=s["compression_ratio"],
            no_speech_prob=s["no_speech_prob"], temperature=opts.temperatures[0],
            words=[FwWord(**w) for w in s["words"]] if opts.word_timestamps else None) for s in segs]

    # Word placement per episode, in chunk order, each episode carrying its own last-speech time.
    groups: dict[int, list[int]] = {}
    for pos, window in enumerate(windows):
        if len(window) == 1:
            groups.setdefault(id(window[0][0]), []).append(pos)
    for positions in groups.values():
        ep = windows[positions[0]][0][0]
        if alignments is not None:
            last = place_words(
                fps, [alignments[p] for p in positions], [chunk_segments[p] for p in positions],
                tokenizer, [sizes[p] for p in positions], opts.prepend_punctuations, opts.append_punctuations,
                ep.last_speech)
            ep.last_speech = last if last is not None else ep.last_speech
        for p in positions:
            ci = windows[p][0][1]
            ep.outputs[ci] = fw_segments(chunk_segments[p])
            ep.raw[ci] = (float(outputs[p]["avg_logprob"]), float(outputs[p]["no_speech_prob"]))
            ep.done += 1
    for pos, window in enumerate(windows):
        if len(window) == 1:
            continue
        place_words(fps, [alignments[pos]], [chunk_segments[pos]], tokenizer, [sizes[pos]],
                    opts.prepend_punctuations, opts.append_punctuations, 0.0)
        words = [w for s in chunk_segments[pos] for w in s["words"]]
        spans = built[pos][1]
        split = _split_packed(words, spans, fps, chunk_segments[pos])
        density = len(words) / max(sum(b - a for a, b in spans) / fps, 1e-3)
        for (ep, ci), segs, (a, b) in zip(window, split, spans):
            got = len(segs[0]["words"]) if segs else 0
            if got < PACK_MIN_WORD_SHARE * density * (b - a) / fps:
                # Fewer words than its share of the window's: the decoder may have stopped at the gap or
                # run two episodes together. Decode it again in a window of its own (iter_transcribe
                # puts it back at the head of the queue).
                ep.alone = True
                PACK_STATS["again_alone"] += 1
                continue
            ep.outputs[ci] = fw_segments(segs)
            ep.raw[ci] = (float(outputs[pos]["avg_logprob"]), float(outputs[pos]["no_speech_prob"]))
            ep.last_speech = segs[-1]["end"] if segs else ep.last_speech
            ep.done += 1


def _split_packed(words: list[dict], spans: list[tuple[int, int]], fps: int, segs: list[dict]) -> list[list[dict]]:
    """A packed window's words back per part: each word goes to the part its middle falls in (the cut is
    the middle of each gap), its times moved to the part's own clock and kept inside its speech."""
    from faster_whisper.transcribe import get_compression_ratio

    cuts = [(spans[k][1] + spans[k + 1][0]) / 2 / fps for k in range(len(spans) - 1)]
    per_part: list[list[dict]] = [[] for _ in spans]
    for w in words:
        middle = (w["start"] + w["end"]) / 2
        k = sum(middle >= c for c in cuts)
        start, stop = spans[k][0] / fps, spans[k][1] / fps
        per_part[k].append(dict(w, start=round(min(max(w["start"], start), stop) - start, 3),
                                end=round(min(max(w["end"], start), stop) - start, 3)))
    out = []
    for part in per_part:
        if not part:
            out.append([])
            continue
        text = "".join(w["word"] for w in part)
        out.append([dict(text=text, avg_logprob=segs[0]["avg_logprob"], no_speech_prob=segs[0]["no_speech_prob"],
                         tokens=[], start=part[0]["start"], end=part[-1]["end"],
                         compression_ratio=get_compression_ratio(text), seek=0, words=part)])
    return out


def _gap_frames(engine: Engine) -> int:
    """Frames of silence between packed episodes; 0 when packing is off (it needs word timings to split)."""
    if not engine.options.word_timestamps:
        return 0
    return int(round(engine.options.pack_gap_sec * engine.model.frames_per_second))


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

    gap = _gap_frames(engine)
    limit = engine.model.feature_extractor.nb_max_frames
    # With packing, a batch waits for twice its chunks: enough short episodes to pair up.
    ready = 2 * batch_size if gap else batch_size

    def run(language: str, n: int) -> Iterator[tuple[int, Transcript | TranscriptionError]]:
        windows = _take_windows(queues[language], n, limit, gap)
        items = [item for window in windows for item in window]
        if not items:
            return
        started = time.perf_counter()
        try:
            _run_batch(engine, windows, language)
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

