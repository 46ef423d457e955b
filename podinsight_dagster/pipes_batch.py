"""Dagster Pipes on AWS Batch: run the GPU worker as a Batch job and read what it reports.

dagster-aws has Pipes clients for ECS, Lambda, Glue and EMR but none for Batch (its step
launchers are superseded by Pipes), so this is one, on ``open_pipes_session``:

- the context goes to S3 (``PipesS3ContextInjector``, its object removed however the session ends)
  and the messages come back through S3
  (``PipesS3MessageReader``), under ``_pipes/`` in the stage bucket by default: a Batch job's
  environment overrides are size-limited, and only the small bootstrap parameters travel there;
- ``submit_job`` with the bootstrap variables (and the caller's) in ``containerOverrides.environment``
  and the run's Dagster tags; then ``describe_jobs`` polled with backoff until SUCCEEDED or FAILED;
- a Dagster run cancelled or interrupted (``DagsterExecutionInterruptedError``, ``KeyboardInterrupt``)
  terminates the job (``terminate_job``) before re-raising;
- the job's CloudWatch log stream, when there is one, is copied to the step's stdout (its
  compute log) and its tail goes into the Failure of a job that FAILED, with ``statusReason``.

The worker side is ``worker.pipes_io``: it sees the S3 bootstrap parameters and reads and writes
through S3 with a boto3 client.
"""

from __future__ import annotations

import json
import random
import string
import sys
import time
from contextlib import contextmanager
from typing import Any, Iterator, Mapping

from botocore.exceptions import ClientError
from dagster import (DagsterExecutionInterruptedError, Failure, MetadataValue, PipesClient,
                     PipesClientCompletedInvocation, open_pipes_session)
from dagster_aws.pipes import PipesS3ContextInjector, PipesS3MessageReader
from dagster_pipes import PipesBlobStoreMessageWriter, PipesParams

PIPES_PREFIX = "_pipes"          # feed slugs start with [a-z0-9], so never collides with episode keys
DEFAULT_LOG_GROUP = "/aws/batch/job"
TERMINAL = ("SUCCEEDED", "FAILED")
LOG_TAIL_LINES = 20


class _PrefixedS3MessageReader(PipesS3MessageReader):
    """PipesS3MessageReader under a key prefix, whose message chunks are deleted once read."""

    def __init__(self, *, prefix: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.prefix = prefix.rstrip("/")

    @contextmanager
    def get_params(self) -> Iterator[PipesParams]:
        key_prefix = f"{self.prefix}/messages/{''.join(random.choices(string.ascii_letters, k=30))}"
        try:
            yield {"bucket": self.bucket, "key_prefix": key_prefix,
                   PipesBlobStoreMessageWriter.INCLUDE_STDIO_IN_MESSAGES_KEY: self.include_stdio_in_messages}
        finally:
            self._delete_prefix(key_prefix)

    def _delete_prefix(self, key_prefix: str) -> None:
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=key_prefix + "/")
            for page in pages:
                keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if keys:
                    self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})
        except ClientError:
            pass  # leftovers under _pipes/ are harmless (and a lifecycle rule can expire them)


class _S3ContextInjector(PipesS3ContextInjector):
    """PipesS3ContextInjector whose context object is removed however the session ends.

    dagster-aws 0.29 deletes it only when the session ends without an exception: every job that
    FAILED or was interrupted would leave its context (run id, partition keys, extras) in the bucket.
    """

    @contextmanager
    def inject_context(self, context: Any) -> Iterator[PipesParams]:
        key = f"{self.key_prefix or ''}{''.join(random.choices(string.ascii_letters, k=30))}/context.json"
        self.client.put_object(Body=json.dumps(context).encode("utf-8"), Bucket=self.bucket, Key=key)
        try:
            yield {"bucket": self.bucket, "key": key}
        finally:
            try:
                self.client.delete_object(Bucket=self.bucket, Key=key)
            except ClientError:
                pass  # never hide why the session ended; a lifecycle rule can expire a leftover


