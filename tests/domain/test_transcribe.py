"""The real faster-whisper tiny.en model on the bundled speech, one episode at a time."""

import wave

import numpy as np
import pytest
import srt
import webvtt

from podinsight_dagster.demo.run import CONTENT
from podinsight_dagster.costs.kpis import compute_kpis
from podinsight_dagster.transcribe.subtitles import MAX_LINE, build_cues, to_srt, to_vtt
from podinsight_dagster.transcribe.text import normalize_text, wer
from podinsight_dagster.transcribe.batching import transcribe_one
from podinsight_dagster.transcribe.engine import load_engine
from podinsight_dagster.transcribe.options import TranscribeOptions, TranscriptionError

from ..conftest import TEST_MODEL, reference


@pytest.fixture(scope="module")
def engine(model_cache):
    return load_engine(TranscribeOptions(model=TEST_MODEL, model_cache=str(model_cache)))


@pytest.mark.parametrize("feed, ep", [("tech-talk", "ep1"), ("history-hour", "ep2"), ("science-weekly", "ep3")])
def test_tiny_en_transcribes_speech_within_wer_budget(engine, feed, ep, tmp_path):
    t = transcribe_one(engine, CONTENT / "audio" / feed / f"{ep}.mp3")
    assert wer(reference(feed, ep), t.text) <= 0.20
    assert t.language == "en" and 40 < t.duration < 60
    assert isinstance(t.wall_sec, float) and t.wall_sec > 0 and t.realtime_factor > 0  # measured, not a speed
    starts = [s.start for s in t.segments]
    assert starts == sorted(starts)
    assert all(0 <= s.start <= s.end <= t.duration for s in t.segments)
    words = [w for s in t.segments for w in s.words]
    assert all(s.words for s in t.segments)
    assert all(0 <= w.start <= w.end <= t.duration + 0.5 for w in words)
    assert [w.start for w in words] == sorted(w.start for w in words)
    assert 0 < t.speech_duration <= t.duration and 0 < t.vad_speech_duration <= t.duration
    # Confident English: the heuristic passes it (it flags, or marks unreliable, only doubtful output).
    assert t.language_mismatch is False and t.language_check == "heuristic" and t.unreliable_reason is None
    # Subtitles from the real transcript parse back, lines within limits, nothing lost.
    cues = build_cues(t.segments)
    assert all(len(line) <= MAX_LINE for c in cues for line in c.lines)
    (tmp_path / "t.vtt").write_text(to_vtt(cues))
    vtt = webvtt.read(str(tmp_path / "t.vtt"))
    subs = list(srt.parse(to_srt(cues)))
    assert len(vtt) == len(subs) == len(cues) > 3
    assert normalize_text(" ".join(s.content for s in subs)) == normalize_text(t.text)
    assert all(a.end <= b.start for a, b in zip(subs, subs[1:]))
    assert subs[-1].end.total_seconds() <= t.duration + 0.5
    k = compute_kpis(t)
    assert 100 < k["words_per_minute"] < 250 and k["suspected_hallucination"] is False
    assert k["model"] == TEST_MODEL and k["source"] == "asr" and k["cost_usd"] > 0


def _wav(path, samples):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((samples * 32767).astype("<i2").tobytes())


def test_silence_noise_and_music_give_no_words(engine, tmp_path):
    _wav(tmp_path / "silence.wav", np.zeros(16000 * 20))
    t = transcribe_one(engine, tmp_path / "silence.wav")
    assert t.text == "" and t.segments == [] and t.chunks == 0
    assert compute_kpis(t)["words"] == 0
    rng = np.random.default_rng(7)
    _wav(tmp_path / "hiss.wav", rng.normal(0, 0.003, 16000 * 10))
    _wav(tmp_path / "loud-noise.wav", np.clip(rng.normal(0, 0.2, 16000 * 10), -1, 1))
    time = np.arange(16000 * 15) / 16000
    chords = sum(np.sin(2 * np.pi * f * time) for f in (220, 277, 330)) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * time)) / 4
    _wav(tmp_path / "chords.wav", chords)
    for name in ("hiss.wav", "loud-noise.wav", "chords.wav"):
        assert transcribe_one(engine, tmp_path / name).text == "", name


def test_silence_guard_without_vad(model_cache, tmp_path):
    # Without VAD the model sees the silence itself; its own no-speech verdict keeps "you" & co out.
    engine = load_engine(TranscribeOptions(model=TEST_MODEL, model_cache=str(model_cache), vad_filter=False))
    _wav(tmp_path / "silence.wav", np.zeros(16000 * 20))
    t = transcribe_one(engine, tmp_path / "silence.wav")
    assert t.text == "" and t.chunks == 1 and t.dropped_chunks == 1


def test_corrupt_empty_and_truncated_audio_fail_clearly(engine, tmp_path):
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(b"<html>Not audio</html>" * 100)
    with pytest.raises(TranscriptionError, match="cannot decode audio"):
        transcribe_one(engine, bad)
    empty = tmp_path / "empty.mp3"
    empty.write_bytes(b"")
    with pytest.raises(TranscriptionError, match="cannot decode audio"):
        transcribe_one(engine, empty)
    # The demo MP3s carry a LAME Info header (their frame count): a cut file is caught.
    data = (CONTENT / "audio" / "tech-talk" / "ep1.mp3").read_bytes()
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(TranscriptionError, match="truncated"):
        transcribe_one(engine, cut)
    with pytest.raises(TranscriptionError, match="cannot decode audio"):
        transcribe_one(engine, tmp_path / "missing.mp3")
