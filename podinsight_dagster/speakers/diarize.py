"""Diarize a transcript: one voice embedding per ASR segment, clustered into speakers."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from podinsight_dagster.speakers.cluster import cluster_speakers
from podinsight_dagster.speakers.encoder import METHOD as ENCODER_METHOD, VoiceEncoder, load_encoder
from podinsight_dagster.speakers.overlap import METHOD as OVERLAP_METHOD
from podinsight_dagster.transcribe.options import Transcript

CLUSTERING = "agglomerative-silhouette0.3-kmeans-2"
# The diarization asset's code version: changing the encoder, the clustering or the overlap test re-runs
# only it (and what reads its labels).
VERSION = f"{ENCODER_METHOD}+{CLUSTERING}+{OVERLAP_METHOD}"


@dataclass
class Diarization:
    labels: list[int]               # cluster per transcript segment, 0..k-1 in order of first speech
    centroids: np.ndarray           # (k, dim) mean voice per cluster
    talk_sec: list[float]           # speech seconds per cluster
    estimated: bool                 # the number of speakers was estimated, not given
    wall_sec: float
    method: str = VERSION

    @property
    def num_speakers(self) -> int:
        return len(self.talk_sec)


def embed_segments(transcript: Transcript, audio: np.ndarray, encoder: VoiceEncoder | None = None) -> np.ndarray:
    """One voice embedding per transcript segment (the costly part: the ONNX encoder)."""
    spans = [(s.start, s.end) for s in transcript.segments]
    return (encoder or load_encoder()).embed_spans(audio, spans)


def diarize(transcript: Transcript, audio: np.ndarray | None, num_speakers: int | None = None,
            encoder: VoiceEncoder | None = None, *, emb: np.ndarray | None = None,
            embed_sec: float = 0.0, max_speakers: int | None = None) -> Diarization:
    """Speaker labels for ``transcript``'s segments from ``audio`` (16 kHz mono float32).

    ``num_speakers`` forces the count; otherwise it is estimated from the voices, at most
    ``max_speakers`` (an upper bound, e.g. the people a feed lists: never a quota).

    ``emb``: the segments' embeddings when already computed (``embed_segments``, ``embed_sec`` long),
    in which case ``audio`` is not read.
    """
    started = time.perf_counter() - embed_sec
    spans = [(s.start, s.end) for s in transcript.segments]
    if not spans:
        return Diarization([], np.zeros((0, 0)), [], num_speakers is None, time.perf_counter() - started)
    if emb is None:
        emb = embed_segments(transcript, audio, encoder)
    weights = np.array([max(e - s, 0.0) for s, e in spans])
    bound = {"max_speakers": max(1, max_speakers)} if max_speakers else {}
    result = cluster_speakers(emb, weights, num_speakers=num_speakers, **bound)
    k = int(result.labels.max()) + 1
    talk = [round(float(weights[result.labels == c].sum()), 3) for c in range(k)]
    return Diarization([int(x) for x in result.labels], result.centroids, talk, result.estimated,
                       round(time.perf_counter() - started, 3))
