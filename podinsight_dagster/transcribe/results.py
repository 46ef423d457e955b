"""An episode's decoded chunks made into its Transcript: silence dropped, speech time back to audio time, sentences.

When an episode's last chunk is back from the model, ``finish`` keeps the chunks the
model itself does not call silence (no-speech probability over 0.6 *and* mean
log-probability under -1.0, Whisper's own rule, which the batched pipeline leaves out),
maps their timings from speech time back to audio time (``restore_speech_timestamps``),
splits them into sentence segments by word timings (``split_into_sentences``) and runs
the language check of English-only models (``language_check``).
"""

from __future__ import annotations

import time

from podinsight_dagster.transcribe import whisper_internals as wi
from podinsight_dagster.transcribe.engine import Engine
from podinsight_dagster.transcribe.options import (COMPRESSION_RATIO_LIMIT, DEGENERATE_WORDS_PER_SPEECH_MIN,
                                                   LOG_PROB_THRESHOLD, MISMATCH_LOGPROB, MISMATCH_NO_SPEECH,
                                                   MISMATCH_WORDS_PER_SPEECH_MIN, NO_SPEECH_ALONE,
                                                   NO_SPEECH_THRESHOLD, SAMPLE_RATE, Segment, Transcript, Word)
from podinsight_dagster.transcribe.prepare import Episode

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


def finish(engine: Engine, ep: Episode) -> Transcript:
    """An episode whose chunks are all decoded as a Transcript: silent chunks dropped, sentences, timings in audio time."""
    started = time.perf_counter()
    kept, dropped = [], 0
    for ci, segs in enumerate(ep.outputs):
        logprob, no_speech = ep.raw[ci]
        if (no_speech > NO_SPEECH_THRESHOLD and logprob < LOG_PROB_THRESHOLD) or no_speech > NO_SPEECH_ALONE:
            dropped += 1  # the model itself says this chunk is not speech: keep no text from it
            continue
        kept.extend(segs)
    raw_segments = wi.restore_speech_timestamps(kept, ep.clips, SAMPLE_RATE) if kept else []
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
    language_check(engine, ep, t)
    ep.wall += time.perf_counter() - started
    t.wall_sec = round(ep.wall, 3)
    return t


def language_check(engine: Engine, ep: Episode, t: Transcript) -> None:
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
