"""Overlapped speech: where two voices sound at once, found offline from the voice encoder and the clustering.

The test is a per-window two-speaker mixture test. For every pair of speakers the clustering found,
the episode's own audio gives a *mixture voice*: the clearest windows of one speaker summed with the
clearest windows of the other (at the same level) and put through the encoder. A window of the
transcript's speech (0.8 s, every 0.4 s) is overlapped when its voice is closer to a pair's mixture
voice than to any single speaker's mean voice; touching overlapped windows of one pair make a region.
On synthesised two-voice episodes with 1.5-2 s of talking over (docs/BENCHMARKS.md) this marks about
half of the overlapped time, most of what it marks is overlapped, and clean turn-taking gets (almost)
nothing marked. Voices the clustering cannot tell apart (cosine of mean voices above ~0.93) give no
usable mixture voice: nothing is marked between them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Sequence

import numpy as np

from podinsight_dagster.speakers.encoder import SAMPLE_RATE, VoiceEncoder

WINDOW_SEC = 0.8            # one encoder window (80 frames of 10 ms)
HOP_SEC = 0.4               # half-window steps: at side-by-side windows the overlap found halved
MIX_WINDOWS = 8             # clearest windows per speaker summed into a pair's mixture voice
# A window is overlapped when its mixture similarity beats its best single-speaker similarity by this much.
MARGIN = 0.0
MIN_REGION_SEC = WINDOW_SEC + HOP_SEC
SCREEN_MARGIN = -0.03       # the screening pass's: a window this close to its mixture voice is looked at closer
# Pairs whose mean voices are this close give mixture voices no different from either speaker.
MAX_PAIR_SIMILARITY = 0.93
METHOD = "mixture-voice-w0.8-h0.4-min1.2"


@dataclass
class Overlap:
    start: float
    end: float
    speakers: tuple[int, int]       # cluster labels of the two voices heard

    @property
    def duration(self) -> float:
        return max(self.end - self.start, 0.0)


def speech_windows(spans: Sequence[tuple[float, float]], hop: float = HOP_SEC) -> list[tuple[float, float]]:
    """Windows of ``WINDOW_SEC`` every ``hop`` inside each span (one, padded, for a shorter span)."""
    out: list[tuple[float, float]] = []
    for start, end in spans:
        t = start
        while True:
            out.append((round(t, 3), round(t + WINDOW_SEC, 3)))
            t += hop
            if t + WINDOW_SEC > end + 1e-6:
                break
    return out


def _clip(audio: np.ndarray, start: float) -> np.ndarray:
    a = int(round(start * SAMPLE_RATE))
    seg = audio[a:a + int(WINDOW_SEC * SAMPLE_RATE)]
    return np.pad(seg, (0, int(WINDOW_SEC * SAMPLE_RATE) - len(seg)))


def mixture_voice(encoder: VoiceEncoder, audio: np.ndarray, starts_a: Sequence[float],
                  starts_b: Sequence[float]) -> np.ndarray:
    """The encoder's voice of windows of one speaker summed, at equal level, with windows of the other."""
    mixes = []
    for sa, sb in zip(starts_a, starts_b):
        a, b = _clip(audio, sa), _clip(audio, sb)
        ra, rb = float(np.sqrt(np.mean(a ** 2))) + 1e-9, float(np.sqrt(np.mean(b ** 2))) + 1e-9
        mixes.append((a / ra + b / rb) * (ra + rb) / 2)
    if not mixes:
        return np.zeros(encoder.dim, dtype=np.float32)
    emb = encoder.embed_spans(np.concatenate(mixes), [(i * WINDOW_SEC, (i + 1) * WINDOW_SEC) for i in range(len(mixes))],
                              max_windows=1)
    mean = emb.mean(0)
    return mean / (np.linalg.norm(mean) + 1e-12)


