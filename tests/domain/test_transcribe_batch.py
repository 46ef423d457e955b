"""transcribe_many: several episodes in shared batches, with the real models."""

import time
from dataclasses import replace
from pathlib import Path

import pytest

from podinsight_dagster.demo.run import CONTENT
from podinsight_dagster.transcribe import engine as tr
from podinsight_dagster.costs.kpis import compute_kpis
from podinsight_dagster.transcribe.text import normalize_text, wer
from podinsight_dagster.transcribe.engine import (TranscribeOptions, Transcript, TranscriptionError, load_engine,
                                                  transcribe_many)

from ..conftest import TEST_MODEL

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "audio"
CLIPS = sorted(FIXTURES.glob("clip-*.mp3"))  # 14-33 s cut from the demo episodes
GERMAN = FIXTURES / "german-speech.mp3"      # espeak-ng -v de, 12 s
GERMAN_TEXT = ("Guten Tag und herzlich willkommen zu unserer Sendung. Heute sprechen wir über die Geschichte der "
               "Eisenbahn in Deutschland. Die erste Strecke wurde zwischen Nürnberg und Fürth eröffnet.")


@pytest.fixture(scope="module")
def options(model_cache):
    return TranscribeOptions(model=TEST_MODEL, model_cache=str(model_cache))


@pytest.fixture(scope="module")
def engine(options):
    return load_engine(options)


@pytest.fixture(scope="module")
def alone(engine):
    return [engine.transcribe(p) for p in CLIPS]


def _words(t: Transcript):
    return [(w.word, w.start, w.end) for s in t.segments for w in s.words]


@pytest.fixture
def batches(monkeypatch):
    """Records, for every model batch, how many episodes its chunks came from."""
    seen = []
    real = tr._run_batch

    def spy(engine, items, language):
        seen.append(len({id(ep) for ep, _ in items}))
        return real(engine, items, language)

    monkeypatch.setattr(tr, "_run_batch", spy)
    return seen


def test_clips_are_short_and_several(alone):
    assert len(CLIPS) >= 4 and all(10 <= t.duration <= 40 for t in alone)


@pytest.mark.parametrize("batch_size", [8, 2])
def test_cross_episode_batches_give_each_episode_its_own_words(options, alone, batches, batch_size):
    engine = load_engine(replace(options, batch_size=batch_size))
    together = transcribe_many(engine, CLIPS)
    assert max(batches) >= 2  # chunks of different episodes really shared batches
    for a, b in zip(alone, together):
        assert isinstance(b, Transcript)
        assert normalize_text(b.text) == normalize_text(a.text)
        assert b.text == a.text
        # Word timings too: each episode keeps its own alignment state across batches.
        assert _words(b) == _words(a)
        assert b.duration == a.duration and b.chunks == a.chunks


def test_one_bad_file_among_good_ones_fails_alone(engine, alone, tmp_path):
    corrupt = tmp_path / "corrupt.mp3"
    corrupt.write_bytes(b"ID3\x03\x00\x00\x00\x00\x00\x00" + bytes(range(256)) * 200)
    data = (CONTENT / "audio" / "history-hour" / "ep1.mp3").read_bytes()
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(data[: len(data) // 3])
    started = time.perf_counter()
    out = transcribe_many(engine, [CLIPS[0], corrupt, CLIPS[1], tmp_path / "absent.mp3", cut, CLIPS[2]])
    elapsed = time.perf_counter() - started
    errors = [o for o in out if isinstance(o, TranscriptionError)]
    assert [type(o).__name__ for o in out] == ["Transcript", "TranscriptionError", "Transcript",
                                               "TranscriptionError", "TranscriptionError", "Transcript"]
    assert "corrupt.mp3" in str(errors[0]) and "cannot decode audio" in str(errors[0])
    assert "absent.mp3" in str(errors[1]) and "truncated" in str(errors[2])
    assert [o.text for o in out if isinstance(o, Transcript)] == [a.text for a in alone[:3]]
    # Each episode's wall time is its share of the call: together they make up the whole of it.
    walls = sum(o.wall_sec for o in out if isinstance(o, Transcript))
    assert 0.5 * elapsed < walls <= elapsed + 0.05
    assert all(o.realtime_factor > 1 for o in out if isinstance(o, Transcript))


def test_storage_openers_are_accepted_and_closed(engine):
    import contextlib

    opened, closed = [], []

    @contextlib.contextmanager
    def opener(path):
        opened.append(path)
        yield path
        closed.append(path)

    out = transcribe_many(engine, [lambda p=p: opener(p) for p in CLIPS[:2]])
    assert all(isinstance(o, Transcript) for o in out) and opened == closed == CLIPS[:2]


def test_german_on_an_english_only_model_is_flagged(engine):
    t = engine.transcribe(GERMAN)
    assert t.language == "en"  # all an English-only model can say
    k = compute_kpis(t)
    assert k["language_mismatch"] is True and k["language_check"] == "heuristic"
    assert k["suspected_hallucination"] is True  # what it made of the German is a decoder loop


def test_base_transcribes_german_in_german_and_checks_tiny_en(options, model_cache):
    base = load_engine(TranscribeOptions(model="base", model_cache=str(model_cache)))
    t = base.transcribe(GERMAN)
    assert t.language == "de" and t.language_probability > 0.5
    assert wer(GERMAN_TEXT, t.text) <= 0.35, t.text
    assert t.language_mismatch is None  # a multilingual model detects; nothing to flag
    # base as the language check of an English-only model: detection instead of the heuristic.
    checked = load_engine(replace(options, language_check_model="base"))
    out = transcribe_many(checked, [GERMAN, CLIPS[0]])
    assert (out[0].detected_language, out[0].language_mismatch, out[0].language_check) == ("de", True, "detected")
    assert (out[1].detected_language, out[1].language_mismatch) == ("en", False)
