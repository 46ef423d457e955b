"""The only module that touches faster-whisper's private internals, each behind a small function of ours.

faster-whisper does not promise these: ``faster_whisper.audio._group_frames`` and
``_resample_frames``, ``WhisperModel._split_segments_by_timestamps``, and the unbound
``WhisperModel.add_word_timestamps`` run with a stand-in for the model. An upgrade that
renames or changes one fails ``tests/transcribe/test_whisper_internals_contract.py``
with the version named, instead of failing transcription at run time.
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


def _version() -> str:
    try:
        import faster_whisper

        return f"faster-whisper {faster_whisper.__version__}"
    except Exception:  # noqa: BLE001
        return "faster-whisper (version unknown)"
