"""The only module that calls faster-whisper, each use behind a small function of ours.

faster-whisper does not promise these: ``faster_whisper.audio._group_frames`` and
``_resample_frames``, ``WhisperModel._split_segments_by_timestamps``, and the unbound
``WhisperModel.add_word_timestamps`` run with a stand-in for the model; nor the
undocumented pieces of ``BatchedInferencePipeline`` that transcription takes apart (VAD
chunks, features, encode, beam search, alignment, language detection, timestamp
restoring). An upgrade that renames or changes one fails
``tests/transcribe/test_whisper_internals_contract.py`` with the version named, instead
of failing transcription at run time. Nothing else in the package imports faster_whisper
(``tests/transcribe/test_whisper_internals_contract.py`` checks that too).
"""

from __future__ import annotations

from typing import Iterable, Iterator

# The frame group size faster_whisper.audio.decode_audio resamples in.
RESAMPLE_GROUP_SAMPLES = 500000


class WhisperInternalsError(RuntimeError):
    """faster-whisper's internals did not behave as this module expects (an incompatible version)."""


def resampled_frames(frames: Iterable, resampler) -> Iterator:
    """Decoded PyAV frames grouped and resampled exactly as ``faster_whisper.audio.decode_audio`` does."""
    from faster_whisper.audio import _group_frames, _resample_frames

    return _resample_frames(_group_frames(frames, RESAMPLE_GROUP_SAMPLES), resampler)


def split_segments_by_timestamps(model, tokenizer, tokens: list[int], time_offset: float, segment_size: int,
                                 segment_duration: float) -> list[dict]:
    """A decoded chunk's tokens as faster-whisper's subsegments (``start``, ``end``, ``tokens``)."""
    subsegments, _seek, _single_timestamp_ending = model._split_segments_by_timestamps(
        tokenizer=tokenizer, tokens=tokens, time_offset=time_offset, segment_size=segment_size,
        segment_duration=segment_duration, seek=0)
    return subsegments


class _PrecomputedAlignment:
    """Stands in for the model inside WhisperModel.add_word_timestamps with alignments already made.

    Alignment runs once for a whole (cross-episode) batch; the placement of words that
    follows depends on the previous chunk of the *same* episode (last speech time), so
    it runs per episode with this stand-in, reusing faster-whisper's own code. It offers
    what ``add_word_timestamps`` uses of ``self``: ``frames_per_second`` and ``find_alignment``.
    """

    def __init__(self, frames_per_second: int, alignments: list):
        self.frames_per_second = frames_per_second
        self._alignments = alignments

    def find_alignment(self, tokenizer, text_tokens, encoder_output, num_frames, median_filter_width=7):
        if len(text_tokens) != len(self._alignments):
            raise WhisperInternalsError(
                f"add_word_timestamps asked to align {len(text_tokens)} segments but {len(self._alignments)} "
                f"alignments were made for them ({_version()}): its internals changed")
        return self._alignments


def place_words(frames_per_second: int, alignments: list, segments: list[list[dict]], tokenizer,
                num_frames: list[int], prepend_punctuations: str, append_punctuations: str,
                last_speech: float) -> float | None:
    """Words placed into ``segments`` (each chunk's subsegment dicts get ``words``) from precomputed alignments.

    ``WhisperModel.add_word_timestamps`` without its alignment pass: one entry of
    ``alignments`` per chunk, as ``WhisperModel.find_alignment`` made them. Returns the
    last speech time to carry to the episode's next chunk (None when there were no segments).
    """
    from faster_whisper.transcribe import WhisperModel

    stand_in = _PrecomputedAlignment(frames_per_second, alignments)
    return WhisperModel.add_word_timestamps(stand_in, segments, tokenizer, None, num_frames,
                                            prepend_punctuations, append_punctuations, last_speech)


# -- The rest of faster-whisper that transcription uses: public names, but undocumented and unpromised ----------
# Each is called only here, so an upgrade that moves one breaks this module and its contract test alone.

def load_model(path: str, device: str, compute_type: str, cpu_threads: int, local_files_only: bool):
    """faster-whisper's ``WhisperModel`` for a converted model folder."""
    from faster_whisper import WhisperModel

    return WhisperModel(path, device=device, compute_type=compute_type, cpu_threads=cpu_threads,
                        local_files_only=local_files_only)


def is_multilingual(model) -> bool:
    return bool(model.model.is_multilingual)


def mel_count(model) -> int:
    """The model's number of Mel bands (80, or 128 for large-v3): features of one model fit another only if equal."""
    return int(model.model.n_mels)


def window_frames(model) -> int:
    """Feature frames in one 30-s model window (3000)."""
    return int(model.feature_extractor.nb_max_frames)


def window_seconds(model) -> int:
    """Seconds of audio in one model window (30)."""
    return int(model.feature_extractor.chunk_length)


def frames_per_second(model) -> int:
    return int(model.frames_per_second)


