"""The loaded model: device choice, one Engine per process and options (load_engine), decoding settings per language."""

from __future__ import annotations

import os
import threading
from dataclasses import replace
from pathlib import Path

from podinsight_dagster.transcribe import whisper_internals
from podinsight_dagster.transcribe.models import resolve_model
from podinsight_dagster.transcribe.options import LOG_PROB_THRESHOLD, NO_SPEECH_THRESHOLD, TranscribeOptions


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
    """A loaded model plus what decoding with it needs (tokenizers and options per language).

    Transcribing is ``batching.transcribe_one`` / ``transcribe_many`` / ``iter_transcribe``, which take an
    Engine: this module knows nothing of them (the import goes one way).
    """

    def __init__(self, options: TranscribeOptions):
        self.options = options
        self.model_path = resolve_model(options.model, Path(options.model_cache), options.allow_download)
        self.device, self.compute_type = pick_device(options.device, options.compute_type)
        threads = options.cpu_threads or (os.cpu_count() or 1)
        self.model = whisper_internals.load_model(self.model_path, self.device, self.compute_type, threads,
                                                  local_files_only=not options.allow_download)
        self.multilingual = whisper_internals.is_multilingual(self.model)
        self.lock = threading.Lock()  # one model call at a time per loaded model
        self._decoding_cache: dict[str, tuple] = {}

    def decoding(self, language: str):
        """(tokenizer, faster-whisper TranscriptionOptions) for a language, as the batched pipeline builds them."""
        cached = self._decoding_cache.get(language)
        if cached is None:
            cached = self._decoding_cache[language] = whisper_internals.decoding_options(
                self.model, self.multilingual, language, self.options.beam_size, self.options.word_timestamps,
                LOG_PROB_THRESHOLD, NO_SPEECH_THRESHOLD)
        return cached

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

