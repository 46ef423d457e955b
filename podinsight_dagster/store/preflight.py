"""Before a run's work starts: the AWS resources it will use exist, or one sentence naming each missing one.

A bucket that does not exist was found only after an episode's audio had been downloaded (as a
``NoSuchBucket`` on PutObject, in a Dagster stack trace). ``check_stack`` asks first, with one cheap
call per resource (``head_bucket``, ``describe_table``, ``describe_job_queues``,
``describe_job_definitions``), and names what is missing with the setting that names it. ``podrun
fetch`` / ``transcribe`` call it before anything else; the ``raw_audio`` and ``transcript`` steps call
it when a run starts (a run launched from the UI, a sensor or the daemon). Credentials and endpoint
errors (botocore's) are left to the caller, which already turns them into one sentence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from botocore.exceptions import ClientError

from podinsight_dagster.settings import Settings

FETCH, TRANSCRIBE = "fetch", "transcribe"


class PreflightError(RuntimeError):
    """Resources the run needs are missing: one sentence naming each and its setting."""


@dataclass(frozen=True)
class Resource:
    kind: str      # "S3 bucket", "DynamoDB table", "Batch job queue", "Batch job definition"
    name: str
    setting: str   # the environment variable that names it


def needed(settings: Settings, phase: str) -> list[Resource]:
    """What a run of ``phase`` (fetch or transcribe) uses on AWS with these settings."""
    out: list[Resource] = []
    if settings.deployment == "aws":
        buckets = [("raw_bucket", "PODINSIGHT_RAW_BUCKET")]
        buckets.append(("manifest_bucket", "PODINSIGHT_MANIFEST_BUCKET") if phase == FETCH
                       else ("stage_bucket", "PODINSIGHT_STAGE_BUCKET"))
        out += [Resource("S3 bucket", getattr(settings, field), var) for field, var in buckets]
        out.append(Resource("DynamoDB table", settings.status_table, "PODINSIGHT_STATUS_TABLE"))
    if phase == TRANSCRIBE and settings.transcribe_via == "batch":
        out.append(Resource("Batch job queue", settings.batch_job_queue, "PODINSIGHT_BATCH_JOB_QUEUE"))
        out.append(Resource("Batch job definition", settings.batch_job_definition, "PODINSIGHT_BATCH_JOB_DEFINITION"))
    return out


def _problem(res: Resource, client_for: Callable[[str], object]) -> str | None:
    """Why ``res`` cannot be used (None: it can)."""
    try:
        if res.kind == "S3 bucket":
            client = client_for("s3")
            client.head_bucket(Bucket=res.name)
        elif res.kind == "DynamoDB table":
            client = client_for("dynamodb")
            client.describe_table(TableName=res.name)
        elif res.kind == "Batch job queue":
            client = client_for("batch")
            if not client.describe_job_queues(jobQueues=[res.name])["jobQueues"]:
                return "does not exist"
        else:
            client = client_for("batch")
            by = {"jobDefinitions": [res.name]} if ":" in res.name else {"jobDefinitionName": res.name,
                                                                         "status": "ACTIVE"}
            if not client.describe_job_definitions(**by)["jobDefinitions"]:
                return "does not exist"
    except ClientError as exc:
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        if code in ("404", "NoSuchBucket", "NotFound", "ResourceNotFoundException"):
            return "does not exist"
        if code in ("403", "AccessDenied", "AccessDeniedException", "Forbidden"):
            return "is not accessible with these credentials (access denied)"
        return f"cannot be used ({code or 'error'}: {err.get('Message') or exc})"
    return None


def check_stack(settings: Settings, phase: str, client_for: Callable[[str], object]) -> None:
    """Raise ``PreflightError`` (one sentence) unless every resource a ``phase`` run needs is there."""
    problems = [(res, why) for res in needed(settings, phase) if (why := _problem(res, client_for)) is not None]
    if not problems:
        return
    parts = [f"{res.kind} '{res.name}' {why} ({res.setting})" for res, why in problems]
    if len(problems) == 1:
        var = problems[0][0].setting
        advice = f"create it with iac/ or set {var} to the deployment's name"
    else:
        advice = "create them with iac/ or set those variables to the deployment's names"
    raise PreflightError(f"{'; '.join(parts)}: {advice}; nothing was done")
