"""A second hearing of short stretches of an episode (overlapped speech), without VAD, with word timings."""

from __future__ import annotations

import numpy as np

from podinsight_dagster.transcribe.engine import Engine
from podinsight_dagster.transcribe.options import LOG_PROB_THRESHOLD, NO_SPEECH_THRESHOLD, SAMPLE_RATE, Segment, Word


def transcribe_clip(engine: Engine, audio: np.ndarray, start: float, end: float, language: str) -> list[Segment]:
    """Segments (times in the episode's seconds) heard in ``audio[start:end]`` by ``engine``'s model.

    No VAD (the first pass's VAD merging is what lost words under other words) and no previous-text
    conditioning; Whisper's own silence rule drops a segment the model calls silence.
    """
    clip = np.ascontiguousarray(audio[int(start * SAMPLE_RATE):int(end * SAMPLE_RATE)], dtype=np.float32)
    if clip.size < SAMPLE_RATE // 2:
        return []
    with engine.lock:
        found, _ = engine.model.transcribe(clip, language=language, beam_size=engine.options.beam_size,
                                           vad_filter=False, word_timestamps=True,
                                           condition_on_previous_text=False)
        found = list(found)
    out = []
    for s in found:
        if s.no_speech_prob > NO_SPEECH_THRESHOLD and s.avg_logprob < LOG_PROB_THRESHOLD:
            continue
        words = [Word(round(start + w.start, 3), round(start + w.end, 3), w.word, round(w.probability, 4))
                 for w in s.words or []]
        out.append(Segment(round(start + s.start, 3), round(start + s.end, 3), s.text.strip(),
                           round(s.avg_logprob, 4), round(s.no_speech_prob, 4), round(s.compression_ratio, 4), words))
    return out
