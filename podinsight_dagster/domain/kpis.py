"""Per-episode KPIs from a transcript: speech share, pace, confidence, cost."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .transcribe import Segment, Transcript

COMPRESSION_RATIO_LIMIT = 2.4  # Whisper's own threshold for degenerate (repetitive) output
LOW_CONFIDENCE_LOGPROB = -1.0


@dataclass(frozen=True)
class Prices:
    """Compute prices in USD per hour. The run-book prices a g5.xlarge Spot hour at $0.30."""

    gpu_hour: float = 0.30
    cpu_hour: float = 0.04


def has_repetition_loop(text: str, n: int = 4, max_repeats: int = 4) -> bool:
    """True when one n-gram repeats back to back more than ``max_repeats`` times (a decoder loop)."""
    words = re.findall(r"\w+", text.lower())
    for size in range(1, n + 1):
        for i in range(0, max(0, len(words) - size * max_repeats)):
            gram = words[i:i + size]
            reps = 1
            j = i + size
            while words[j:j + size] == gram:
                reps += 1
                j += size
            if reps > max_repeats:
                return True
    return False


def compute_kpis(t: Transcript, prices: Prices = Prices()) -> dict:
    segs: list[Segment] = t.segments
    words = len(re.findall(r"\b\w[\w']*\b", t.text))
    speech = t.speech_duration if t.speech_duration else sum(s.end - s.start for s in segs)
    low_conf = [s for s in segs if s.avg_logprob < LOW_CONFIDENCE_LOGPROB]
    max_cr = max((s.compression_ratio for s in segs), default=0.0)
    loop = has_repetition_loop(t.text)
    price = prices.gpu_hour if t.device == "cuda" else prices.cpu_hour
    return {
        "duration_sec": round(t.duration, 3),
        "speech_sec": round(speech, 3),
        "speech_ratio": round(speech / t.duration, 4) if t.duration else 0.0,
        "words": words,
        "words_per_minute": round(words / (speech / 60), 1) if speech > 0 else 0.0,
        "segments": len(segs),
        "language": t.language,
        "language_probability": t.language_probability,
        "mean_avg_logprob": round(sum(s.avg_logprob for s in segs) / len(segs), 4) if segs else None,
        "low_confidence_share": round(len(low_conf) / len(segs), 4) if segs else 0.0,
        "max_compression_ratio": round(max_cr, 3),
        "repetition_loop": loop,
        "suspected_hallucination": bool(loop or max_cr > COMPRESSION_RATIO_LIMIT),
        "model": t.model,
        "device": t.device,
        "compute_type": t.compute_type,
        "wall_sec": round(t.wall_sec, 3),
        "realtime_factor": round(t.realtime_factor, 3),
        "cost_usd": round(t.wall_sec / 3600 * price, 6),
        "source": t.source,
    }
