"""Speaker clustering of per-segment voice embeddings: agglomerative, then k-means refinement; the count estimated or given."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_SPEAKERS = 8
# Two clusters whose mean voices (uncentred, cosine) are closer than this are one speaker.
# Measured on the generated test set (docs/BENCHMARKS.md): one voice split in two stays above
# 0.97; the closest two different voices (espeak's en-us+m3 and en-gb+f3) are at about 0.93.
SAME_SPEAKER_SIMILARITY = 0.955
# A cluster this small (under 3 segments or 8 % of the speech) has a noisy mean voice: it joins its
# nearest cluster when they are at least this similar (one espeak voice's stray pair: 0.93).
SMALL_CLUSTER_SIMILARITY = 0.90
SMALL_CLUSTER_SEGMENTS = 3
SMALL_CLUSTER_SHARE = 0.08
REFINE_ITERATIONS = 10
# One voice unless some split separates the voices at least this well (mean silhouette, centred embeddings).
# Measured: single-voice demo episodes 0.10-0.19 at their best split (history-hour's 24 kbit/s alternate 0.18,
# whose halves' mean voices are 0.935 alike, below SAME_SPEAKER_SIMILARITY, so the merge alone kept two);
# the generated multi-voice episodes 0.40 (espeak's two closest voices) to 0.90, the demo dialogue 0.88.
MIN_SPLIT_SILHOUETTE = 0.3


@dataclass
class Clustering:
    labels: np.ndarray          # (n,) cluster per segment, 0..k-1 in order of first appearance
    centroids: np.ndarray       # (k, dim) L2-normalised mean voice of each cluster (uncentred)
    estimated: bool             # the count was estimated (not given)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / (np.linalg.norm(x, axis=-1, keepdims=True) + 1e-12)


def _agglomerate(x: np.ndarray, k: int) -> np.ndarray:
    from scipy.cluster.hierarchy import fcluster, linkage

    if len(x) <= k:
        return np.arange(len(x))
    z = linkage(x, method="average", metric="cosine")
    return fcluster(z, t=k, criterion="maxclust") - 1


def _refine(x: np.ndarray, w: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Weighted spherical k-means from the agglomerative start: long segments weigh more."""
    for _ in range(REFINE_ITERATIONS):
        cents = np.stack([_unit((x[labels == c] * w[labels == c, None]).sum(0)) if np.any(labels == c)
                          else np.zeros(x.shape[1]) for c in range(k)])
        new = np.argmax(x @ cents.T, axis=1)
        if np.array_equal(new, labels):
            break
        labels = new
    return labels


def _centroids(raw: np.ndarray, w: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    return np.stack([_unit((raw[labels == c] * w[labels == c, None]).sum(0)) for c in range(k)])


def _silhouette(x: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette (cosine distance), vectorised per cluster: the count is estimated on every episode
    now (issue 18), where it used to be forced to the feed's people, so this runs for 2..8 clusters each time."""
    d = 1.0 - x @ x.T
    ks = sorted(set(labels.tolist()))
    onehot = (labels[:, None] == np.asarray(ks)[None, :]).astype(d.dtype)      # (n, k)
    sizes = onehot.sum(0)
    sums = d @ onehot                                                        # (n, k) distance to each cluster
    own = np.searchsorted(ks, labels)
    rows = np.arange(len(x))
    own_size = sizes[own]
    a = np.where(own_size > 1, sums[rows, own] / np.maximum(own_size - 1, 1), 0.0)
    means = sums / sizes[None, :]
    means[rows, own] = np.inf
    b = means.min(1)
    score = np.where(own_size > 1, (b - a) / np.maximum(np.maximum(a, b), 1e-12), 0.0)
    return float(np.mean(score))


def _ordered(labels: np.ndarray) -> np.ndarray:
    order: dict[int, int] = {}
    for lab in labels.tolist():
        order.setdefault(lab, len(order))
    return np.array([order[lab] for lab in labels.tolist()], dtype=int)


def _fit(raw: np.ndarray, centred: np.ndarray, w: np.ndarray, k: int) -> np.ndarray:
    labels = _refine(centred, w, _agglomerate(centred, k), k)
    return labels


def cluster_speakers(embeddings: np.ndarray, weights: np.ndarray | None = None, num_speakers: int | None = None,
                     max_speakers: int = MAX_SPEAKERS) -> Clustering:
    """Label each embedding with a speaker.

    ``num_speakers`` forces the count; otherwise it is estimated: the best silhouette for 2..max
    clusters on embeddings centred on the episode's mean voice (which removes what all voices of
    the recording share: channel, codec, synthesiser), one voice when even the best is under
    ``MIN_SPLIT_SILHOUETTE``, then clusters whose mean voices are as close as one voice's halves
    are merged (``SAME_SPEAKER_SIMILARITY``).
    """
    raw = _unit(np.asarray(embeddings, dtype=np.float32))
    n = len(raw)
    w = np.ones(n) if weights is None else np.maximum(np.asarray(weights, dtype=float), 1e-3)
    if n == 0:
        return Clustering(np.zeros(0, dtype=int), np.zeros((0, raw.shape[1] if raw.ndim == 2 else 0)),
                          num_speakers is None)
    centred = _unit(raw - (raw * w[:, None]).sum(0) / w.sum())
    if num_speakers is not None:
        k = max(1, min(num_speakers, n))
        labels = _fit(raw, centred, w, k) if k > 1 else np.zeros(n, dtype=int)
        labels = _ordered(labels)
        return Clustering(labels, _centroids(raw, w, labels, labels.max() + 1), False)
    if n < 3:
        labels = np.zeros(n, dtype=int)
    else:
        best, labels = -1.0, np.zeros(n, dtype=int)
        for k in range(2, min(max_speakers, n - 1) + 1):
            cand = _fit(raw, centred, w, k)
            if len(set(cand.tolist())) < k:
                continue
            score = _silhouette(centred, cand)
            if score > best:
                best, labels = score, cand
        if best < MIN_SPLIT_SILHOUETTE:
            labels = np.zeros(n, dtype=int)
        labels = _merge_close(raw, w, _ordered(labels))
    labels = _ordered(labels)
    return Clustering(labels, _centroids(raw, w, labels, labels.max() + 1), True)


def _merge_close(raw: np.ndarray, w: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Merge the two clusters with the closest mean voices while they are closer than one voice's halves."""
    while labels.max() > 0:
        k = labels.max() + 1
        cents = _centroids(raw, w, labels, k)
        sim = cents @ cents.T
        np.fill_diagonal(sim, -1.0)
        i, j = np.unravel_index(np.argmax(sim), sim.shape)
        if sim[i, j] < SAME_SPEAKER_SIMILARITY:
            small = [c for c in range(k) if (labels == c).sum() < SMALL_CLUSTER_SEGMENTS
                     or w[labels == c].sum() < SMALL_CLUSTER_SHARE * w.sum()]
            near = [(sim[c].max(), c, int(np.argmax(sim[c]))) for c in small]
            if not near or max(near)[0] < SMALL_CLUSTER_SIMILARITY:
                break
            _, i, j = max(near)
        labels = _ordered(np.where(labels == max(i, j), min(i, j), labels))
    return labels


def centroid_similarities(embeddings: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(k, k) cosine similarities of the clusters' mean voices (for the benchmark and the tests)."""
    raw = _unit(np.asarray(embeddings, dtype=np.float32))
    cents = _centroids(raw, np.ones(len(raw)), labels, labels.max() + 1)
    return cents @ cents.T
