"""PipesBatchClient against moto's AWS Batch (simple mode: no container runs, jobs end at once).

moto runs no container, so the test plays the worker: when the client submits the job, the
worker side (``worker.pipes_io``, as the real worker uses it) reads the context from S3 with the
bootstrap variables the job was given, and writes its messages back to S3; CloudWatch log events
are put in the job's stream.
"""

from __future__ import annotations

import time

import pytest
import requests
from dagster import DagsterInstance, MaterializeResult, asset, materialize
from dagster._core.errors import DagsterExecutionInterruptedError
from dagster_pipes import PipesContext, PipesMappingParamsLoader

from podinsight_dagster.pipes_batch import PIPES_PREFIX, PipesBatchClient
from podinsight_dagster.worker import outcome_message, pipes_io, read_outcomes

BUCKET = "pod-insights-stage"
QUEUE, JOB_DEF = "transcribe", "whisper-base"  # the settings' defaults, as iac/ creates them


@pytest.fixture
def aws(moto_server):
    requests.post(moto_server.url + "/moto-api/config", json={"batch": {"use_docker": False}}, timeout=10)
    batch, iam = moto_server.client("batch"), moto_server.client("iam")
    role = iam.create_role(RoleName="batch", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    env = batch.create_compute_environment(computeEnvironmentName="gpu_spot", type="UNMANAGED", state="ENABLED",
                                           serviceRole=role)["computeEnvironmentArn"]
    batch.create_job_queue(jobQueueName=QUEUE, state="ENABLED", priority=1,
                           computeEnvironmentOrder=[{"order": 1, "computeEnvironment": env}])
    batch.register_job_definition(jobDefinitionName=JOB_DEF, type="container", containerProperties={
        "image": "podcast-whisper:latest", "command": ["python", "-m", "podinsight_dagster.worker"],
        "resourceRequirements": [{"type": "VCPU", "value": "4"}, {"type": "MEMORY", "value": "8192"},
                                 {"type": "GPU", "value": "1"}]})
    moto_server.client("s3").create_bucket(Bucket=BUCKET)
    logs = moto_server.client("logs")
    logs.create_log_group(logGroupName="/aws/batch/job")
    try:
        yield moto_server
    finally:
        requests.post(moto_server.url + "/moto-api/config", json={"batch": {"use_docker": True}}, timeout=10)


class PlayedBatch:
    """The Batch client, with the worker's side played at ``submit_job`` (before moto ends the job)."""

    def __init__(self, server, worker=None, interrupt=False):
        self._batch, self.s3, self.logs = server.client("batch"), server.client("s3"), server.client("logs")
        self.meta = self._batch.meta
        self.worker, self.interrupt = worker, interrupt
        self.submitted: dict = {}
        self.terminated: list = []

    def submit_job(self, **params):
        self.submitted = params
        env = {e["name"]: e["value"] for e in params["containerOverrides"]["environment"]}
        if self.worker is not None:
            loader = PipesMappingParamsLoader(env)
            pipes = PipesContext(loader, *pipes_io(loader, lambda: self.s3))
            try:
                self.worker(pipes)
            finally:
                pipes.close()
        out = self._batch.submit_job(**params)
        job = self._batch.describe_jobs(jobs=[out["jobId"]])["jobs"][0]
        stream = job["container"]["logStreamName"]
        self.logs.create_log_stream(logGroupName="/aws/batch/job", logStreamName=stream)
        self.logs.put_log_events(logGroupName="/aws/batch/job", logStreamName=stream, logEvents=[
            {"timestamp": int(time.time() * 1000) + i, "message": line}
            for i, line in enumerate(["loading model tiny.en", "RuntimeError: CUDA out of memory"])])
        return out

    def describe_jobs(self, **kwargs):
        if self.interrupt:
            raise DagsterExecutionInterruptedError()
        return self._batch.describe_jobs(**kwargs)

    def terminate_job(self, **kwargs):
        self.terminated.append(kwargs)
        return self._batch.terminate_job(**kwargs)


def _materialize(played: PlayedBatch, received: list):
    @asset
    def gpu_step(context):
        client = PipesBatchClient(played, played.s3, BUCKET, logs=played.logs, poll_interval=0.05,
                                  message_interval=0.1)
        invocation = client.run(context=context, job_definition=JOB_DEF, job_queue=QUEUE,
                                extras={"partition_keys": ["show/ep1", "show/ep2"], "through": "transcript"},
                                environment={"PODINSIGHT_MODEL": "tiny.en"})
        received.extend(invocation.get_custom_messages())
        return MaterializeResult(metadata=invocation.metadata)

    with DagsterInstance.ephemeral() as instance:
        result = materialize([gpu_step], instance=instance, raise_on_error=False)
        logs = [e.message or "" for e in instance.all_logs(result.run_id)]
    return result, logs


def _objects(s3) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]


