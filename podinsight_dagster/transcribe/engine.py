"""The loaded model: device choice, one Engine per process and options (load_engine), decoding settings per language."""

from __future__ import annotations

import os
import threading
from dataclasses import replace
from pathlib import Path

from podinsight_dagster.transcribe.models import resolve_model
from podinsight_dagster.transcribe.options import (LOG_PROB_THRESHOLD, NO_SPEECH_THRESHOLD, AudioSource,
                                                   TranscribeOptions, Transcript, TranscriptionError)


def _cuda_available() -> bool:
    try:
        import ctranslate2

        return ctranslate2.get_cuda_device_count() > 0
    except Exception:  # noqa: BLE001 - no CUDA runtime at all
        return False


def pick_device(device: str, compute_type: str) -> tuple[str, str]:
    if device == "auto":
        device = "cuda" if _cuda_available() else "cpu"
    if compute_type == "auto":
        compute_type = "float16" if device == "cuda" else "int8"
    return device, compute_type



class Engine:
    """A loaded model plus what decoding with it needs (tokenizers and options per language)."""

    def __init__(self, options: TranscribeOptions):
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        self.options = options
        self.model_path = resolve_model(options.model, Path(options.model_cache), options.allow_download)
        self.device, self.compute_type = pick_device(options.device, options.compute_type)
        threads = options.cpu_threads or (os.cpu_count() or 1)
        self.model = WhisperModel(self.model_path, device=self.device, compute_type=self.compute_type,
                                  cpu_threads=threads, local_files_only=not options.allow_download)
        self.pipeline = BatchedInferencePipeline(self.model)
        self.multilingual = bool(self.model.model.is_multilingual)
        self._lock = threading.Lock()  # one model call at a time per loaded model
        self._decoding_cache: dict[str, tuple] = {}

    def transcribe(self, audio_path: AudioSource) -> Transcript:
        """One episode; raises TranscriptionError. The same code path as ``transcribe_many``."""
        from podinsight_dagster.transcribe.batching import transcribe_many

        result = transcribe_many(self, [audio_path])[0]
        if isinstance(result, TranscriptionError):
            raise result
        return result

    # -- internals shared by the batch path ------------------------------------------------
    def decoding(self, language: str):
        """(tokenizer, faster-whisper TranscriptionOptions) for a language, as the batched pipeline builds them."""
        cached = self._decoding_cache.get(language)
        if cached is not None:
            return cached
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import TranscriptionOptions, get_suppressed_tokens

        tokenizer = Tokenizer(self.model.hf_tokenizer, self.multilingual, task="transcribe",
                              language=language if self.multilingual else "en")
        opts = TranscriptionOptions(
            beam_size=self.options.beam_size, best_of=5, patience=1, length_penalty=1, repetition_penalty=1,
            no_repeat_ngram_size=0, log_prob_threshold=LOG_PROB_THRESHOLD, no_speech_threshold=NO_SPEECH_THRESHOLD,
            compression_ratio_threshold=2.4, temperatures=[0.0], initial_prompt=None, prefix=None,
            suppress_blank=True, suppress_tokens=get_suppressed_tokens(tokenizer, [-1]),
            prepend_punctuations="\"'“¿([{-", append_punctuations="\"'.。,，!！?？:：”)]}、",
            max_new_tokens=None, hotwords=None, word_timestamps=self.options.word_timestamps,
            hallucination_silence_threshold=None, condition_on_previous_text=False, clip_timestamps=None,
            prompt_reset_on_temperature=0.5, multilingual=False, without_timestamps=True,
            max_initial_timestamp=0.0,
        )
        self._decoding_cache[language] = (tokenizer, opts)
        return tokenizer, opts

    def language_checker(self) -> "Engine | None":
        """The multilingual engine that checks an English-only model's episodes, if the options name one."""
        name = self.options.language_check_model
        if self.multilingual or not name or name == self.options.model:
            return None
        return load_engine(replace(self.options, model=name, language_check_model=None))



_ENGINES: dict[TranscribeOptions, Engine] = {}
_ENGINES_LOCK = threading.Lock()


def load_engine(options: TranscribeOptions) -> Engine:
    """The process-wide engine for these options: a model is loaded once per process."""
    with _ENGINES_LOCK:
        engine = _ENGINES.get(options)
        if engine is None:
            engine = _ENGINES[options] = Engine(options)
        return engine