class PipesBatchClient(PipesClient):
    """Run one AWS Batch job under Dagster Pipes.

    Args:
        batch: a boto3 Batch client.
        s3: a boto3 S3 client (context and messages travel through ``bucket``).
        bucket: where the context and messages go (the stage bucket, under ``prefix``).
        logs: a boto3 CloudWatch Logs client, to copy the job's log stream; None: no logs.
        poll_interval, max_poll_interval: ``describe_jobs`` every ``poll_interval`` seconds at
            first, growing by half each time up to ``max_poll_interval``.
        message_interval: how often the message reader looks for new chunks in S3.
    """

    def __init__(self, batch: Any, s3: Any, bucket: str, *, logs: Any = None, prefix: str = PIPES_PREFIX,
                 poll_interval: float = 5.0, max_poll_interval: float = 60.0, message_interval: float = 5.0):
        self.batch, self.s3, self.logs = batch, s3, logs
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.poll_interval, self.max_poll_interval = poll_interval, max_poll_interval
        self.message_interval = message_interval

    @classmethod
    def _is_dagster_maintained(cls) -> bool:
        return False

    def run(self, *, context: Any, job_definition: str, job_queue: str,  # type: ignore[override]
            extras: Mapping[str, Any] | None = None, environment: Mapping[str, str] | None = None,
            job_name: str | None = None, submit_params: Mapping[str, Any] | None = None,
            ) -> PipesClientCompletedInvocation:
        """Submit the job, wait for it, and return what it reported; raises Failure if it FAILED.

        ``environment`` goes to the container beside the Pipes bootstrap variables;
        ``submit_params`` are passed to ``submit_job`` as they are (timeout, retryStrategy, ...).
        """
        # A fresh reader per run: a blob-store reader counts the chunks it has read.
        reader = _PrefixedS3MessageReader(prefix=self.prefix, bucket=self.bucket, client=self.s3,
                                          interval=self.message_interval)
        injector = _S3ContextInjector(bucket=self.bucket, client=self.s3, key_prefix=f"{self.prefix}/context/")
        with open_pipes_session(context=context, context_injector=injector, message_reader=reader,
                                extras=dict(extras or {})) as session:
            name = job_name or _job_name(context)
            env = {**(environment or {}), **session.get_bootstrap_env_vars()}
            params = dict(submit_params or {})
            overrides = dict(params.pop("containerOverrides", None) or {})
            overrides["environment"] = [*overrides.get("environment", []),
                                        *({"name": k, "value": v} for k, v in env.items())]
            tags = {**dict(params.pop("tags", None) or {}),
                    **{k[:128]: str(v)[:256] for k, v in session.default_remote_invocation_info.items()}}
            try:
                submitted = self.batch.submit_job(jobName=name, jobQueue=job_queue, jobDefinition=job_definition,
                                                  containerOverrides=overrides, tags=tags, **params)
            except ClientError as exc:
                raise Failure(description=f"could not submit AWS Batch job {name} ({job_definition} on "
                                          f"{job_queue}): {exc}") from exc
            job_id = submitted["jobId"]
            context.log.info(f"[pipes] AWS Batch job {name} ({job_id}) submitted to {job_queue} ({job_definition})")
            try:
                job = self._wait(context, job_id)
            except (DagsterExecutionInterruptedError, KeyboardInterrupt):
                self._terminate(context, job_id, name)
                raise
            log_tail = self._copy_logs(context, job, job_definition)
            metadata = _metadata(self.batch, job)
            if job["status"] == "FAILED":
                container = job.get("container") or {}
                why = "; ".join(str(x) for x in (job.get("statusReason"), container.get("reason"),
                                                 f"exit code {container['exitCode']}"
                                                 if container.get("exitCode") is not None else None) if x)
                tail = "\n".join(log_tail[-LOG_TAIL_LINES:])
                raise Failure(
                    description=f"AWS Batch job {name} ({job_id}) FAILED: {why or 'no reason given'}"
                                + (f"\nlast log lines:\n{tail}" if tail else ""),
                    metadata={**metadata, "status_reason": job.get("statusReason") or ""})
        context.log.info(f"[pipes] AWS Batch job {name} ({job_id}) SUCCEEDED")
        return PipesClientCompletedInvocation(session, metadata=metadata)

    # -----------------------------------------------------------------------
    def _wait(self, context: Any, job_id: str) -> dict:
        delay, last = self.poll_interval, None
        while True:
            jobs = self.batch.describe_jobs(jobs=[job_id]).get("jobs") or []
            if not jobs:
                raise Failure(description=f"AWS Batch job {job_id} disappeared (describe_jobs knows no such job)")
            job = jobs[0]
            if job["status"] != last:
                last = job["status"]
                context.log.info(f"[pipes] AWS Batch job {job_id}: {last}")
            if last in TERMINAL:
                return job
            time.sleep(delay)
            delay = min(delay * 1.5, self.max_poll_interval)

    def _terminate(self, context: Any, job_id: str, name: str) -> None:
        context.log.warning(f"[pipes] Dagster run interrupted: terminating AWS Batch job {name} ({job_id})")
        try:
            self.batch.terminate_job(jobId=job_id, reason=f"Dagster run {context.run_id} was interrupted")
        except ClientError as exc:
            context.log.warning(f"[pipes] could not terminate AWS Batch job {job_id}: {exc}")

    def _copy_logs(self, context: Any, job: dict, job_definition: str) -> list[str]:
        """The job's CloudWatch log lines, also written to stdout (the step's compute log); [] if none."""
        stream = (job.get("container") or {}).get("logStreamName")
        if self.logs is None or not stream:
            return []
        group = _log_group(job) or DEFAULT_LOG_GROUP
        lines: list[str] = []
        token = None
        try:
            while True:
                kwargs = {"logGroupName": group, "logStreamName": stream, "startFromHead": True}
                if token:
                    kwargs["nextToken"] = token
                page = self.logs.get_log_events(**kwargs)
                lines.extend(e["message"] for e in page.get("events", []))
                if not page.get("events") or page.get("nextForwardToken") in (None, token):
                    break
                token = page["nextForwardToken"]
        except ClientError as exc:
            context.log.debug(f"[pipes] no CloudWatch logs for {stream} in {group}: {exc}")
            return lines
        for line in lines:
            sys.stdout.write(line.rstrip("\n") + "\n")
        context.log.info(f"[pipes] {len(lines)} log lines from CloudWatch {group}/{stream}")
        return lines


def _job_name(context: Any) -> str:
    """A Batch job name (letters, digits, - and _; at most 128) naming the asset and the run."""
    try:
        what = context.asset_key.to_python_identifier()
    except Exception:  # noqa: BLE001 - an op, or several assets
        what = "op"
    return f"podinsight-{what}-{context.run_id[:8]}"[:128]


def _log_group(job: dict) -> str | None:
    config = (job.get("container") or {}).get("logConfiguration") or {}
    if config.get("logDriver") == "awslogs":
        return (config.get("options") or {}).get("awslogs-group")
    return None


def _metadata(batch: Any, job: dict) -> dict:
    region = batch.meta.region_name
    return {"aws_batch_job_id": job["jobId"], "aws_batch_status": job["status"],
            "aws_batch_job": MetadataValue.url(
                f"https://{region}.console.aws.amazon.com/batch/home?region={region}#jobs/detail/{job['jobId']}")}
