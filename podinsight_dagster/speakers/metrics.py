"""Diarization error: the share of reference speech time given the wrong speaker, after the best label matching."""

from __future__ import annotations

from itertools import permutations
from typing import Hashable, Sequence

import numpy as np

STEP = 0.01  # seconds per scoring frame


def _frames(turns: Sequence[tuple[float, float, Hashable]], n: int, ids: dict) -> np.ndarray:
    out = np.full(n, -1, dtype=int)
    for start, end, who in turns:
        a, b = int(round(start / STEP)), int(round(end / STEP))
        out[max(0, a):max(0, min(n, b))] = ids.setdefault(who, len(ids))
    return out


def diarization_error(reference: Sequence[tuple[float, float, Hashable]],
                      hypothesis: Sequence[tuple[float, float, Hashable]]) -> float:
    """Share of reference speech frames whose hypothesis speaker is wrong or missing.

    Hypothesis labels are mapped one-to-one onto reference labels so as to make the error
    smallest (exhaustively for up to 8 labels). Speech the hypothesis labels where the
    reference has none (false alarm) is not counted: the segments come from the transcript,
    whose timing is not what is measured here.
    """
    end = max([e for _, e, _ in reference] + [e for _, e, _ in hypothesis] + [0.0])
    n = int(round(end / STEP)) + 1
    ref = _frames(reference, n, {})
    hyp = _frames(hypothesis, n, {})
    speech = ref >= 0
    total = int(speech.sum())
    if total == 0:
        return 0.0
    r_ids, h_ids = int(ref.max()) + 1, int(hyp.max()) + 1
    overlap = np.zeros((max(h_ids, 1), r_ids), dtype=int)
    both = speech & (hyp >= 0)
    np.add.at(overlap, (hyp[both], ref[both]), 1)
    best = 0
    if h_ids <= r_ids:
        for perm in permutations(range(r_ids), h_ids):
            best = max(best, sum(overlap[h, r] for h, r in enumerate(perm)))
    else:
        for perm in permutations(range(h_ids), r_ids):
            best = max(best, sum(overlap[h, r] for r, h in enumerate(perm)))
    return 1.0 - best / total
