"""Multi-speaker test episodes synthesised at test time (espeak-ng and festival voices) with their true turns.

Each sentence is synthesised on its own, so the truth is exact: every sentence's span (a
stand-in for one ASR segment) and every turn's speaker. Turns hold whole sentences and last
2-20 s; the sentences come from the demo's scripts. Needs ``espeak-ng``, ``festival``
(``text2wave``, voices kal/ked diphone and cmu_us_slt_arctic_hts) and ``ffmpeg``; ``make test``
installs them. Synthesised sentences are cached by voice and text under the cache folder.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
import subprocess
import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SR = 16000
TEXTS = Path(__file__).resolve().parents[2] / "podinsight_dagster" / "demo" / "content" / "texts"

# (engine, voice). festival's voices are diphone / HTS voices built from recordings of real people.
ESPEAK_VOICES = [("espeak", "en-us+m3"), ("espeak", "en-gb+f3"), ("espeak", "en-gb-scotland+m1"), ("espeak", "en-us+f4")]
FESTIVAL_VOICES = [("festival", "kal_diphone"), ("festival", "cmu_us_slt_arctic_hts"), ("festival", "ked_diphone")]


def tools_missing() -> list[str]:
    return [t for t in ("espeak-ng", "text2wave", "ffmpeg") if shutil.which(t) is None]


def sentences() -> list[str]:
    out: list[str] = []
    for path in sorted(TEXTS.glob("*/*.txt")):
        out += [s.strip() for s in re.split(r"(?<=[.!?])\s+", path.read_text()) if len(s.split()) >= 4]
    return out


def _read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float32) / 32768.0


def synth(engine: str, voice: str, text: str, cache: Path) -> np.ndarray:
    """16 kHz mono float32 speech of ``text`` in ``voice``, leading and trailing silence trimmed."""
    cache.mkdir(parents=True, exist_ok=True)
    out = cache / (hashlib.sha256(f"{engine}|{voice}|{text}".encode()).hexdigest()[:24] + ".wav")
    if not out.exists():
        raw = out.with_suffix(".raw.wav")
        if engine == "espeak":
            subprocess.run(["espeak-ng", "-v", voice, "-s", "160", "-w", str(raw), text], check=True,
                           capture_output=True)
        else:
            txt = out.with_suffix(".txt")
            txt.write_text(text)
            subprocess.run(["text2wave", "-eval", f"(voice_{voice})", str(txt), "-o", str(raw)], check=True,
                           capture_output=True)
            txt.unlink()
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(raw), "-ac", "1", "-ar", str(SR),
                        "-af", "silenceremove=start_periods=1:start_threshold=-45dB,areverse,"
                               "silenceremove=start_periods=1:start_threshold=-45dB,areverse",
                        str(out)], check=True)
        raw.unlink()
    audio = _read_wav(out)
    peak = float(np.abs(audio).max()) or 1.0
    return audio * (0.5 / peak)   # every voice at the same level: loudness must not give speakers away


@dataclass
class Episode:
    audio: np.ndarray
    voices: list[tuple[str, str]]
    sentences: list[tuple[float, float, int, str]] = field(default_factory=list)  # start, end, speaker, text
    turns: list[tuple[float, float, int]] = field(default_factory=list)            # start, end, speaker

    @property
    def duration(self) -> float:
        return len(self.audio) / SR

    def write_wav(self, path: Path) -> Path:
        pcm = (np.clip(self.audio, -1, 1) * 32767).astype(np.int16)
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(SR)
            w.writeframes(pcm.tobytes())
        return path

    def write_mp3(self, path: Path) -> Path:
        wav = self.write_wav(path.with_suffix(".wav"))
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(wav), "-ac", "1", "-ar", "16000",
                        "-b:a", "32k", str(path)], check=True)
        wav.unlink()
        return path

    def truth_json(self) -> str:
        return json.dumps({"voices": self.voices, "turns": self.turns, "sentences": self.sentences})


def make_episode(voices: list[tuple[str, str]], seconds: float, cache: Path, seed: int = 0,
                 turn_range: tuple[float, float] = (2.0, 20.0)) -> Episode:
    """About ``seconds`` of conversation between ``voices``: turns of ``turn_range`` seconds, no two
    consecutive turns by the same voice, every voice speaking; 0.3 s between sentences, 0.6 s between turns."""
    rng = random.Random(seed)
    pool = sentences()
    rng.shuffle(pool)
    parts: list[np.ndarray] = []
    ep = Episode(np.zeros(0, dtype=np.float32), voices)
    t, k, prev = 0.0, 0, -1
    order = list(range(len(voices)))
    rng.shuffle(order)
    turn_no = 0
    while t < seconds or turn_no < len(voices):
        others = [i for i in range(len(voices)) if i != prev] or [0]
        spk = order[turn_no] if turn_no < len(voices) else rng.choice(others)
        target = rng.uniform(*turn_range)
        start, spoken = t, 0.0
        while spoken < turn_range[0] or spoken < target:
            text = pool[k % len(pool)]
            k += 1
            audio = synth(*voices[spk], text, cache)
            if spoken and spoken + len(audio) / SR > turn_range[1]:
                break
            if spoken:
                parts.append(np.zeros(int(0.3 * SR), dtype=np.float32))
                t += 0.3
            parts.append(audio)
            ep.sentences.append((round(t, 3), round(t + len(audio) / SR, 3), spk, text))
            t += len(audio) / SR
            spoken = t - start
        ep.turns.append((round(start, 3), round(t, 3), spk))
        parts.append(np.zeros(int(0.6 * SR), dtype=np.float32))
        t += 0.6
        prev = spk
        turn_no += 1
    ep.audio = np.concatenate(parts)
    return ep


def make_overlap_episode(voices: list[tuple[str, str]], script: list[tuple[int, str, float]], cache: Path,
                         gap: float = 0.6) -> Episode:
    """An episode of ``(voice index, sentence, overlap seconds)`` lines, one after another ``gap`` s apart,
    except that a line with overlap > 0 starts that many seconds before the previous line ends (the two
    voices summed: people talking over each other). ``overlapped_spans`` gives the true overlapped time."""
    ep = Episode(np.zeros(0, dtype=np.float32), voices)
    placed: list[tuple[float, np.ndarray]] = []
    t = 0.0
    for spk, text, overlap in script:
        audio = synth(*voices[spk], text, cache)
        start = max(0.0, t - overlap) if overlap > 0 and placed else t + (gap if placed else 0.0)
        placed.append((start, audio))
        ep.sentences.append((round(start, 3), round(start + len(audio) / SR, 3), spk, text))
        ep.turns.append((round(start, 3), round(start + len(audio) / SR, 3), spk))
        t = max(t, start + len(audio) / SR)
    out = np.zeros(int(round((t + 0.5) * SR)), dtype=np.float32)
    for start, audio in placed:
        a = int(round(start * SR))
        out[a:a + len(audio)] += audio
    ep.audio = out
    return ep


def overlapped_spans(ep: Episode) -> list[tuple[float, float]]:
    """Where two or more of ``ep``'s sentences sound at once."""
    spans = sorted((s, e) for s, e, _, _ in ep.sentences)
    out: list[tuple[float, float]] = []
    for i, (s1, e1) in enumerate(spans):
        for s2, e2 in spans[i + 1:]:
            if s2 < e1:
                out.append((s2, min(e1, e2)))
    return out
