"""Audio in: opening an episode's source, decoding it to 16 kHz mono, catching corrupt and truncated files."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import ContextManager

import numpy as np

from podinsight_dagster.transcribe.options import SAMPLE_RATE, TRUNCATION_TOLERANCE, AudioSource, TranscriptionError
from podinsight_dagster.transcribe.whisper_internals import resampled_frames


def open_source(source: AudioSource) -> ContextManager[Path]:
    """A context manager yielding the source's local path (a plain path, or the source's own opener)."""
    return source() if callable(source) else contextlib.nullcontext(Path(source))


def describe_source(source: AudioSource) -> str:
    """A source's name for error messages."""
    if not callable(source):
        return str(source)
    if type(source).__str__ is not object.__str__:
        return str(source)
    return getattr(source, "__name__", None) or repr(source)


def _mp3_declares_length(path: Path) -> bool:
    """Whether an MP3 carries a Xing/Info/VBRI frame count (else its duration is a bitrate guess)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(10)
            offset = 0
            if head[:3] == b"ID3" and len(head) == 10:
                size = (head[6] & 0x7F) << 21 | (head[7] & 0x7F) << 14 | (head[8] & 0x7F) << 7 | (head[9] & 0x7F)
                offset = 10 + size + (10 if head[5] & 0x10 else 0)
            fh.seek(offset)
            block = fh.read(8192)
    except OSError:
        return False
    for i in range(len(block) - 1):
        if block[i] == 0xFF and (block[i + 1] & 0xE0) == 0xE0:
            frame = block[i:i + 200]
            return b"Xing" in frame or b"Info" in frame or b"VBRI" in frame
    return False


def decode(path: Path) -> np.ndarray:
    """16 kHz mono float32 samples, as faster_whisper.audio.decode_audio gives them, with checks.

    Raises TranscriptionError for a file PyAV cannot open, one with no audio, one whose
    frames are mostly undecodable, or one that decodes to clearly less than the length
    its container declares (a truncated download). MP3 and ADTS files without a frame
    count header only have a bitrate estimate of their length, which is not checked.
    """
    import av

    path = Path(path)
    declared: float | None = None
    stats = {"frames": 0, "invalid": 0}

    def counted(frames):
        it = iter(frames)
        while True:
            try:
                frame = next(it)
            except StopIteration:
                return
            except av.error.InvalidDataError:
                stats["invalid"] += 1
                if stats["invalid"] > 50 and stats["invalid"] > stats["frames"]:
                    raise
                continue
            stats["frames"] += 1
            yield frame

    try:
        resampler = av.audio.resampler.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        parts: list[np.ndarray] = []
        with av.open(str(path), mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise TranscriptionError(f"cannot decode audio {path}: the file has no audio stream")
            fmt = container.format.name or ""
            trusted = fmt != "aac" and (fmt != "mp3" or _mp3_declares_length(path))
            if trusted and container.duration:
                declared = container.duration / 1_000_000
            frames = resampled_frames(counted(container.decode(audio=0)), resampler)
            for frame in frames:
                parts.append(frame.to_ndarray().reshape(-1))
        # decode_audio runs gc.collect() here against a resampler leak of old PyAV versions
        # (faster-whisper #390); PyAV 12+ frees it, and a full collection in a big process
        # (Dagster's: ~65 ms) holds the GIL the inference thread needs.
        del resampler
    except TranscriptionError:
        raise
    except Exception as exc:  # noqa: BLE001 - PyAV raises many types for bad input
        raise TranscriptionError(f"cannot decode audio {path}: {type(exc).__name__}: {exc}") from exc
    samples = np.concatenate(parts) if parts else np.zeros(0, np.int16)
    del parts
    audio = samples.astype(np.float32)
    del samples
    audio /= 32768.0
    if audio.size == 0:
        raise TranscriptionError(f"cannot decode audio {path}: no samples (empty or truncated file)")
    if stats["invalid"] > max(3, 0.05 * stats["frames"]):
        raise TranscriptionError(f"cannot decode audio {path}: {stats['invalid']} of "
                                 f"{stats['invalid'] + stats['frames']} frames are corrupt")
    got = audio.size / SAMPLE_RATE
    frac, slack = TRUNCATION_TOLERANCE
    if declared and got < declared * frac - slack:
        raise TranscriptionError(f"cannot decode audio {path}: truncated: it decodes to {got:.1f} s "
                                 f"but its header declares {declared:.1f} s")
    return audio



class DecodedAudio:
    """Episodes' decoded samples kept for the next step of the same process (diarization reads them again).

    Held as int16 (exact: ``decode`` makes float32 from int16 / 32768) and bounded in bytes, oldest
    dropped first; ``take`` hands an episode's samples over once and forgets them. Keys name the
    object and its size, so a replaced download is decoded afresh.
    """

    def __init__(self, max_bytes: int):
        import threading
        from collections import OrderedDict

        self.max_bytes = max_bytes
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def put(self, key: str, audio: np.ndarray) -> None:
        samples = np.round(audio * 32768.0).clip(-32768, 32767).astype(np.int16)
        if samples.nbytes > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            self._bytes -= old.nbytes if old is not None else 0
            self._items[key] = samples
            self._bytes += samples.nbytes
            while self._bytes > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= dropped.nbytes

    def peek(self, key: str) -> np.ndarray | None:
        """The episode's samples (a float32 copy), kept for ``take``; None when not kept."""
        with self._lock:
            samples = self._items.get(key)
        if samples is None:
            return None
        audio = samples.astype(np.float32)
        audio /= 32768.0
        return audio

    def take(self, key: str) -> np.ndarray | None:
        with self._lock:
            samples = self._items.pop(key, None)
            if samples is None:
                return None
            self._bytes -= samples.nbytes
        audio = samples.astype(np.float32)
        audio /= 32768.0
        return audio


# 128 MB of int16: about 70 minutes of audio (a run of short episodes, or the last of long ones).
DECODED = DecodedAudio(128 << 20)