def _mixture_scores(encoder: VoiceEncoder, audio: np.ndarray, windows, emb: np.ndarray, centroids: np.ndarray,
                    mixes: dict | None = None):
    """(best single-voice similarity, best mixture similarity, its pair) per window; ``mixes`` caches pair voices."""
    k = len(centroids)
    sims = emb @ centroids.T
    own = np.argmax(sims, 1)
    best_mix = np.full(len(windows), -np.inf)
    best_pair = np.zeros((len(windows), 2), dtype=int)
    cent_sims = centroids @ centroids.T
    mixes = {} if mixes is None else mixes
    for a in range(k):
        for b in range(a + 1, k):
            if cent_sims[a, b] > MAX_PAIR_SIMILARITY:
                continue
            if (a, b) not in mixes:
                clear_a = np.where(own == a)[0]
                clear_b = np.where(own == b)[0]
                clear_a = clear_a[np.argsort(-(sims[clear_a, a] - sims[clear_a, b]))][:MIX_WINDOWS]
                clear_b = clear_b[np.argsort(-(sims[clear_b, b] - sims[clear_b, a]))][:MIX_WINDOWS]
                mixes[(a, b)] = None if len(clear_a) < 2 or len(clear_b) < 2 else mixture_voice(
                    encoder, audio, [windows[i][0] for i in clear_a], [windows[i][0] for i in clear_b])
            if mixes[(a, b)] is None:
                continue
            score = emb @ mixes[(a, b)]
            better = score > best_mix
            best_mix = np.where(better, score, best_mix)
            best_pair[better] = (a, b)
    return sims.max(1), best_mix, best_pair


def screen_windows(encoder: VoiceEncoder, audio: np.ndarray, spans: Sequence[tuple[float, float]],
                   feats: np.ndarray | None = None, known: dict | None = None) -> np.ndarray:
    """The screening pass's voices: side-by-side windows over all of ``spans`` (no clustering needed, so
    the transcript step can have them made while it transcribes the next episodes: transcribe/ahead.py).
    ``known``: window voices the segments' embedding already made (``segment_and_screen_voices``)."""
    return encoder.embed_spans(audio, speech_windows(spans, hop=WINDOW_SEC), feats, max_windows=1, known=known)


