"""The faster-whisper internals whisper_internals relies on: present, same signatures, same behaviour on tiny input.

An upgrade of faster-whisper that renames or reshapes one of them fails here, naming
the version, rather than breaking transcription at run time.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import numpy as np
import pytest

import faster_whisper
from faster_whisper import WhisperModel
from faster_whisper import audio as fw_audio
from faster_whisper import tokenizer as fw_tokenizer
from faster_whisper import transcribe as fw_transcribe
from faster_whisper import vad as fw_vad

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


# Public but undocumented: the parameters we pass by name must still be there (others may be added).
PASSED = {
    "WhisperModel": (lambda: WhisperModel.__init__,
                     ["model_size_or_path", "device", "compute_type", "cpu_threads", "local_files_only"]),
    "WhisperModel.encode": (lambda: WhisperModel.encode, ["features"]),
    "WhisperModel.get_prompt": (lambda: WhisperModel.get_prompt,
                                ["tokenizer", "previous_tokens", "without_timestamps", "hotwords"]),
    "WhisperModel.detect_language": (lambda: WhisperModel.detect_language,
                                     ["features", "language_detection_segments", "language_detection_threshold"]),
    "faster_whisper.tokenizer.Tokenizer": (lambda: fw_tokenizer.Tokenizer.__init__,
                                           ["tokenizer", "multilingual", "task", "language"]),
    "faster_whisper.transcribe.get_suppressed_tokens": (lambda: fw_transcribe.get_suppressed_tokens,
                                                        ["tokenizer", "suppress_tokens"]),
    "faster_whisper.transcribe.get_compression_ratio": (lambda: fw_transcribe.get_compression_ratio, ["text"]),
    "faster_whisper.transcribe.restore_speech_timestamps": (
        lambda: fw_transcribe.restore_speech_timestamps, ["segments", "speech_chunks", "sampling_rate"]),
    "faster_whisper.transcribe.Segment": (
        lambda: fw_transcribe.Segment,
        ["id", "seek", "start", "end", "text", "tokens", "avg_logprob", "compression_ratio", "no_speech_prob",
         "words", "temperature"]),
    "faster_whisper.transcribe.Word": (lambda: fw_transcribe.Word, ["start", "end", "word", "probability"]),
    "faster_whisper.vad.VadOptions": (lambda: fw_vad.VadOptions, ["max_speech_duration_s", "min_silence_duration_ms"]),
    "faster_whisper.vad.get_speech_timestamps": (lambda: fw_vad.get_speech_timestamps, ["audio", "vad_options"]),
    "faster_whisper.vad.collect_chunks": (lambda: fw_vad.collect_chunks, ["audio", "chunks", "max_duration"]),
    "faster_whisper.audio.pad_or_trim": (lambda: fw_audio.pad_or_trim, ["array"]),
}


@pytest.mark.parametrize("name", sorted(PASSED))
def test_what_we_pass_by_name_is_still_accepted(name):
    get, params = PASSED[name]
    try:
        fn = get()
    except AttributeError as exc:
        pytest.fail(f"{VERSION}: {name} is gone ({exc}); adapt podinsight_dagster/transcribe/whisper_internals.py")
    got = set(inspect.signature(fn).parameters)
    assert set(params) <= got, (f"{VERSION}: {name} no longer takes {sorted(set(params) - got)}; "
                                "adapt podinsight_dagster/transcribe/whisper_internals.py")


def test_no_other_module_imports_faster_whisper():
    package = Path(wi.__file__).resolve().parents[1]
    importers = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            if any(n == "faster_whisper" or n.startswith("faster_whisper.") for n in names):
                importers.add(path.relative_to(package).as_posix())
    assert importers == {"transcribe/whisper_internals.py"}


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


def test_model_attributes_and_the_pipeline_pieces_on_tiny_input(engine):
    """What transcription reads of a loaded model, and VAD, chunks, features, encode, generate, align, detect."""
    model = engine.model
    assert (wi.window_seconds(model), wi.window_frames(model), wi.frames_per_second(model)) == (30, 3000, 100), VERSION
    assert wi.mel_count(model) == 80 and wi.is_multilingual(model) is False and model.max_length > 0, VERSION
    rng = np.random.default_rng(0)
    tone = (0.3 * np.sin(2 * np.pi * 220 * np.arange(32000) / 16000)).astype(np.float32)
    audio = np.concatenate([np.zeros(16000, np.float32), tone + 0.01 * rng.standard_normal(32000).astype(np.float32)])
    clips = wi.speech_clips(audio, 30)
    assert isinstance(clips, list) and all({"start", "end"} <= set(c) for c in clips), (VERSION, clips)
    spans = clips or [{"start": 0, "end": audio.size}]
    chunks, metadata = wi.speech_chunks(audio, spans, max_duration=30)
    assert len(chunks) == len(metadata) == 1 and {"offset", "duration"} <= set(metadata[0]), (VERSION, metadata)
    features = wi.log_mel(model, chunks[0])
    assert features.shape[0] == 80 and 0 < features.shape[1] <= 3000, (VERSION, features.shape)
    window = wi.pad_or_trim(features)
    assert window.shape == (80, 3000), (VERSION, window.shape)
    tokenizer, opts = engine.decoding("en")
    encoded = wi.encode(model, np.stack([window]))
    out = wi.generate(model, encoded, tokenizer, opts, 1)
    assert len(out) == 1 and {"avg_logprob", "no_speech_prob", "tokens"} <= set(out[0]), (VERSION, out)
    alignment = wi.find_alignment(model, tokenizer, [tokenizer.encode(" Hello")], encoded, [200])
    assert len(alignment) == 1, (VERSION, alignment)
    assert isinstance(wi.compression_ratio("hello hello hello"), float), VERSION
    segs = wi.fw_segments([dict(seek=0, start=0.0, end=1.0, text=" Hello", tokens=[1], avg_logprob=-0.1,
                                compression_ratio=1.0, no_speech_prob=0.1,
                                words=[dict(start=0.1, end=0.5, word=" Hello", probability=0.9)])], 0.0, True)
    restored = wi.restore_speech_timestamps(segs, [{"start": 16000, "end": 48000}], 16000)
    # Speech time 0 is audio time 1 s; a timed segment starts at its first word.
    assert restored[0].words[0].start == pytest.approx(1.1) and restored[0].start == pytest.approx(1.1), VERSION
