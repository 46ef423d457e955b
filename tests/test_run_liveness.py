"""Dead podrun runs are found by their heartbeat (any machine), the pid only a fast path on the same host."""

import os
import socket
import time
import uuid

from dagster import DagsterInstance, DagsterRun, DagsterRunStatus, Definitions, job, op

from podinsight_dagster.launch import HEARTBEAT_TAG, HOST_TAG, PID_TAG, LocalLauncher


def _started(instance, **tags) -> str:
    run_id = str(uuid.uuid4())
    instance.add_run(DagsterRun(job_name="fetch_episodes", run_id=run_id, status=DagsterRunStatus.STARTED,
                                tags={"podinsight/trigger": "podrun", **tags}))
    return run_id


def test_a_stale_heartbeat_is_reaped_even_with_a_live_pid_and_a_fresh_one_is_not():
    here, said = socket.gethostname(), []
    with DagsterInstance.ephemeral() as instance:
        now = time.time()
        # Our own pid is alive, but a pid proves nothing once the heartbeat stopped (a reused pid).
        stale = _started(instance, **{PID_TAG: str(os.getpid()), HOST_TAG: here, HEARTBEAT_TAG: f"{now - 300}"})
        # Another machine's podrun: its pid means nothing here; its heartbeat is fresh.
        elsewhere = _started(instance, **{PID_TAG: "999999", HOST_TAG: "other-host", HEARTBEAT_TAG: f"{now - 5}"})
        # Another machine's podrun that stopped beating.
        gone = _started(instance, **{PID_TAG: "999999", HOST_TAG: "other-host", HEARTBEAT_TAG: f"{now - 121}"})
        # A pid that is gone on this host: reaped at once, whatever the heartbeat says.
        killed = _started(instance, **{PID_TAG: "999999", HOST_TAG: here, HEARTBEAT_TAG: f"{now}"})
        LocalLauncher(instance, Definitions(), say=said.append)
        status = {r: instance.get_run_by_id(r).status for r in (stale, elsewhere, gone, killed)}
        assert status == {stale: DagsterRunStatus.FAILURE, elsewhere: DagsterRunStatus.STARTED,
                          gone: DagsterRunStatus.FAILURE, killed: DagsterRunStatus.FAILURE}
        assert any(stale in line and "no heartbeat for 300 s" in line for line in said), said
        assert any(killed in line and "999999" in line and "died" in line for line in said), said


@op
def a_moment():
    time.sleep(0.5)


@job
def slow():
    a_moment()


def test_a_running_podrun_keeps_its_heartbeat_fresh():
    with DagsterInstance.ephemeral() as instance:
        launcher = LocalLauncher(instance, Definitions(jobs=[slow]), say=lambda _: None, heartbeat_interval_s=0.05)
        result = launcher.run_job("slow")
        assert result.success
        run = instance.get_run_by_id(result.detail)
        assert run.tags[HOST_TAG] == socket.gethostname() and run.tags[PID_TAG] == str(os.getpid())
        started = instance.get_run_stats(run.run_id).start_time
        assert float(run.tags[HEARTBEAT_TAG]) > started  # rewritten while the run ran, not only at creation
