"""Topic boundaries from sentence embeddings (TextTiling on vector similarity) and key-phrase chapter titles."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from math import log

import numpy as np

VERSION = "texttiling-minilm-v1"  # the chapters asset's code version: change it when the method changes

_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")
_WORD = re.compile(r"[A-Za-z][A-Za-z'\-]+")
STOPWORDS = frozenset("""
a about above after again against all almost also although always am among an and any are aren't around as at
back be because been before being below between both but by can can't cannot could couldn't did didn't do does
doesn't doing don't down during each either else even ever every few for from further get gets getting go goes
going gone got had hadn't has hasn't have haven't having he he'd he'll he's her here here's hers herself him
himself his how how's however i i'd i'll i'm i've if in into is isn't it it's its itself just know kind let let's
like lot lots made make makes many may me might more most much must mustn't my myself need needs never no nor not
now of off often on once one ones only or other others otherwise our ours ourselves out over own per perhaps
pretty quite rather really right said same say says see seem seems shall shan't she she'd she'll she's should
shouldn't since so some something sometimes still such sure take takes than that that's the their theirs them
themselves then there there's these they they'd they'll they're they've thing things think this those though
through thus to today too under until up upon us use used uses using very via want wants was wasn't way we we'd
we'll we're we've well were weren't what what's when when's where where's whether which while who who's whom
whose why why's will with within without won't would wouldn't yeah yes yet you you'd you'll you're you've your
yours yourself yourselves okay oh um uh mean actually basically going gonna wanna first second next last new
good great big little long time times year years day days people person episode today's kind sort
""".split())


@dataclass
class Sentence:
    text: str
    start: float
    end: float


def sentences_from_segments(segments) -> list[Sentence]:
    """Split the transcript's segments into sentences, timed by their words (else by character share)."""
    out: list[Sentence] = []
    pending: Sentence | None = None  # a sentence that runs on into the next segment
    for seg in segments:
        text = (seg.text or "").strip()
        if not text:
            continue
        parts = [p.strip() for p in _SENTENCE_END.split(text) if p.strip()]
        span, total = seg.end - seg.start, max(1, sum(len(p) for p in parts))
        t = seg.start
        for j, part in enumerate(parts):
            end = seg.end if j == len(parts) - 1 else t + span * len(part) / total
            if pending is not None:
                pending = Sentence(f"{pending.text} {part}", pending.start, end)
            else:
                pending = Sentence(part, t, end)
            if part.endswith((".", "!", "?", '."', '?"', '!"')) or j < len(parts) - 1:
                out.append(pending)
                pending = None
            t = end
    if pending is not None:
        out.append(pending)
    return out


def gap_similarities(vectors: np.ndarray, window: int) -> np.ndarray:
    """Cosine similarity across each gap (before sentence i, i = 1..n-1) of the mean vectors of ``window`` each side."""
    n = len(vectors)
    sims = np.ones(max(n - 1, 0), dtype=np.float64)
    for i in range(1, n):
        left = vectors[max(0, i - window):i].mean(0)
        right = vectors[i:i + window].mean(0)
        sims[i - 1] = float(left @ right / max(np.linalg.norm(left) * np.linalg.norm(right), 1e-12))
    return sims


def depth_scores(sims: np.ndarray) -> np.ndarray:
    """TextTiling depth: how far each gap's similarity dips below the nearest peaks on either side."""
    depth = np.zeros_like(sims)
    for i, s in enumerate(sims):
        lp = s
        for j in range(i - 1, -1, -1):
            if sims[j] < lp:
                break
            lp = sims[j]
        rp = s
        for j in range(i + 1, len(sims)):
            if sims[j] < rp:
                break
            rp = sims[j]
        depth[i] = (lp - s) + (rp - s)
    return depth


def can_split(times: list[float], *, min_sentences: int = 3, min_chapter_sec: float = 30.0) -> bool:
    """Whether any boundary can pass ``find_boundaries``' limits: a chapter needs ``min_sentences`` and
    ``min_chapter_sec`` (from its first sentence's start to the last sentence's start) on each side."""
    return len(times) >= 2 * min_sentences and times[-1] - times[0] >= 2 * min_chapter_sec


