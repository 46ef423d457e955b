"""A container runtime for moto's simple Batch mode: each submitted job runs as a local subprocess.

moto's Batch runs jobs in Docker, or, in its simple mode (``{"batch": {"use_docker": false}}``),
ends them at once without running anything. ``ThreadedMotoServer`` serves from this process, so
the simple backend's ``_mark_job_as_finished`` can be replaced here: the job starts (RUNNING, as
describe_jobs shows it), its job definition's ``command`` runs as a subprocess with the job's
environment (the job definition's, the submit's ``containerOverrides`` over it, and what the
"image" and the "task role" give: ``image_env``), and the job ends SUCCEEDED or FAILED with the
subprocess's exit code. Its stdout and stderr go to the CloudWatch log group and stream prefix of
the job definition's ``awslogs`` configuration, as Batch names streams
(``<prefix>/default/<job id>``), and describe_jobs shows that ``logConfiguration`` as Batch does
(moto leaves it out).

``MOTO_SIMPLE_BATCH_FAIL_AFTER=N`` (moto's switch for failing simple-mode jobs) keeps its meaning
here: the container is lost N seconds after it starts (killed, exit code 137, statusReason
"Host EC2 ... terminated."), as on a Spot reclaim. ``terminate_job`` kills the subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Mapping

import requests

KILLED = 128 + 9  # a container killed with SIGKILL exits 137


class BatchRuntime:
    """Context manager: moto's simple Batch mode, with every job run by ``_run`` in a thread."""

    def __init__(self, moto_url: str, image_env: Mapping[str, str], workdir: Path):
        self.moto_url = moto_url
        self.image_env = dict(image_env)
        self.workdir = workdir
        self.threads: list[threading.Thread] = []
        self.runs: list[dict] = []  # per job: id, command, env, exit code, output lines

    def __enter__(self) -> "BatchRuntime":
        from moto.batch_simple.models import BatchSimpleBackend

        self._backend_class = BatchSimpleBackend
        self._original = BatchSimpleBackend.__dict__["_mark_job_as_finished"]
        runtime = self

        def start(backend, include_start_attempt, job):
            runtime._start(backend, include_start_attempt, job)

        BatchSimpleBackend._mark_job_as_finished = start
        requests.post(self.moto_url + "/moto-api/config", json={"batch": {"use_docker": False}},
                      timeout=10).raise_for_status()
        return self

    def __exit__(self, *exc) -> None:
        try:
            for t in self.threads:
                t.join(timeout=120)
        finally:
            self._backend_class._mark_job_as_finished = self._original
            requests.post(self.moto_url + "/moto-api/config", json={"batch": {"use_docker": True}}, timeout=10)

    # -----------------------------------------------------------------------
    def _start(self, backend, include_start_attempt: bool, job) -> None:
        props = job.job_definition.container_properties or {}
        log_config = props.get("logConfiguration") or {}
        options = log_config.get("options") or {}
        if log_config.get("logDriver") == "awslogs":
            job._log_group = options.get("awslogs-group", job._log_group)
            prefix = options.get("awslogs-stream-prefix")
            if prefix:
                job._stream_name = f"{prefix}/default/{job.job_id}"
        details = job._container_details  # the bound method

        def container_details() -> dict:
            # What Batch's describe_jobs shows and moto's leaves out: the log configuration, the exit code.
            out = {**details(), **({"logConfiguration": log_config} if log_config else {})}
            if job.exit_code is not None:
                out["exitCode"] = job.exit_code
            return out

        job._container_details = container_details
        backend.backend._jobs[job.job_id] = job
        job.job_started_at = datetime.now()
        job.log_stream_name = job._stream_name
        if include_start_attempt:
            job._start_attempt()
        thread = threading.Thread(target=self._run, args=(job, props), name=f"batch-runtime-{job.job_id}",
                                  daemon=True)
        self.threads.append(thread)
        thread.start()

    def _run(self, job, props: dict) -> None:
        env = {e["name"]: e["value"] for e in props.get("environment", [])}
        env.update({e["name"]: e["value"] for e in job.container_overrides.get("environment", [])})
        env = {**self.image_env, **env, "AWS_BATCH_JOB_ID": job.job_id}
        command = list(job.container_overrides.get("command") or props.get("command") or [])
        if command and command[0] in ("python", "python3"):
            command[0] = sys.executable  # the image's interpreter
        fail_after = os.environ.get("MOTO_SIMPLE_BATCH_FAIL_AFTER")
        record = {"job_id": job.job_id, "command": command, "env": env, "exit_code": None, "lines": [],
                  "started": time.time(), "ended": None}
        self.runs.append(record)
        reason = "Essential container in task exited"
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.workdir / f"{job.job_id}.log", "w+b") as out:
            proc = subprocess.Popen(command, cwd=self.workdir, env=env, stdout=out, stderr=subprocess.STDOUT)
            # moto's jobs advance through their states only when its Docker runner advances them.
            job.status = "RUNNING"
            deadline = time.monotonic() + int(fail_after) if fail_after not in (None, "") else None
            while proc.poll() is None:
                if job.stop:  # terminate_job
                    proc.kill()
                    reason = job.job_stopped_reason or "terminated"
                elif deadline is not None and time.monotonic() >= deadline:
                    proc.kill()
                    reason = "Host EC2 (instance i-0moto) terminated."
                time.sleep(0.05)
            rc = proc.returncode
            out.seek(0)
            lines = out.read().decode("utf-8", "replace").splitlines()
        code = KILLED if rc < 0 else rc
        record.update(exit_code=code, lines=lines, ended=time.time())
        now = int(time.time() * 1000)
        job._log_backend.ensure_log_group(job._log_group)
        job._log_backend.ensure_log_stream(job._log_group, job.log_stream_name)
        if lines:
            job._log_backend.put_log_events(job._log_group, job.log_stream_name,
                                            [{"timestamp": now, "message": line or " "} for line in lines])
        job.exit_code = code
        if code != 0:
            job.job_stopped_reason = reason
        job._mark_stopped(success=code == 0)
