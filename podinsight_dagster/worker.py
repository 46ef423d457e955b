"""The GPU worker: transcribe, segment and score episodes under Dagster Pipes.

Launched by the ``transcript`` asset's Pipes transcriber (``pipes_transcriber.py``, picked from
``PODINSIGHT_TRANSCRIBE_VIA``: a subprocess through ``PipesSubprocessClient``, or an AWS Batch job
through ``pipes_batch.PipesBatchClient``) with the episode partition keys in the Pipes extras. It needs only ``dagster-pipes`` and the domain
code: no dagster, no webserver.

    python -m podinsight_dagster.worker            # under Pipes
    python -m podinsight_dagster.worker KEY [KEY]  # by hand, without Pipes

Extras: ``partition_keys`` (the run's episodes) and ``through``: ``transcript`` (only
transcript.json: what the asset asks, segments and kpis being assets of their own) or ``kpis``
(the default: all of Phase 2). The worker checks the budget before spending, reports every
episode's outcome as a custom message (``outcome_message``; one failure never discards the
others), and exits 0 once it has reported: the asset turns the messages into per-partition
materializations or failures, through the same code as its in-process path.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

from podinsight_dagster.costs.budget import BudgetExceeded
from podinsight_dagster.errors import StepError
from podinsight_dagster.services import Services, aws_client, build_services
from podinsight_dagster.settings import Settings
# The outcome messages live with the transcriber seam (every Transcriber reports in them); named here too.
from podinsight_dagster.transcribe.outcomes import (Refused, outcome_message, read_outcomes,  # noqa: F401
                                                    refusal_message, transcript_metadata)
from podinsight_dagster.transcribe.steps import transcribe_episodes, write_kpis, write_segments

THROUGH = ("transcript", "kpis")


# ---------------------------------------------------------------------------
def process(services: Services, keys: list[str], emit: Callable[[dict], None] = print,
            through: str = "kpis", log: Callable[[str], None] = print, run_id: str | None = None) -> dict[str, dict]:
    """Transcribe (all in one batched pass) and, through ``kpis``, segment and score each episode.

    ``emit`` gets each episode's outcome message as soon as it is known; returns them all by key.
    """
    if through not in THROUGH:
        raise ValueError(f"through={through!r}: choose one of {', '.join(THROUGH)}")
    outcomes: dict[str, dict] = {}
    results = transcribe_episodes(services, keys, run_id=run_id)
    for pk in keys:
        result = results.get(pk) or StepError(f"{pk}: no transcription result")
        try:
            if isinstance(result, StepError):
                raise result
            meta = transcript_metadata(result)
            if through == "kpis":
                write_segments(services, pk)
                write_kpis(services, pk)
        except StepError as exc:
            outcome = outcome_message(pk, exc)
        except Exception as exc:  # noqa: BLE001 - a bug or bad data in one episode must not stop the others
            outcome = outcome_message(pk, StepError(f"{pk}: unexpected {type(exc).__name__}: {exc}"))
        else:
            outcome = outcome_message(pk, meta)
        log(f"ok {pk}: {outcome['metadata']['words']} words, {outcome['metadata']['realtime_factor']}x real time"
            if outcome["ok"] else f"FAILED {outcome['error']}")
        outcomes[pk] = outcome
        emit(outcome)
    return outcomes


def pipes_io(params_loader: Any, s3_client: Callable[[], Any]) -> tuple[Any, Any]:
    """The context loader and message writer the launcher chose: S3 (a Batch job) or the defaults (a subprocess).

    A Batch job's environment overrides are size-limited, so ``PipesBatchClient`` puts the context
    (and the messages) in S3; its bootstrap parameters then name a bucket.
    """
    from dagster_pipes import (PipesDefaultContextLoader, PipesDefaultMessageWriter, PipesS3ContextLoader,
                               PipesS3MessageWriter)

    on_s3 = "bucket" in params_loader.load_context_params()
    loader = PipesS3ContextLoader(s3_client()) if on_s3 else PipesDefaultContextLoader()
    on_s3 = "bucket" in params_loader.load_messages_params()
    writer = PipesS3MessageWriter(s3_client(), interval=5) if on_s3 else PipesDefaultMessageWriter()
    return loader, writer


def run_under_pipes(services: Services, pipes: Any) -> None:
    """The worker's side of one Pipes session: budget check, then every episode reported."""
    keys = list(pipes.extras.get("partition_keys") or [pipes.partition_key])
    through = pipes.extras.get("through") or "kpis"

    def log(message: str, warning: bool = False) -> None:
        # To Dagster, and to stderr: a Batch job's CloudWatch log stream is where an operator looks
        # first, and the only account of a job whose messages never reached S3 (a lost container).
        (pipes.log.warning if warning else pipes.log.info)(message)
        print(message, file=sys.stderr, flush=True)

    log(f"worker: {len(keys)} episodes through {through}")
    try:
        # Frozen, or today's spend at the ceiling: this job transcribes nothing (run-book §6.1).
        services.budget.check()
    except BudgetExceeded as exc:
        log(f"transcription refused: {exc}", warning=True)
        pipes.report_custom_message(refusal_message(str(exc)))
        return
    outcomes = process(services, keys, emit=pipes.report_custom_message, through=through, log=log,
                       run_id=pipes.extras.get("run_id"))
    failed = sum(1 for o in outcomes.values() if not o["ok"])
    log(f"{len(keys) - failed} of {len(keys)} episodes done, {failed} failed")


def main(argv: list[str]) -> int:
    settings = Settings.from_env()
    services = build_services(settings, in_process_transcriber=True)  # this is where episodes are transcribed
    try:
        if argv:
            try:
                services.budget.check()
            except BudgetExceeded as exc:
                print(f"transcription refused: {exc}", file=sys.stderr)
                return 1
            outcomes = process(services, argv, emit=lambda _: None)
            return 1 if any(not o["ok"] for o in outcomes.values()) else 0
        from dagster_pipes import PipesEnvVarParamsLoader, open_dagster_pipes

        params = PipesEnvVarParamsLoader()
        if not params.is_dagster_pipes_process():
            print("not launched by Dagster Pipes: name the partition keys to process", file=sys.stderr)
            return 2
        loader, writer = pipes_io(params, lambda: aws_client(settings, "s3"))
        with open_dagster_pipes(context_loader=loader, message_writer=writer, params_loader=params) as pipes:
            run_under_pipes(services, pipes)
        return 0  # every outcome is reported; the asset decides what fails
    finally:
        services.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