def find_boundaries(vectors: np.ndarray, times: list[float] | None = None, *, window: int = 3,
                    min_sentences: int = 3, min_chapter_sec: float = 30.0, cutoff: float = 0.5) -> list[int]:
    """Indices of the sentences that start a new topic (never 0), deepest similarity dips first kept.

    A gap is a candidate when its depth exceeds mean + ``cutoff`` * std of all depths; candidates are
    taken deepest first, skipping any closer than ``min_sentences`` or ``min_chapter_sec`` (by the
    sentences' start ``times``) to an edge or an already kept boundary.
    """
    n = len(vectors)
    times = times if times is not None else [float(i) for i in range(n)]
    if not can_split(times, min_sentences=min_sentences, min_chapter_sec=min_chapter_sec):
        return []
    depth = depth_scores(gap_similarities(vectors, window))
    threshold = depth.mean() + cutoff * depth.std()
    end_time = times[-1]
    kept: list[int] = []
    for g in np.argsort(-depth):
        if depth[g] <= threshold or depth[g] <= 0:
            break
        b = int(g) + 1  # the gap before sentence b
        edges = [0, n, *kept]
        if any(abs(b - e) < min_sentences for e in edges):
            continue
        if times[b] - times[0] < min_chapter_sec or end_time - times[b] < min_chapter_sec:
            continue
        if any(abs(times[b] - times[k]) < min_chapter_sec for k in kept):
            continue
        kept.append(b)
    return sorted(kept)


def _candidates(text: str) -> list[str]:
    """Key-phrase candidates: runs of 1-3 words with no stopword inside, lower-case."""
    out = []
    for chunk in re.split(r"[^A-Za-z'\- ]+", text):
        words = [w.strip("'-") for w in chunk.split()]
        run: list[str] = []
        for w in words + [""]:
            lw = w.lower()
            if lw and len(lw) > 2 and lw not in STOPWORDS and _WORD.fullmatch(w):
                run.append(lw)
                continue
            for k in range(len(run)):
                for m in range(1, 4):
                    if k + m <= len(run):
                        out.append(" ".join(run[k:k + m]))
            run = []
    return out


def _fold(phrase: str) -> str:
    """Singular and plural count as one phrase ("telescopes" and "telescope")."""
    return " ".join(w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w for w in phrase.split())


def key_phrases(chapter_texts: list[str], k: int = 2) -> list[list[str]]:
    """Per chapter, the ``k`` phrases most particular to it (tf-idf over chapters; a repeated phrase of
    several words beats its single words)."""
    surface = [Counter(_candidates(t)) for t in chapter_texts]
    counts = []
    for c in surface:
        folded: Counter[str] = Counter()
        for p, tf in c.items():
            folded[_fold(p)] += tf
        counts.append(folded)
    df = Counter(p for c in counts for p in c)
    n = len(counts)
    result = []
    for c, surf in zip(counts, surface):
        scored = sorted(((tf * (log((1 + n) / (1 + df[p])) + 1) * (1 + 0.5 * p.count(" ") * (tf > 1)), p)
                         for p, tf in c.items()), key=lambda x: (-x[0], x[1]))
        chosen: list[str] = []
        for _, p in scored:
            if any(set(p.split()) & set(q.split()) for q in chosen):
                continue  # no overlapping phrases in one title
            chosen.append(p)
            if len(chosen) == k:
                break
        # Shown as the form used most in the chapter.
        result.append([max((s for s in surf if _fold(s) == p), key=lambda s: surf[s]) for p in chosen])
    return result


def title_from(phrases: list[str], fallback: str) -> str:
    if not phrases:
        return fallback
    title = " and ".join(p.title() if p.islower() else p for p in phrases)
    return title if len(title) <= 60 else phrases[0].title()


def chapters_from_sentences(sentences: list[Sentence], vectors: np.ndarray, *, duration: float | None = None,
                            **tiling) -> list[dict]:
    """Podcasting 2.0 chapter objects (startTime, endTime, title) from timed sentences and their vectors."""
    if not sentences:
        return []
    bounds = find_boundaries(vectors, [s.start for s in sentences], **tiling)
    starts = [0, *bounds]
    ends = [*bounds, len(sentences)]
    texts = [" ".join(s.text for s in sentences[a:b]) for a, b in zip(starts, ends)]
    phrases = key_phrases(texts)
    total = duration or sentences[-1].end
    chapters = []
    for i, (a, b) in enumerate(zip(starts, ends)):
        start = 0.0 if i == 0 else round(sentences[a].start, 3)
        end = round(total, 3) if i == len(starts) - 1 else round(sentences[b].start, 3)
        chapters.append({"startTime": start, "endTime": end, "title": title_from(phrases[i], f"Part {i + 1}")})
    return chapters
