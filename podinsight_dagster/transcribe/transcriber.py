"""The transcriber seam: a run's episodes transcribed where the settings say, and the in-process implementation.

``Transcriber`` is what the ``transcript`` asset asks: transcribe these episodes of this run and
report each one's outcome (``transcribe/outcomes.py``). ``services.build_transcriber`` picks the
implementation from PODINSIGHT_TRANSCRIBE_VIA: ``InProcessTranscriber`` (faster-whisper in the
step's process), or a Pipes transcriber (``pipes_transcriber.py``: worker.py in a subprocess or
an AWS Batch job, which runs ``InProcessTranscriber`` there). ``SpeechToText`` is the narrower
part the steps' ASR pass uses in the process that transcribes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator, Protocol, Sequence

from podinsight_dagster.errors import StepError
from podinsight_dagster.transcribe.batching import iter_transcribe
from podinsight_dagster.transcribe.engine import Engine, load_engine
from podinsight_dagster.transcribe.options import AudioSource, TranscribeOptions, Transcript, TranscriptionError

if TYPE_CHECKING:
    from podinsight_dagster.services import Services


class SpeechToText(Protocol):
    """Audio to text in this process: what ``steps.transcribe_episodes``' ASR pass asks."""

    options: TranscribeOptions

    def transcribe(self, sources: Sequence[AudioSource]) -> Iterator[tuple[int, Transcript | TranscriptionError]]:
        """Yield ``(index into sources, transcript or error)`` as each episode finishes, in any order."""
        ...


class Transcriber(Protocol):
    """The seam: a run's episodes transcribed (publisher transcripts, else speech to text), each reported."""

    options: TranscribeOptions
    via: str  # PODINSIGHT_TRANSCRIBE_VIA: in-process, subprocess or batch

    def transcribe_run(self, services: "Services", keys: list[str], run: Any) -> dict[str, dict | StepError]:
        """``{partition_key: transcript metadata or StepError}`` for ``keys``; raises ``outcomes.Refused``
        when the budget refused the whole request. ``run`` is the Dagster step's context: a Pipes
        transcriber hands it to its Pipes client; every implementation reads its ``run_id``."""
        ...


class InProcessTranscriber:
    """faster-whisper in this process. The model loads on the first episode that needs it, once per process."""

    via = "in-process"

    def __init__(self, options: TranscribeOptions):
        self.options = options

    def engine(self) -> Engine:
        return load_engine(self.options)

    def transcribe(self, sources: Sequence[AudioSource]) -> Iterator[tuple[int, Transcript | TranscriptionError]]:
        if not sources:
            return iter(())
        return iter_transcribe(self.engine(), sources)

    def transcribe_run(self, services: "Services", keys: list[str], run: Any) -> dict[str, dict | StepError]:
        # All episodes of the run in one call: publisher transcripts first, then one batched ASR pass (model
        # loaded once, and only if needed; decoding overlaps inference; short episodes share batches). Read
        # back through the outcome messages a worker sends, so both paths report alike.
        from podinsight_dagster.transcribe.outcomes import outcome_message, read_outcomes
        from podinsight_dagster.transcribe.steps import transcribe_episodes

        # ahead: when this process runs the run's speakers or chapters step next, their encoders' work starts as
        # each transcript is stored, while the model transcribes the next episodes (transcribe/ahead.py).
        results = transcribe_episodes(services, keys, self, owner=run.run_id, run_id=run.run_id,
                                      ahead=later_steps_here(run))
        return read_outcomes(outcome_message(pk, r) for pk, r in results.items())


IN_PROCESS_EXECUTORS = ("in_process", "execute_in_process_executor")


def later_steps_here(run: Any) -> bool:
    """Whether the Dagster step context ``run`` belongs to a run that executes its speakers or chapters step next,
    in this same process (the in-process executor, as podrun's runs; the multiprocess executor starts a process
    per step, where work done ahead here would be lost)."""
    try:
        execution = (run.run.run_config or {}).get("execution") or {}
        config = execution.get("config", execution) if isinstance(execution, dict) else {}
        if "multiprocess" in config:
            return False
        # execute_in_process (podrun's runs) uses an executor of its own name.
        if "in_process" not in config and run.job_def.executor_def.name not in IN_PROCESS_EXECUTORS:
            return False
        selection = run.run.asset_selection or run.job_def.asset_layer.executable_asset_keys
        return bool({k.to_user_string() for k in selection} & {"speakers", "chapters"})
    except Exception:  # noqa: BLE001 - not a Dagster step context (a test's stand-in): no head start
        return False
