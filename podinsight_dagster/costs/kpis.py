"""Per-episode KPIs from a transcript: speech share, pace, confidence, quality flags, cost."""

from __future__ import annotations

import re

from podinsight_dagster.costs.prices import Prices
from podinsight_dagster.transcribe.options import Segment, Transcript

COMPRESSION_RATIO_LIMIT = 2.4  # Whisper's own threshold for degenerate (repetitive) output
LOW_CONFIDENCE_LOGPROB = -1.0


def has_repetition_loop(text: str, n: int = 4, max_repeats: int = 4, long_n: int = 15) -> bool:
    """True when the text loops: one n-gram repeated back to back.

    Up to ``n`` words, more than ``max_repeats`` repeats ("thank you thank you ..."); longer
    phrases (up to ``long_n`` words) from three repeats, which natural speech hardly ever has.
    """
    words = re.findall(r"\w+", text.lower())
    for size in range(1, long_n + 1):
        limit = max_repeats if size <= n else 2
        for i in range(0, max(0, len(words) - size * limit)):
            gram = words[i:i + size]
            reps = 1
            j = i + size
            while words[j:j + size] == gram:
                reps += 1
                j += size
            if reps > limit:
                return True
    return False


def compute_kpis(t: Transcript, prices: Prices = Prices()) -> dict:
    """The KPIs of kpis.json.

    Confidence figures (mean_avg_logprob, low_confidence_share) exist only for ASR
    segments; a publisher transcript has none (None). ``suspected_hallucination`` is a
    decoder loop (one n-gram repeated back to back) or a segment whose gzip compression
    ratio is over 2.4 (Whisper's own threshold for degenerate output). ``unreliable_text`` is
    true when the text should not be trusted: the transcript's ``unreliable_reason`` (a language
    mismatch, or a language check that could not decide) or a suspected hallucination.
    """
    segs: list[Segment] = t.segments
    words = len(re.findall(r"\b\w[\w']*\b", t.text))
    speech = t.speech_duration if t.speech_duration else sum(s.end - s.start for s in segs)
    scored = [s for s in segs if s.avg_logprob is not None]
    low_conf = [s for s in scored if s.avg_logprob < LOW_CONFIDENCE_LOGPROB]
    max_cr = max((s.compression_ratio for s in segs), default=0.0)
    loop = has_repetition_loop(t.text)
    hallucination = bool(loop or max_cr > COMPRESSION_RATIO_LIMIT)
    unreliable = t.unreliable_reason or (
        "suspected hallucination: " + ("a repetition loop" if loop else f"compression ratio {round(max_cr, 3)}")
        if hallucination else None)
    talk: dict[str, float] = {}
    for s in segs:
        if s.speaker:
            talk[s.speaker] = talk.get(s.speaker, 0.0) + max(s.end - s.start, 0.0)
    return {
        "duration_sec": round(t.duration, 3),
        "speech_sec": round(speech, 3),
        "speech_ratio": round(speech / t.duration, 4) if t.duration else 0.0,
        "words": words,
        "words_per_minute": round(words / (speech / 60), 1) if speech > 0 else 0.0,
        "segments": len(segs),
        # Who spoke (diarization or the publisher's labels): count and seconds per speaker; None: unknown.
        "speakers": len(talk) if talk else None,
        "talk_sec_per_speaker": {k: round(v, 3) for k, v in talk.items()} if talk else None,
        "language": t.language,
        "language_probability": t.language_probability,
        "language_mismatch": t.language_mismatch,
        "language_check": t.language_check,
        "detected_language": t.detected_language,
        "mean_avg_logprob": round(sum(s.avg_logprob for s in scored) / len(scored), 4) if scored else None,
        "low_confidence_share": round(len(low_conf) / len(scored), 4) if scored else (None if segs else 0.0),
        "max_compression_ratio": round(max_cr, 3),
        "repetition_loop": loop,
        "suspected_hallucination": hallucination,
        "unreliable_text": bool(unreliable),
        "unreliable_reason": unreliable,
        "vad_speech_sec": t.vad_speech_duration,
        "chunks": t.chunks,
        "silent_chunks_dropped": t.dropped_chunks,
        "model": t.model,
        "device": t.device,
        "compute_type": t.compute_type,
        "wall_sec": round(t.wall_sec, 3),
        "realtime_factor": round(t.realtime_factor, 3),
        "cost_usd": round(t.wall_sec * prices.per_second(t.device), 6),
        "source": t.source,
        "publisher_url": t.publisher_url,
        "publisher_format": t.publisher_format,
        "publisher_fallback_reason": t.publisher_error,
        "publisher_asr_agreement": t.publisher_asr_agreement,
        "asr_error": t.asr_error,
    }
