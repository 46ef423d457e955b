"""The transcriber seam: what the pipeline asks of speech-to-text, and the in-process faster-whisper implementation.

Today the model runs in the process that runs the step (``InProcessTranscriber``);
on AWS a Pipes-launched GPU worker runs the same code. The steps only see the
``Transcriber`` protocol, so either can stand behind them.
"""

from __future__ import annotations

from typing import Iterator, Protocol, Sequence

from podinsight_dagster.transcribe.batching import iter_transcribe
from podinsight_dagster.transcribe.engine import Engine, load_engine
from podinsight_dagster.transcribe.options import AudioSource, TranscribeOptions, Transcript, TranscriptionError


class Transcriber(Protocol):
    options: TranscribeOptions

    def transcribe(self, sources: Sequence[AudioSource]) -> Iterator[tuple[int, Transcript | TranscriptionError]]:
        """Yield ``(index into sources, transcript or error)`` as each episode finishes, in any order."""
        ...


class InProcessTranscriber:
    """faster-whisper in this process. The model loads on the first episode that needs it, once per process."""

    def __init__(self, options: TranscribeOptions):
        self.options = options

    def engine(self) -> Engine:
        return load_engine(self.options)

    def transcribe(self, sources: Sequence[AudioSource]) -> Iterator[tuple[int, Transcript | TranscriptionError]]:
        if not sources:
            return iter(())
        return iter_transcribe(self.engine(), sources)