def test_batch_job_reports_through_s3(aws):
    def worker(pipes):
        assert pipes.extras["partition_keys"] == ["show/ep1", "show/ep2"]
        pipes.log.info("worker says hello")
        pipes.report_custom_message(outcome_message("show/ep1", {"words": 12, "source": "asr"}))
        from podinsight_dagster.errors import StepError
        pipes.report_custom_message(outcome_message("show/ep2", StepError("show/ep2: audio is not audio")))

    played, received = PlayedBatch(aws, worker), []
    result, logs = _materialize(played, received)
    assert result.success, logs
    outcomes = read_outcomes(received)
    assert outcomes["show/ep1"] == {"words": 12, "source": "asr"}
    assert str(outcomes["show/ep2"]) == "show/ep2: audio is not audio"
    # The job got the bootstrap variables (context and messages in S3) and the caller's settings.
    env = {e["name"]: e["value"] for e in played.submitted["containerOverrides"]["environment"]}
    assert {"DAGSTER_PIPES_CONTEXT", "DAGSTER_PIPES_MESSAGES"} <= set(env) and env["PODINSIGHT_MODEL"] == "tiny.en"
    assert played.submitted["jobQueue"] == QUEUE and played.submitted["jobDefinition"] == JOB_DEF
    assert played.submitted["tags"]["dagster/run-id"] == result.run_id
    assert any("worker says hello" in m for m in logs)
    assert any("2 log lines from CloudWatch" in m for m in logs)
    mat = result.asset_materializations_for_node("gpu_step")[0]
    assert mat.metadata["aws_batch_status"].value == "SUCCEEDED"
    # Nothing is left under _pipes/ (the context and the message chunks are removed).
    assert [k for k in _objects(played.s3) if k.startswith(PIPES_PREFIX)] == []


def test_failed_batch_job_is_a_failure_naming_the_job(aws, monkeypatch):
    monkeypatch.setenv("MOTO_SIMPLE_BATCH_FAIL_AFTER", "0")
    played, received = PlayedBatch(aws, worker=lambda pipes: None), []
    result, logs = _materialize(played, received)
    assert not result.success
    failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"][0]
    text = str(failure.step_failure_data.user_failure_data.description)
    assert f"AWS Batch job podinsight-gpu_step-{result.run_id[:8]} (" in text and ") FAILED" in text
    assert "CUDA out of memory" in text  # the log tail says why
    # Nothing is left under _pipes/ by a failed job either (its context was never read).
    assert [k for k in _objects(played.s3) if k.startswith(PIPES_PREFIX)] == []


def test_interrupted_run_terminates_the_batch_job(aws):
    played, received = PlayedBatch(aws, worker=lambda pipes: None, interrupt=True), []
    result, _ = _materialize(played, received)
    assert not result.success
    assert len(played.terminated) == 1 and "interrupted" in played.terminated[0]["reason"]



def test_transcript_asset_via_batch_submits_the_worker_job(aws, settings, monkeypatch):
    """PODINSIGHT_TRANSCRIBE_VIA=batch: the transcript asset submits whisper-base on transcribe; a FAILED job fails it."""
    from podinsight_dagster.assets import all_assets
    from podinsight_dagster.definitions import resources_for
    from podinsight_dagster.partitions import EPISODES

    for name, value in {"PODINSIGHT_TRANSCRIBE_VIA": "batch", "AWS_ENDPOINT_URL": aws.url, "AWS_REGION": "us-east-1",
                        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "MOTO_SIMPLE_BATCH_FAIL_AFTER": "0"}.items():
        monkeypatch.setenv(name, value)
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(EPISODES, ["show/ep1"])
        result = materialize(all_assets, selection=["transcript"], instance=instance, partition_key="show/ep1",
                             resources=resources_for("local"), raise_on_error=False)
    assert not result.success
    failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"][0]
    text = str(failure.step_failure_data.user_failure_data.description)
    assert f"AWS Batch job podinsight-transcript-{result.run_id[:8]} (" in text and ") FAILED" in text
    jobs = aws.client("batch").list_jobs(jobQueue=QUEUE, jobStatus="FAILED")["jobSummaryList"]
    assert [j["jobName"] for j in jobs] == [f"podinsight-transcript-{result.run_id[:8]}"]
    job = aws.client("batch").describe_jobs(jobs=[jobs[0]["jobId"]])["jobs"][0]
    assert job["jobDefinition"].split("/")[-1].startswith(JOB_DEF)
