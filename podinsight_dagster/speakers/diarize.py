"""Diarize a transcript: one voice embedding per ASR segment, clustered into speakers."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from podinsight_dagster.speakers.cluster import cluster_speakers
from podinsight_dagster.speakers.encoder import METHOD as ENCODER_METHOD, VoiceEncoder, load_encoder
from podinsight_dagster.transcribe.options import Transcript

CLUSTERING = "agglomerative-silhouette-kmeans-1"
# The diarization asset's code version: changing the encoder or the clustering re-runs only it
# (and what reads its labels).
VERSION = f"{ENCODER_METHOD}+{CLUSTERING}"


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


def diarize(transcript: Transcript, audio: np.ndarray, num_speakers: int | None = None,
            encoder: VoiceEncoder | None = None) -> Diarization:
    """Speaker labels for ``transcript``'s segments from ``audio`` (16 kHz mono float32)."""
    started = time.perf_counter()
    spans = [(s.start, s.end) for s in transcript.segments]
    if not spans:
        return Diarization([], np.zeros((0, 0)), [], num_speakers is None, time.perf_counter() - started)
    encoder = encoder or load_encoder()
    emb = encoder.embed_spans(audio, spans)
    weights = np.array([max(e - s, 0.0) for s, e in spans])
    result = cluster_speakers(emb, weights, num_speakers=num_speakers)
    k = int(result.labels.max()) + 1
    talk = [round(float(weights[result.labels == c].sum()), 3) for c in range(k)]
    return Diarization([int(x) for x in result.labels], result.centroids, talk, result.estimated,
                       round(time.perf_counter() - started, 3))
