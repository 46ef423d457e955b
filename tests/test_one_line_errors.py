"""Errors as one sentence before work starts: a missing AWS resource named with its setting; no Dagster stack trace
on the terminal for an episode's failure (it stays in the run's event log, and under --verbose)."""

from __future__ import annotations

import pytest
from dagster import DagsterInstance, materialize

from podinsight_dagster.settings import Settings
from tests.support.cdn import Fault

from .conftest import make_aws_stack

MISSING_RAW = ("Error: S3 bucket 'nope' does not exist (PODINSIGHT_RAW_BUCKET): create it with iac/ or set "
               "PODINSIGHT_RAW_BUCKET to the deployment's name; nothing was done")


@pytest.fixture
def stack(aws_home, moto_server, settings):
    make_aws_stack(moto_server, settings)
    return moto_server


def test_a_missing_bucket_is_one_line_before_anything_is_fetched(stack, podrun, demo_catalog, demo_cdn, monkeypatch):
    demo_catalog(["tech-talk"])
    monkeypatch.setenv("PODINSIGHT_RAW_BUCKET", "nope")
    result = podrun("fetch", ok=False)
    assert result.exit_code == 2  # a setting naming what does not exist (README: "Exit codes")
    assert result.output.strip() == MISSING_RAW
    assert demo_cdn.request_count() == 0  # not even the feed: nothing was downloaded
    assert "Contents" not in stack.client("s3").list_objects_v2(Bucket="pod-insights-manifests")


def test_missing_table_and_batch_queue_are_named_with_their_settings(stack, podrun, monkeypatch):
    monkeypatch.setenv("PODINSIGHT_STATUS_TABLE", "no-table")
    monkeypatch.setenv("PODINSIGHT_TRANSCRIBE_VIA", "batch")
    result = podrun("transcribe", ok=False)
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert result.output.strip() == (
        "Error: DynamoDB table 'no-table' does not exist (PODINSIGHT_STATUS_TABLE); Batch job queue 'transcribe' "
        "does not exist (PODINSIGHT_BATCH_JOB_QUEUE); Batch job definition 'whisper-base' does not exist "
        "(PODINSIGHT_BATCH_JOB_DEFINITION): create them with iac/ or set those variables to the deployment's names; "
        "nothing was done")


def test_a_run_launched_elsewhere_fails_its_first_step_with_the_same_sentence(stack, monkeypatch):
    """A run from the UI, a sensor or the daemon: raw_audio fails before any work, naming the bucket and setting."""
    from podinsight_dagster.assets import raw_audio
    from podinsight_dagster.definitions import resources_for
    from podinsight_dagster.partitions import EPISODES

    monkeypatch.setenv("PODINSIGHT_RAW_BUCKET", "nope")
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(EPISODES, ["show/ep1"])
        result = materialize([raw_audio], instance=instance, partition_key="show/ep1", resources=resources_for("aws"),
                             raise_on_error=False)
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failure.step_failure_data.user_failure_data.description == MISSING_RAW.removeprefix("Error: ")


def test_an_episode_failure_prints_no_stack_trace_unless_verbose(settings, podrun, demo_catalog, demo_cdn):
    demo_catalog(["tech-talk"])
    demo_cdn.set_fault("/audio/tech-talk/ep2.mp3", Fault(status=404))
    quiet = podrun("fetch", ok=False)
    assert quiet.exit_code == 1
    assert "Traceback" not in quiet.output and "Stack Trace" not in quiet.output
    assert "raw_audio failed: 1 of 3 episodes failed:" in quiet.output and "HTTP 404 Not Found" in quiet.output
    # The trace is in the run's event log, and on the terminal with --verbose (the 404 episode is tried again).
    verbose = podrun("fetch", "--verbose", ok=False)
    assert verbose.exit_code == 1 and "Stack Trace" in verbose.output and "STEP_FAILURE" in verbose.output
    with DagsterInstance.from_config(str(Settings.from_env().dagster_home)) as instance:
        quiet_run = instance.get_runs()[-1]
        [failed] = [e.dagster_event for e in instance.all_logs(quiet_run.run_id)
                    if e.dagster_event and e.dagster_event.event_type_value == "STEP_FAILURE"]
        assert failed.step_failure_data.error.stack  # the quiet run's trace, kept in its event log


def test_a_transcription_failure_prints_no_stack_trace_unless_verbose(settings, podrun, demo_catalog, demo_cdn):
    demo_catalog(["tech-talk"])
    podrun("fetch", "--limit", "1")
    for audio in settings.raw_root.rglob("audio/episode.mp3"):  # gone from raw storage: the transcript step fails
        audio.unlink()
    quiet = podrun("transcribe", ok=False)
    assert quiet.exit_code == 1 and "is missing (materialize raw_audio again)" in quiet.output
    assert "Traceback" not in quiet.output and "Stack Trace" not in quiet.output
    verbose = podrun("transcribe", "--verbose", "--retry-failed", ok=False)  # (the failure is not retryable)
    assert verbose.exit_code == 1 and "Stack Trace" in verbose.output