def segment_and_screen_voices(encoder: VoiceEncoder, audio: np.ndarray, spans: Sequence[tuple[float, float]],
                              feats: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(one voice per segment, as diarize.embed_segments; the screening voices), the windows the two share
    encoded once: the segments' side-by-side windows are most of the screening windows (up to 8 per segment,
    so all of a segment's up to 6.4 s), and the encoder is most of what diarization costs."""
    feats = encoder.log_mel(audio) if feats is None else feats
    windows: dict = {}
    emb = encoder.embed_spans(audio, spans, feats, keep=windows)
    return emb, screen_windows(encoder, audio, spans, feats, known=windows)


def detect_overlaps(encoder: VoiceEncoder, audio: np.ndarray, spans: Sequence[tuple[float, float]],
                    centroids: np.ndarray, feats: np.ndarray | None = None,
                    screen: np.ndarray | None = None) -> tuple[list[Overlap], int]:
    """Overlapped regions in ``spans`` (the transcript's speech) between the clustering's voices ``centroids``.

    Two passes keep the encoder's work near the segments' own: side-by-side windows over all speech screen
    for candidates (a looser margin), then half-window steps test the candidates' neighbourhood.
    ``feats`` (the encoder's filterbank of ``audio``) and ``screen`` (``screen_windows``' voices for these spans),
    when already made, are not made again.
    Returns (regions in time order, windows encoded). Nothing is marked with fewer than two voices.
    """
    if len(centroids) < 2 or not spans:
        return [], 0
    coarse = speech_windows(spans, hop=WINDOW_SEC)
    if screen is not None and len(screen) == len(coarse):
        emb = screen
    else:
        feats = encoder.log_mel(audio) if feats is None else feats
        emb = screen_windows(encoder, audio, spans, feats)
    mixes: dict = {}
    single, mixed, _ = _mixture_scores(encoder, audio, coarse, emb, centroids, mixes)
    near = [(max(s - WINDOW_SEC, a), min(e + WINDOW_SEC, b))
            for (s, e), m, one in zip(coarse, mixed, single) if m > one + SCREEN_MARGIN
            for a, b in spans if a <= s < b]
    if not near:
        return [], len(coarse)
    windows = sorted(set(speech_windows(_merged(near))))
    feats = encoder.log_mel(audio) if feats is None else feats
    emb = encoder.embed_spans(audio, windows, feats, max_windows=1)
    single, mixed, pair_of = _mixture_scores(encoder, audio, windows, emb, centroids, mixes)
    regions: list[Overlap] = []
    for (start, end), one, mix, pair in zip(windows, single, mixed, pair_of):
        if not mix > one + MARGIN:
            continue
        pair = (int(pair[0]), int(pair[1]))
        last = regions[-1] if regions else None
        if last is not None and last.speakers == pair and start <= last.end + 1e-6:
            last.end = max(last.end, end)
        else:
            regions.append(Overlap(start, end, pair))
    # One window alone is as often a voice at its least typical as two voices: a region needs two in a row.
    return [r for r in regions if r.duration >= MIN_REGION_SEC - 1e-6], len(coarse) + len(windows)


def _merged(spans):
    out: list[list[float]] = []
    for s, e in sorted(spans):
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


# --- the second hearing: words of an overlapped stretch the first pass did not keep ---------------------------
MAX_CLIP_SEC = 28.0         # one Whisper window, with room
AFTER_SEC = 4.0
SAME_WORD_SEC = 1.5         # a word heard again within this of the first pass's same word is that word
EDGE_SEC = 0.3              # outside the region (widened by this) one voice speaks: words there are re-hearings
MIN_NEW_WORDS = 2           # a lone new word is more likely a mishearing than a lost sentence


def _norm(word: str) -> str:
    return re.sub(r"[^a-z0-9]", "", word.lower())


def _same(a: str, b: str) -> bool:
    return a == b or (len(a) > 3 and len(b) > 3 and SequenceMatcher(None, a, b).ratio() >= 0.75)


def clip_span(region: Overlap, segments: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """What to hear again: the region, the first-pass segments it touches and ``AFTER_SEC`` beyond it (the voice
    talked over often goes on alone, and the first pass lost the sentence), at most ``MAX_CLIP_SEC``."""
    touching = [(s, e) for s, e in segments if s < region.end and e > region.start]
    start = min([region.start] + [s for s, _ in touching])
    end = max([region.end + AFTER_SEC] + [e for _, e in touching])
    if end - start > MAX_CLIP_SEC:
        mid = (region.start + region.end) / 2
        start, end = max(start, mid - MAX_CLIP_SEC / 2), min(end, mid + MAX_CLIP_SEC / 2)
    return start, end


def new_word_runs(first: Sequence[tuple[float, float, str]], heard: Sequence[tuple[float, float, str]],
                  region: Overlap) -> list[list[int]]:
    """Runs (indices into ``heard``) of words the first pass does not have, ``MIN_NEW_WORDS`` or more long.

    A heard word is the first pass's when a first-pass word of the same text (or a near spelling) is within
    ``SAME_WORD_SEC``, or when it lies outside the overlapped region (one voice speaking: a re-hearing of words the
    first pass has, however spelt) where the first pass has a word at the same time.
    """
    known = [(s, e, _norm(t)) for s, e, t in first]
    runs: list[list[int]] = []
    current: list[int] = []
    for i, (s, e, text) in enumerate(heard):
        n = _norm(text)
        inside = s < region.end + EDGE_SEC and e > region.start - EDGE_SEC
        dup = not n or any(abs(fs - s) <= SAME_WORD_SEC and _same(fn, n) for fs, _, fn in known) or (
            not inside and any(fs < e and fe > s for fs, fe, _ in known))
        if dup:
            if len(current) >= MIN_NEW_WORDS:
                runs.append(current)
            current = []
        else:
            current.append(i)
            if text.rstrip().endswith((".", "?", "!")):     # a sentence ends: the next may be the other voice's
                if len(current) >= MIN_NEW_WORDS:
                    runs.append(current)
                current = []
    if len(current) >= MIN_NEW_WORDS:
        runs.append(current)
    return runs