def decoding_options(model, multilingual: bool, language: str, beam_size: int, word_timestamps: bool,
                     log_prob_threshold: float, no_speech_threshold: float) -> tuple:
    """(tokenizer, faster-whisper ``TranscriptionOptions``) as ``BatchedInferencePipeline.transcribe`` builds them."""
    from faster_whisper.tokenizer import Tokenizer
    from faster_whisper.transcribe import TranscriptionOptions, get_suppressed_tokens

    tokenizer = Tokenizer(model.hf_tokenizer, multilingual, task="transcribe",
                          language=language if multilingual else "en")
    opts = TranscriptionOptions(
        beam_size=beam_size, best_of=5, patience=1, length_penalty=1, repetition_penalty=1,
        no_repeat_ngram_size=0, log_prob_threshold=log_prob_threshold, no_speech_threshold=no_speech_threshold,
        compression_ratio_threshold=2.4, temperatures=[0.0], initial_prompt=None, prefix=None,
        suppress_blank=True, suppress_tokens=get_suppressed_tokens(tokenizer, [-1]),
        prepend_punctuations="\"'“¿([{-", append_punctuations="\"'.。,，!！?？:：”)]}、",
        max_new_tokens=None, hotwords=None, word_timestamps=word_timestamps,
        hallucination_silence_threshold=None, condition_on_previous_text=False, clip_timestamps=None,
        prompt_reset_on_temperature=0.5, multilingual=False, without_timestamps=True,
        max_initial_timestamp=0.0,
    )
    return tokenizer, opts


def speech_clips(audio, max_speech_sec: float) -> list[dict]:
    """Silero VAD's speech spans (in samples) with the batched pipeline's settings (160 ms of silence splits)."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    return get_speech_timestamps(audio, VadOptions(max_speech_duration_s=max_speech_sec, min_silence_duration_ms=160))


def speech_chunks(audio, clips: list[dict], max_duration: float) -> tuple[list, list[dict]]:
    """The speech spans joined into chunks of at most ``max_duration`` s, and each chunk's offset and duration."""
    from faster_whisper.vad import collect_chunks

    return collect_chunks(audio, clips, max_duration=max_duration)


def log_mel(model, samples):
    """A chunk's log-Mel features (n_mels, frames) as the batched pipeline computes them (its last frame dropped)."""
    return model.feature_extractor(samples)[..., :-1]


def pad_or_trim(features):
    """Features padded with zeros (or cut) to one 30-s window."""
    from faster_whisper.audio import pad_or_trim as fw_pad_or_trim

    return fw_pad_or_trim(features)


def compression_ratio(text: str) -> float:
    from faster_whisper.transcribe import get_compression_ratio

    return get_compression_ratio(text)


def encode(model, features):
    """The encoder's output (a ctranslate2 StorageView) for a batch of windows' features."""
    return model.encode(features)


def stack_encoded(encoded: list):
    """Encoder outputs of single windows stacked into one batch (for the decoder)."""
    import ctranslate2
    import numpy as np

    return ctranslate2.StorageView.from_array(np.concatenate([np.asarray(e) for e in encoded]))


def generate(model, encoder_output, tokenizer, opts, n: int) -> list[dict]:
    """``BatchedInferencePipeline.generate_segment_batched`` after its encode: beam search without timestamps."""
    prompt = model.get_prompt(tokenizer, previous_tokens=[], without_timestamps=opts.without_timestamps,
                              hotwords=opts.hotwords)
    results = model.model.generate(
        encoder_output, [list(prompt) for _ in range(n)], beam_size=opts.beam_size, patience=opts.patience,
        length_penalty=opts.length_penalty, max_length=model.max_length, suppress_blank=opts.suppress_blank,
        suppress_tokens=opts.suppress_tokens, return_scores=True, return_no_speech_prob=True,
        sampling_temperature=opts.temperatures[0], repetition_penalty=opts.repetition_penalty,
        no_repeat_ngram_size=opts.no_repeat_ngram_size)
    outputs = []
    for result in results:
        seq_len = len(result.sequences_ids[0])
        cum_logprob = result.scores[0] * (seq_len ** opts.length_penalty)
        outputs.append(dict(avg_logprob=cum_logprob / (seq_len + 1), no_speech_prob=result.no_speech_prob,
                            tokens=result.sequences_ids[0]))
    return outputs


def find_alignment(model, tokenizer, text_tokens: list[list[int]], encoder_output, num_frames: list[int]) -> list:
    """Cross-attention word alignments, one list per chunk (``WhisperModel.find_alignment``)."""
    return model.find_alignment(tokenizer, text_tokens, encoder_output, num_frames)


def detect_language(model, features) -> tuple[str, float]:
    """The language and its probability, detected on the features' first 30 s (one segment, threshold 0.5)."""
    language, probability, _ = model.detect_language(features=features, language_detection_segments=1,
                                                     language_detection_threshold=0.5)
    return language, float(probability)


def fw_segments(segments: list[dict], temperature: float, word_timestamps: bool) -> list:
    """Subsegment dicts as faster-whisper ``Segment`` objects (with ``Word`` objects when timed)."""
    from faster_whisper.transcribe import Segment, Word

    return [Segment(
        id=0, seek=s["seek"], start=round(s["start"], 3), end=round(s["end"], 3), text=s["text"],
        tokens=s["tokens"], avg_logprob=s["avg_logprob"], compression_ratio=s["compression_ratio"],
        no_speech_prob=s["no_speech_prob"], temperature=temperature,
        words=[Word(**w) for w in s["words"]] if word_timestamps else None) for s in segments]


def restore_speech_timestamps(segments: list, clips: list[dict], sample_rate: int) -> list:
    """Segments (and their words) moved from speech time (VAD spans joined) back to the audio's time."""
    from faster_whisper.transcribe import restore_speech_timestamps as fw_restore

    return list(fw_restore(segments, clips, sample_rate))


def _version() -> str:
    try:
        import faster_whisper

        return f"faster-whisper {faster_whisper.__version__}"
    except Exception:  # noqa: BLE001
        return "faster-whisper (version unknown)"
