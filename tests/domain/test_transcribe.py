"""The real faster-whisper tiny.en model on the bundled speech."""

import wave

import numpy as np
import pytest

from podinsight_dagster.demo.run import CONTENT
from podinsight_dagster.domain.text import wer
from podinsight_dagster.domain.transcribe import TranscribeOptions, TranscriptionError, load_engine

from ..conftest import TEST_MODEL, reference


@pytest.fixture(scope="module")
def engine(model_cache):
    return load_engine(TranscribeOptions(model=TEST_MODEL, model_cache=str(model_cache)))


@pytest.mark.parametrize("feed, ep", [("tech-talk", "ep1"), ("history-hour", "ep2"), ("science-weekly", "ep3")])
def test_tiny_en_transcribes_speech_within_wer_budget(engine, feed, ep):
    t = engine.transcribe(CONTENT / "audio" / feed / f"{ep}.mp3")
    assert wer(reference(feed, ep), t.text) <= 0.20
    assert t.language == "en" and 40 < t.duration < 60
    assert t.realtime_factor > 1
    starts = [s.start for s in t.segments]
    assert starts == sorted(starts)
    assert all(0 <= s.start <= s.end <= t.duration for s in t.segments)
    assert all(s.words for s in t.segments)
    assert 0 < t.speech_duration <= t.duration


def _wav(path, samples):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((samples * 32767).astype("<i2").tobytes())


def test_silence_and_noise_give_no_words(engine, tmp_path):
    _wav(tmp_path / "silence.wav", np.zeros(16000 * 20))
    t = engine.transcribe(tmp_path / "silence.wav")
    assert t.text == "" and t.segments == []
    rng = np.random.default_rng(7)
    _wav(tmp_path / "hiss.wav", rng.normal(0, 0.003, 16000 * 10))
    assert engine.transcribe(tmp_path / "hiss.wav").text == ""


def test_corrupt_and_empty_audio_fail_clearly(engine, tmp_path):
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(b"<html>Not audio</html>" * 100)
    with pytest.raises(TranscriptionError, match="cannot decode audio"):
        engine.transcribe(bad)
    empty = tmp_path / "empty.mp3"
    empty.write_bytes(b"")
    with pytest.raises(TranscriptionError, match="cannot decode audio"):
        engine.transcribe(empty)
