"""The faster-whisper internals whisper_internals relies on: present, same signatures, same behaviour on tiny input.

An upgrade of faster-whisper that renames or reshapes one of them fails here, naming
the version, rather than breaking transcription at run time.
"""

from __future__ import annotations

import inspect
import re

import numpy as np
import pytest

import faster_whisper
from faster_whisper import WhisperModel
from faster_whisper import audio as fw_audio

from podinsight_dagster.transcribe import whisper_internals as wi
from podinsight_dagster.transcribe.engine import load_engine
from podinsight_dagster.transcribe.options import TranscribeOptions

from ..conftest import TEST_MODEL

VERSION = f"faster-whisper {faster_whisper.__version__}"

# What we call, with the parameters we pass (by name or position), in order.
EXPECTED = {
    "faster_whisper.audio._group_frames": (lambda: fw_audio._group_frames, ["frames", "num_samples"]),
    "faster_whisper.audio._resample_frames": (lambda: fw_audio._resample_frames, ["frames", "resampler"]),
    "WhisperModel._split_segments_by_timestamps": (
        lambda: WhisperModel._split_segments_by_timestamps,
        ["self", "tokenizer", "tokens", "time_offset", "segment_size", "segment_duration", "seek"]),
    "WhisperModel.add_word_timestamps": (
        lambda: WhisperModel.add_word_timestamps,
        ["self", "segments", "tokenizer", "encoder_output", "num_frames", "prepend_punctuations",
         "append_punctuations", "last_speech_timestamp"]),
    # The stand-in replaces this one: add_word_timestamps calls it as self.find_alignment(...).
    "WhisperModel.find_alignment": (
        lambda: WhisperModel.find_alignment,
        ["self", "tokenizer", "text_tokens", "encoder_output", "num_frames", "median_filter_width"]),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_internal_exists_with_the_signature_we_call(name):
    get, params = EXPECTED[name]
    try:
        fn = get()
    except AttributeError as exc:
        pytest.fail(f"{VERSION}: {name} is gone ({exc}); podinsight_dagster/transcribe/whisper_internals.py "
                    "relies on it and must be adapted")
    got = list(inspect.signature(fn).parameters)
    assert got == params, (f"{VERSION}: {name} changed its signature: expected ({', '.join(params)}), "
                           f"found ({', '.join(got)}); adapt podinsight_dagster/transcribe/whisper_internals.py")


def test_add_word_timestamps_uses_only_what_the_stand_in_offers():
    """The stand-in alignment object has frames_per_second and find_alignment, nothing else of the model."""
    used = set(re.findall(r"\bself\.(\w+)", inspect.getsource(WhisperModel.add_word_timestamps)))
    offered = {"frames_per_second", "find_alignment"}
    assert used <= offered, (f"{VERSION}: WhisperModel.add_word_timestamps now uses self.{sorted(used - offered)}, "
                             "which whisper_internals._PrecomputedAlignment does not provide")


def test_resampled_frames_gives_16k_mono_s16():
    av = pytest.importorskip("av")
    rate = 44100
    tone = (np.sin(2 * np.pi * 440 * np.arange(rate) / rate) * 10000).astype(np.int16)  # 1 s
    frames = []
    for start in range(0, tone.size, 1024):
        frame = av.AudioFrame.from_ndarray(tone[None, start:start + 1024], format="s16", layout="mono")
        frame.sample_rate = rate
        frames.append(frame)
    resampler = av.audio.resampler.AudioResampler(format="s16", layout="mono", rate=16000)
    out = list(wi.resampled_frames(iter(frames), resampler))
    samples = np.concatenate([f.to_ndarray().reshape(-1) for f in out])
    assert out and all(f.sample_rate == 16000 for f in out), VERSION
    assert samples.dtype == np.int16 and abs(samples.size - 16000) <= 400, (VERSION, samples.size)


@pytest.fixture(scope="module")
def engine(model_cache):
    return load_engine(TranscribeOptions(model=TEST_MODEL, model_cache=str(model_cache)))


def test_split_segments_and_place_words_on_tiny_input(engine):
    model = engine.model
    tokenizer, opts = engine.decoding("en")
    tokens = tokenizer.encode(" Hello world.") + [tokenizer.eot]
    size = 2 * model.frames_per_second
    subsegments = wi.split_segments_by_timestamps(model, tokenizer, tokens, time_offset=1.0, segment_size=size,
                                                  segment_duration=2.0)
    assert isinstance(subsegments, list) and len(subsegments) == 1, (VERSION, subsegments)
    sub = subsegments[0]
    assert {"start", "end", "tokens"} <= set(sub), (VERSION, sub)
    assert sub["start"] == 1.0 and sub["end"] == 3.0 and tokenizer.decode(sub["tokens"]).strip() == "Hello world."

    # One chunk, its alignment made up (as find_alignment returns it): words placed, punctuation merged.
    segments = [[dict(sub, seek=int(1.0 * model.frames_per_second))]]
    alignment = [dict(word=" Hello", tokens=tokenizer.encode(" Hello"), start=0.1, end=0.5, probability=0.9),
                 dict(word=" world", tokens=tokenizer.encode(" world"), start=0.6, end=1.0, probability=0.8),
                 dict(word=".", tokens=tokenizer.encode("."), start=1.0, end=1.1, probability=0.7)]
    last = wi.place_words(model.frames_per_second, [alignment], segments, tokenizer, [size],
                          opts.prepend_punctuations, opts.append_punctuations, 0.0)
    words = segments[0][0].get("words")
    assert words is not None, f"{VERSION}: add_word_timestamps no longer writes words into the segments"
    assert [w["word"] for w in words] == [" Hello", " world."], (VERSION, words)
    # Times are the alignment's plus the chunk's offset (seek), in order and inside the chunk.
    assert words[0]["start"] == pytest.approx(1.1), (VERSION, words)
    assert all(1.0 <= w["start"] <= w["end"] <= 3.0 for w in words), (VERSION, words)
    assert isinstance(last, float), (VERSION, last)


def test_stand_in_refuses_a_mismatched_alignment_count():
    stand_in = wi._PrecomputedAlignment(50, [[], []])
    with pytest.raises(wi.WhisperInternalsError, match="2 alignments"):
        stand_in.find_alignment(None, [[1]], None, [100])
