"""The Pipes transcribers: a run's episodes transcribed by worker.py in a subprocess or an AWS Batch job.

Transcriber implementations (``transcribe/transcriber.py``) that ``services.build_transcriber``
picks for PODINSIGHT_TRANSCRIBE_VIA=subprocess or batch. The worker runs the in-process
transcriber there and reports each episode's outcome as a Pipes custom message
(``transcribe/outcomes.py``); the ``transcript`` asset reads them as it reads the in-process ones.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Mapping

from podinsight_dagster.errors import StepError
from podinsight_dagster.transcribe.options import TranscribeOptions
from podinsight_dagster.transcribe.outcomes import read_outcomes

WORKER = [sys.executable, "-m", "podinsight_dagster.worker"]


def _extras(keys: list[str], run: Any) -> dict:
    # Only the transcript: segments and kpis are assets of their own.
    return {"partition_keys": list(keys), "through": "transcript", "run_id": run.run_id}


class SubprocessTranscriber:
    """``python -m podinsight_dagster.worker`` through ``PipesSubprocessClient``, the settings as its environment."""

    via = "subprocess"

    def __init__(self, options: TranscribeOptions, env: Mapping[str, str]):
        self.options, self.env = options, dict(env)

    def transcribe_run(self, services: Any, keys: list[str], run: Any) -> dict[str, dict | StepError]:
        from dagster import PipesSubprocessClient

        # -m finds the package from the working directory, installed or not.
        client = PipesSubprocessClient(env=self.env, cwd=str(Path(__file__).resolve().parents[1]))
        invocation = client.run(context=run, command=WORKER, extras=_extras(keys, run))
        return read_outcomes(invocation.get_custom_messages())


class BatchTranscriber:
    """A job of PODINSIGHT_BATCH_JOB_DEFINITION on PODINSIGHT_BATCH_JOB_QUEUE through ``PipesBatchClient``.

    Context and messages go through the stage bucket; the job's environment is the settings that are not
    this machine's folders. ``client(service)`` makes the boto3 clients, at the run (not when built).
    """

    via = "batch"

    def __init__(self, options: TranscribeOptions, client: Callable[[str], Any], *, bucket: str, job_definition: str,
                 job_queue: str, env: Mapping[str, str]):
        self.options, self.client, self.bucket = options, client, bucket
        self.job_definition, self.job_queue, self.env = job_definition, job_queue, dict(env)

    def transcribe_run(self, services: Any, keys: list[str], run: Any) -> dict[str, dict | StepError]:
        from podinsight_dagster.pipes_batch import PipesBatchClient

        pipes = PipesBatchClient(self.client("batch"), self.client("s3"), self.bucket, logs=self.client("logs"))
        invocation = pipes.run(context=run, job_definition=self.job_definition, job_queue=self.job_queue,
                               extras=_extras(keys, run), environment=self.env)
        return read_outcomes(invocation.get_custom_messages())
