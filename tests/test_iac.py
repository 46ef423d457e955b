"""iac/ (Terraform) and appendix/ against the code: names, schema, metrics, IAM actions, Athena columns.

* ``terraform init -backend=false -plugin-dir=/opt/tf-plugins`` + ``validate`` in a temp copy
  (skipped when terraform is not installed);
* static checks that need no terraform: the table's schema is store/dynamo.py's TABLE, bucket
  and other names are settings.py's defaults, the dashboard shows exactly the metrics the code
  emits with their dimensions, the IAM policy allows exactly the calls the code makes,
  appendix/IAM_policy.json is iac's policy template rendered, the Athena DDL's columns are the
  keys segments_rows writes;
* ``terraform apply`` of the whole of iac/ against moto's server (once, the ``applied_stack``
  fixture), then the code against the stack it made: the services one by one, and the demo
  pipeline through ``podrun`` with PODINSIGHT_DEPLOYMENT=aws (Batch, PostgreSQL run storage),
  compared with the local run's outputs. Every resource applies on moto 5.2; what moto cannot
  prove (Spot interruption, CUDA, the alarm action firing, IAM enforcement) is in iac/README.md;
* checkov over iac/ in ``.venv-checkov`` (``make test`` makes it; ``iac/README.md``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import string
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml

from podinsight_dagster import settings as settings_module
from podinsight_dagster.costs.budget import BatchComputeFreezer
from podinsight_dagster.settings import Settings
from podinsight_dagster.store.dynamo import STATE_INDEX, TABLE

from .conftest import MotoServer

ROOT = Path(__file__).resolve().parents[1]
IAC = ROOT / "iac"
APPENDIX = ROOT / "appendix"
PACKAGE = ROOT / "podinsight_dagster"
PLUGIN_DIR = Path("/opt/tf-plugins")
TERRAFORM = shutil.which("terraform")
CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
needs_terraform = pytest.mark.skipif(TERRAFORM is None, reason="terraform is not installed (python-hcl2 is not "
                                                                "in the venv either): iac/ not validated")


# ---------------------------------------------------------------------------
# Reading our own HCL without terraform: small, exact patterns over files we write.
# ---------------------------------------------------------------------------
def _hcl(name: str) -> str:
    return (IAC / name).read_text()


def _block(text: str, header: str) -> str:
    """The body of the first block whose header line starts with ``header`` (braces balanced)."""
    start = text.index(header)
    i = text.index("{", start)
    depth = 0
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1:j]
    raise AssertionError(f"unbalanced block {header}")


def _attr(body: str, name: str) -> str:
    m = re.search(rf'^\s*{name}\s*=\s*"([^"]*)"', body, re.M)
    assert m, f"{name} not set"
    return m.group(1)


def variable_defaults() -> dict[str, object]:
    text = _hcl("variables.tf")
    out: dict[str, object] = {}
    for m in re.finditer(r'^variable "(\w+)"', text, re.M):
        body = _block(text[m.start():], m.group(0))
        d = re.search(r'^\s*default\s*=\s*(.+)$', body, re.M)
        if d:
            out[m.group(1)] = json.loads(d.group(1))
    return out


# ---------------------------------------------------------------------------
# terraform
# ---------------------------------------------------------------------------
def _tf_env(tmp: Path) -> dict:
    rc = tmp / "terraformrc"
    rc.write_text("")
    return {**os.environ, "TF_CLI_CONFIG_FILE": str(rc), "TF_IN_AUTOMATION": "1", "TF_INPUT": "0",
            "CHECKPOINT_DISABLE": "1", "TF_DATA_DIR": str(tmp / "tfdata")}


def _tf(workdir: Path, env: dict, *args: str, timeout: int = 300) -> str:
    proc = subprocess.run([TERRAFORM, *args, "-no-color"], cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"terraform {' '.join(args)}:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


def _iac_copy(tmp: Path) -> Path:
    """iac/ in a temp folder (no state or lock left in the tree), with the Lambda's package built."""
    work = tmp / "iac"
    shutil.copytree(IAC, work, ignore=shutil.ignore_patterns(".terraform", "build", "*.tfstate*", ".terraform.lock.hcl"))
    subprocess.run([sys.executable, str(work / "lambda" / "build.py"), str(work / "build" / "freeze_gpu.zip")],
                   check=True, capture_output=True)
    return work


def _init(work: Path, env: dict) -> None:
    if not PLUGIN_DIR.is_dir():
        pytest.skip(f"no local provider mirror at {PLUGIN_DIR}: terraform init would need the registry")
    _tf(work, env, "init", "-backend=false", f"-plugin-dir={PLUGIN_DIR}")


@needs_terraform
def test_terraform_validates(tmp_path):
    work = _iac_copy(tmp_path)
    env = _tf_env(tmp_path)
    _init(work, env)
    assert "Success" in _tf(work, env, "validate")
    _tf(work, env, "fmt", "-check", "-recursive")


def test_provider_pinned_to_the_mirror():
    pinned = re.search(r'version\s*=\s*"([^"]+)"', _block(_hcl("providers.tf"), "required_providers")).group(1)
    assert re.fullmatch(r"\d+\.\d+\.\d+", pinned), "pin an exact version (the offline mirror holds one)"
    mirror = PLUGIN_DIR / "registry.terraform.io" / "hashicorp" / "aws"
    if mirror.is_dir():
        assert pinned in {p.name for p in mirror.iterdir()}


# ---------------------------------------------------------------------------
# names and schema
# ---------------------------------------------------------------------------
def terraform_table() -> dict:
    """dynamodb_table.tf as a create_table request (the TABLE dict's shape)."""
    body = _block(_hcl("dynamodb_table.tf"), 'resource "aws_dynamodb_table" "status"')
    attrs = [{"AttributeName": _attr(b, "name"), "AttributeType": _attr(b, "type")}
             for b in re.findall(r"attribute\s*\{([^}]*)\}", body)]
    gsis = []
    for m in re.finditer(r"global_secondary_index\s*\{([^}]*)\}", body):
        g = m.group(1)
        gsis.append({"IndexName": _attr(g, "name"),
                     "KeySchema": [{"AttributeName": _attr(g, "hash_key"), "KeyType": "HASH"},
                                   {"AttributeName": _attr(g, "range_key"), "KeyType": "RANGE"}],
                     "Projection": {"ProjectionType": _attr(g, "projection_type")}})
    top = re.sub(r"\w+\s*\{[^}]*\}", "", body)  # the table's own attributes, not the nested blocks'
    return {"KeySchema": [{"AttributeName": _attr(top, "hash_key"), "KeyType": "HASH"},
                          {"AttributeName": _attr(top, "range_key"), "KeyType": "RANGE"}],
            "AttributeDefinitions": attrs, "GlobalSecondaryIndexes": gsis,
            "BillingMode": _attr(top, "billing_mode")}


def test_the_status_table_is_the_codes_schema():
    tf = terraform_table()
    assert tf["KeySchema"] == TABLE["KeySchema"]
    key = lambda a: a["AttributeName"]  # noqa: E731
    assert sorted(tf["AttributeDefinitions"], key=key) == sorted(TABLE["AttributeDefinitions"], key=key)
    assert tf["GlobalSecondaryIndexes"] == TABLE["GlobalSecondaryIndexes"]
    assert tf["GlobalSecondaryIndexes"][0]["IndexName"] == STATE_INDEX
    assert tf["BillingMode"] == TABLE["BillingMode"]


def test_names_default_to_the_codes():
    defaults = variable_defaults()
    s = Settings(home=Path("/nonexistent"), feeds_dir=Path("/nonexistent"))
    assert defaults["raw_bucket"] == settings_module.RAW_BUCKET == s.raw_bucket
    assert defaults["stage_bucket"] == settings_module.STAGE_BUCKET == s.stage_bucket
    assert defaults["manifest_bucket"] == settings_module.MANIFEST_BUCKET == s.manifest_bucket
    assert defaults["archive_bucket"] == settings_module.ARCHIVE_BUCKET == s.archive_bucket
    assert defaults["status_table"] == s.status_table
    assert defaults["metrics_namespace"] == s.metrics_namespace
    assert defaults["gpu_compute_environment"] == s.gpu_compute_environment
    assert defaults["gpu_job_queue"] == s.batch_job_queue  # where PipesBatchClient submits the worker
    assert defaults["gpu_job_definition"] == s.batch_job_definition
    assert defaults["region"] == s.aws_region
    assert defaults["cost_ceiling_usd"] == s.cost_ceiling_usd
    # Every resource takes its name from those variables, never a literal.
    assert re.search(r"bucket\s*=\s*each\.value\.name", _hcl("lifecycle.tf"))
    assert re.search(r"name\s*=\s*var\.status_table", _hcl("dynamodb_table.tf"))
    assert re.search(r"compute_environment_name\s*=\s*var\.gpu_compute_environment", _hcl("batch_gpu_spot.tf"))
    alarm = _hcl("cw_alarm.tf")
    assert re.search(r"namespace\s*=\s*var\.metrics_namespace", alarm)
    assert re.search(r'metric_name\s*=\s*"GPUCostToday"', alarm)
    assert re.search(r"threshold\s*=\s*var\.cost_ceiling_usd", alarm)


def test_run_book_sizes():
    fargate, gpu = _hcl("batch_fargate_spot.tf"), _hcl("batch_gpu_spot.tf")
    assert re.search(r'type\s*=\s*"FARGATE_SPOT"', fargate) and re.search(r"max_vcpus\s*=\s*20\b", fargate)
    assert re.search(r"attempt_duration_seconds\s*=\s*900\b", fargate)
    assert '{ type = "VCPU", value = "0.25" }' in fargate
    assert re.search(r'type\s*=\s*"SPOT"', gpu) and re.search(r"max_vcpus\s*=\s*40\b", gpu)
    assert "allocation_strategy" in gpu and variable_defaults()["gpu_instance_types"] == ["g5.xlarge"]
    assert '{ type = "GPU", value = "1" }' in gpu and '{ type = "MEMORY", value = "8192" }' in gpu
    assert variable_defaults()["gpu_job_definition"] == "whisper-base"


# ---------------------------------------------------------------------------
# metrics: the dashboard shows what the code emits
# ---------------------------------------------------------------------------
def emitted_metrics() -> dict[str, set[str]]:
    """Metric("Name", value, unit, (("dim", value), ...)) calls in the package: name -> dimension names."""
    out: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        for m in re.finditer(r'\bMetric\("(\w+)",(.*)$', path.read_text(), re.M):
            out.setdefault(m.group(1), set()).update(re.findall(r'\(\("(\w+)",', m.group(2)))
    return out


def render(template: str, **values: str) -> str:
    """A Terraform templatefile() of plain ${name} substitutions."""
    return string.Template(template).substitute(values)


def dashboard_metrics(body: dict, namespace: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for widget in body["widgets"]:
        for row in widget["properties"].get("metrics", []):
            if isinstance(row[0], dict):  # a SEARCH expression: {namespace,dim,...} MetricName="..."
                m = re.fullmatch(r"""SEARCH\('\{([^}]*)\} MetricName="(\w+)"', '\w+', \d+\)""", row[0]["expression"])
                assert m, row[0]["expression"]
                ns, *dims = m.group(1).split(",")
                out.setdefault(m.group(2), set()).update(dims)
            else:  # [namespace, name, dim, value, ...]
                ns, name, *pairs = [c for c in row if not isinstance(c, dict)]
                out.setdefault(name, set()).update(pairs[0::2])
            assert ns == namespace
    return out


def test_dashboard_shows_exactly_the_emitted_metrics():
    emitted = emitted_metrics()
    assert set(emitted) == {"DownloadSuccessRate", "PerHost429", "GBTransferred", "AvgDownloadMB", "GPUCostToday"}
    assert emitted["DownloadSuccessRate"] == {"feed_slug"} and emitted["GPUCostToday"] == set()
    body = json.loads(render((IAC / "cw_dashboard.json").read_text(), namespace="PodInsight", region="us-east-1",
                             cost_alarm_arn="arn:aws:cloudwatch:us-east-1:123456789012:alarm:PodInsight-GPUCostToday"))
    assert dashboard_metrics(body, "PodInsight") == emitted
    assert any(w["type"] == "alarm" for w in body["widgets"])


def test_the_alarm_lambda_makes_the_freezers_call(monkeypatch):
    calls = []

    class Batch:
        def update_compute_environment(self, **kwargs):
            calls.append(kwargs)

    BatchComputeFreezer(Batch(), "gpu_spot").freeze()
    monkeypatch.setenv("COMPUTE_ENVIRONMENT", "gpu_spot")
    monkeypatch.syspath_prepend(str(IAC / "lambda"))
    import freeze_gpu

    def event(state):
        return {"Records": [{"Sns": {"Message": json.dumps({"NewStateValue": state})}}]}

    assert freeze_gpu.handler(event("OK"), None, client=Batch()) == {"frozen": False, "states": ["OK"]}
    assert len(calls) == 1
    assert freeze_gpu.handler(event("ALARM"), None, client=Batch())["frozen"]
    assert calls[0] == calls[1] == {"computeEnvironment": "gpu_spot", "state": "DISABLED",
                                    "computeResources": {"desiredvCpus": 0}}


# ---------------------------------------------------------------------------
# IAM: exactly the calls the code makes
# ---------------------------------------------------------------------------
# boto3 operation -> IAM actions it needs. Every operation the code calls must be here (and
# every one here must be called), so a new call fails this test until the policy allows it.
CALLS = {
    "head_object": {"s3:GetObject"},
    "get_object": {"s3:GetObject"},
    "put_object": {"s3:PutObject"},
    "create_multipart_upload": {"s3:PutObject"},
    "upload_part": {"s3:PutObject"},
    "complete_multipart_upload": {"s3:PutObject"},
    "abort_multipart_upload": {"s3:AbortMultipartUpload"},
    "list_objects_v2": {"s3:ListBucket"},
    "head_bucket": {"s3:ListBucket"},  # the preflight (store/preflight.py): the bucket exists and is ours
    "delete_object": {"s3:DeleteObject"},
    "get_item": {"dynamodb:GetItem"},
    "put_item": {"dynamodb:PutItem"},
    "update_item": {"dynamodb:UpdateItem"},
    "query": {"dynamodb:Query"},
    "scan": {"dynamodb:Scan"},
    "describe_table": {"dynamodb:DescribeTable"},  # the preflight
    # A transaction is authorised item by item: Put, Update (and ConditionCheck items).
    "transact_write_items": {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:ConditionCheckItem"},
    "put_metric_data": {"cloudwatch:PutMetricData"},
    "list_metrics": {"cloudwatch:ListMetrics"},
    "get_metric_data": {"cloudwatch:GetMetricData"},
    "update_compute_environment": {"batch:UpdateComputeEnvironment"},
    "describe_compute_environments": {"batch:DescribeComputeEnvironments"},
    # The preflight of a transcription through Batch: the queue and the job definition exist.
    "describe_job_queues": {"batch:DescribeJobQueues"},
    "describe_job_definitions": {"batch:DescribeJobDefinitions"},
}
# Not called by the code yet, allowed for the Pipes-on-Batch launcher (docs/transcription.md:
# "Pipes: the worker out of process") and for reading the jobs' logs; S3 parts listing for resuming an upload.
PLANNED = {"batch:SubmitJob", "batch:DescribeJobs", "batch:TerminateJob", "logs:DescribeLogStreams",
           "logs:GetLogEvents", "logs:FilterLogEvents", "s3:ListMultipartUploadParts"}
# Set-up only: tests and first-time bootstrap (production creates the table with Terraform).
NOT_AT_RUN_TIME = {"create_table", "get_waiter", "get_paginator"}


def code_operations() -> set[str]:
    ops: set[str] = set()
    for sub in ("store", "costs", "fetch"):
        for path in (PACKAGE / sub).rglob("*.py"):
            text = path.read_text()
            ops |= set(re.findall(r"\b(?:client|table)\.([a-z][a-z_]*)\(", text))  # (HttpClient._open: not boto3)
            ops |= set(re.findall(r'get_paginator\("([a-z_0-9]+)"\)', text))
            ops |= set(re.findall(r"\bself\.table\.(query|scan)\b", text))  # passed as callables to a pager
    return ops - NOT_AT_RUN_TIME


def policy_template_values(region: str, account_id: str, **names: str) -> dict[str, str]:
    d = variable_defaults()
    values = {k: str(d[k]) for k in ("raw_bucket", "stage_bucket", "manifest_bucket", "archive_bucket",
                                     "status_table", "metrics_namespace", "gpu_compute_environment", "fetch_job_queue",
                                     "gpu_job_queue", "fetch_job_definition", "gpu_job_definition")}
    log_group = re.search(r'job_log_group\s*=\s*"([^"]+)"', _hcl("iam.tf")).group(1)
    return {**values, "region": region, "account_id": account_id, "log_group": log_group, **names}


def rendered_policy(region: str = "*", account_id: str = "*") -> dict:
    return json.loads(render((IAC / "policies" / "app_policy.json.tftpl").read_text(),
                             **policy_template_values(region, account_id)))


def allowed(policy: dict) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for st in policy["Statement"]:
        assert st["Effect"] == "Allow"
        actions = [st["Action"]] if isinstance(st["Action"], str) else st["Action"]
        resources = [st["Resource"]] if isinstance(st["Resource"], str) else st["Resource"]
        for a in actions:
            assert "*" not in a, f"wildcard action {a}"
            out.setdefault(a, []).extend(resources)
    return out


def test_iam_policy_allows_exactly_the_codes_calls():
    ops = code_operations()
    assert ops == set(CALLS), f"calls in the code not mapped to IAM actions: {ops - set(CALLS)}; " \
                              f"mapped but no longer called: {set(CALLS) - ops}"
    needed = set().union(*CALLS.values())
    policy = allowed(rendered_policy("us-east-1", "123456789012"))
    assert set(policy) == needed | PLANNED
    # Scoped: objects in the four buckets, the table and its state index, the one compute environment.
    for bucket in ("pod-insights-raw", "pod-insights-stage", "pod-insights-manifests", "pod-insights-all-in"):
        assert f"arn:aws:s3:::{bucket}/*" in policy["s3:PutObject"]
        assert f"arn:aws:s3:::{bucket}" in policy["s3:ListBucket"]
    table = "arn:aws:dynamodb:us-east-1:123456789012:table/podinsights-status"
    assert policy["dynamodb:PutItem"] == [table]
    assert f"{table}/index/{STATE_INDEX}" in policy["dynamodb:Query"]
    assert policy["batch:UpdateComputeEnvironment"] == [
        "arn:aws:batch:us-east-1:123456789012:compute-environment/gpu_spot"]
    [metrics] = [s for s in rendered_policy()["Statement"] if s["Action"] == ["cloudwatch:PutMetricData"]]
    assert metrics["Condition"] == {"StringEquals": {"cloudwatch:namespace": "PodInsight"}}


def test_appendix_policy_is_iacs_policy_rendered():
    """One source: iac/policies/app_policy.json.tftpl; appendix/IAM_policy.json is it with the default names."""
    appendix = json.loads((APPENDIX / "IAM_policy.json").read_text())
    assert appendix == rendered_policy("*", "*"), \
        "regenerate appendix/IAM_policy.json: python -m tests.test_iac"
    assert 'templatefile("${path.module}/policies/app_policy.json.tftpl"' in _hcl("iam.tf")


# ---------------------------------------------------------------------------
# Athena
# ---------------------------------------------------------------------------
ATHENA_TYPES = {str: "string", float: "double", int: "int"}


def test_athena_ddl_columns_are_what_segments_rows_writes():
    from podinsight_dagster.transcribe.options import Segment, Transcript
    from podinsight_dagster.transcribe.steps import segments_rows

    segs = [Segment(0.0, 1.5, "Hello there.", -0.2, 0.01, 1.1),
            Segment(1.5, 3.0, "Welcome back.", None, None, 1.0, speaker="Ann")]
    rows = segments_rows(Transcript("Hello there. Welcome back.", "en", 1.0, 3.0, 3.0, segs, "base", "cpu",
                                    "int8", 1.0))
    written: dict[str, str] = {}
    for row in rows:
        for k, v in row.items():
            if v is not None:
                written.setdefault(k, ATHENA_TYPES[type(v)])
    assert set().union(*rows) == set(written)

    ddl = (APPENDIX / "create_transcript_table.sql").read_text()
    ddl = "\n".join(line.split("--")[0] for line in ddl.splitlines())
    columns = re.search(r"CREATE EXTERNAL TABLE[^(]*\((.*?)\)\s*PARTITIONED BY\s*\((.*?)\)", ddl, re.S)
    cols = dict(c.split() for c in columns.group(1).split(",") if c.strip())
    parts = dict(c.split() for c in columns.group(2).split(",") if c.strip())
    assert cols == written
    assert parts == {"feed_slug": "string", "guid_key": "string"}
    assert "LOCATION 's3://pod-insights-stage/'" in ddl
    assert "'s3://pod-insights-stage/${feed_slug}/${guid_key}/segments/'" in ddl  # layout.segments_key's folder


# ---------------------------------------------------------------------------
# apply against moto, then the code against what it made
# ---------------------------------------------------------------------------
SERVICES = ("s3", "dynamodb", "cloudwatch", "iam", "sts", "sns", "lambda", "logs", "batch", "ecs", "ec2")


@dataclass
class AppliedStack:
    """iac/ applied on a moto server: the server, the Terraform working copy and its environment, the outputs."""

    server: MotoServer
    work: Path
    env: dict
    outputs: dict


@pytest.fixture(scope="module")
def applied_stack(tmp_path_factory):
    """``terraform apply`` of the whole of iac/ against a moto server, once for this module's tests.

    moto keeps its backends per process: no test of this module may use the ``moto_server``
    fixture (it resets them), and the tests leave the stack as they found it.
    """
    if TERRAFORM is None:
        pytest.skip("terraform is not installed: iac/ not applied")
    tmp = tmp_path_factory.mktemp("applied")
    with pytest.MonkeyPatch.context() as mp:
        # moto attaches AWS managed policies (AWSBatchServiceRole, ...) only when it has loaded them.
        mp.setenv("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
        mp.setenv("MOTO_RECORDER_FILEPATH", str(tmp / "moto_recording"))
        server = MotoServer()
        try:
            requests.post(server.url + "/moto-api/reset", timeout=10).raise_for_status()
            work = _iac_copy(tmp)
            endpoints = "\n".join(f'    {s} = "{server.url}"' for s in SERVICES)
            (work / "moto_override.tf").write_text(f"""
provider "aws" {{
  region                      = "us-east-1"
  access_key                  = "testing"
  secret_key                  = "testing"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  skip_region_validation      = true
  s3_use_path_style           = true
  endpoints {{
{endpoints}
  }}
}}
""")
            env = _tf_env(tmp)
            _init(work, env)
            # Everything in iac/ applies on moto 5.2 (79 resources), no -target needed. The S3 lifecycle
            # configurations take ~55 s: the provider waits for them to read back settled.
            _tf(work, env, "apply", "-auto-approve", "-var", "table_deletion_protection=false", timeout=600)
            outputs = {k: v["value"] for k, v in json.loads(_tf(work, env, "output", "-json")).items()}
            yield AppliedStack(server, work, env, outputs)
        finally:
            server.stop()


@contextmanager
def tls_policies_lifted(s3, buckets):
    """The buckets' TLS-only policies (lifecycle.tf) lifted, and put back after.

    moto serves plain HTTP and evaluates bucket policies, so with them the code's writes are refused.
    """
    policies = {b: s3.get_bucket_policy(Bucket=b)["Policy"] for b in buckets}
    assert all('"aws:SecureTransport":"false"' in p.replace(" ", "") for p in policies.values())
    for bucket in policies:
        s3.delete_bucket_policy(Bucket=bucket)
    try:
        yield
    finally:
        for bucket, policy in policies.items():
            s3.put_bucket_policy(Bucket=bucket, Policy=policy)


@pytest.mark.timeout(900)
def test_apply_on_moto_then_the_code_runs_on_the_stack(applied_stack, tmp_path, monkeypatch):
    moto_server, work, env, outputs = (applied_stack.server, applied_stack.work, applied_stack.env,
                                       applied_stack.outputs)
    assert outputs["buckets"] == {"raw": "pod-insights-raw", "stage": "pod-insights-stage",
                                  "manifests": "pod-insights-manifests", "archive": "pod-insights-all-in"}

    # The table Terraform made is the table create_table makes.
    ddb = moto_server.client("dynamodb")
    made = ddb.describe_table(TableName="podinsights-status")["Table"]
    assert made["KeySchema"] == TABLE["KeySchema"]
    key = lambda a: a["AttributeName"]  # noqa: E731
    assert sorted(made["AttributeDefinitions"], key=key) == sorted(TABLE["AttributeDefinitions"], key=key)
    [gsi] = made["GlobalSecondaryIndexes"]
    assert {k: gsi[k] for k in ("IndexName", "KeySchema", "Projection")} == TABLE["GlobalSecondaryIndexes"][0]
    assert made["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"

    s3 = moto_server.client("s3")
    for bucket in outputs["buckets"].values():
        rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
        assert any(r.get("AbortIncompleteMultipartUpload", {}).get("DaysAfterInitiation") == 1 for r in rules)
        block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        assert all(block.values())
    assert s3.get_bucket_versioning(Bucket="pod-insights-stage")["Status"] == "Enabled"
    assert s3.get_bucket_versioning(Bucket="pod-insights-manifests")["Status"] == "Enabled"
    assert s3.get_bucket_versioning(Bucket="pod-insights-all-in")["Status"] == "Enabled"
    for bucket in outputs["buckets"].values():  # the same protections on all four
        assert s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
        assert '"aws:SecureTransport":"false"' in s3.get_bucket_policy(Bucket=bucket)["Policy"].replace(" ", "")
    assert s3.get_bucket_versioning(Bucket="pod-insights-raw").get("Status") != "Enabled"
    cw = moto_server.client("cloudwatch")
    [alarm] = cw.describe_alarms(AlarmNames=["PodInsight-GPUCostToday"])["MetricAlarms"]
    assert (alarm["Namespace"], alarm["MetricName"], alarm["Threshold"]) == ("PodInsight", "GPUCostToday", 40.0)
    assert alarm["AlarmActions"] == [outputs["cost_alarm_topic_arn"]]
    assert json.loads(cw.get_dashboard(DashboardName="PodInsight")["DashboardBody"])["widgets"]
    [env_] = moto_server.client("batch").describe_compute_environments(
        computeEnvironments=["gpu_spot"])["computeEnvironments"]
    assert env_["state"] == "ENABLED"

    # The code on the stack Terraform made.
    from podinsight_dagster.costs.budget import SpendEntry
    from podinsight_dagster.services import build_services
    from podinsight_dagster.store.checkpoints import EpisodeRecord

    for var, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")):
        monkeypatch.setenv(var, value)
    settings = Settings(home=tmp_path / "home", feeds_dir=tmp_path / "home" / "feeds", deployment="aws",
                        aws_endpoint_url=moto_server.url, aws_region="us-east-1")
    services = build_services(settings)
    # The buckets are TLS only (lifecycle.tf's bucket policy) and moto serves plain HTTP here:
    # moto evaluates the policy, so the code's first write is refused. Lift the policies for the
    # code's checks, and put them back before the last plan.
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError, match=r"AccessDenied|\(403\)"):
        services.raw.put_bytes("probe/insecure.txt", b"over http")
    probe = "probe/ep-001"  # a feed of its own: the module's other test runs the demo feeds on this stack
    try:
        with tls_policies_lifted(s3, outputs["buckets"].values()):
            from podinsight_dagster.services import preflight

            preflight(settings.replace(transcribe_via="batch"), "transcribe")  # every resource it names is iac/'s
            preflight(settings, "fetch")
            for store in (services.raw, services.stage, services.manifests):
                store.put_bytes("probe/hello.txt", b"hello " + store.name.encode())
                assert store.get_bytes("probe/hello.txt") == b"hello " + store.name.encode()
                store.delete("probe/hello.txt")
            rec = EpisodeRecord(partition_key=probe, feed_slug="probe", guid_key="ep-001",
                                guid="ep-001", title="Episode 1", enclosure_url="https://example.com/1.mp3",
                                discovered_at=1.0, updated_at=1.0)
            assert services.checkpoints.register_episodes([rec]) == [probe]
            services.checkpoints.mark_downloaded(probe, bytes=123, sha256="0" * 64)
            [got] = services.checkpoints.episodes(state="downloaded")  # the state-index GSI
            assert got.partition_key == probe and got.bytes == 123
            spent = services.budget.cost_today()
            services.budget.record_spend(SpendEntry(probe, 0.25, 3000.0, "cuda", "base"))
            assert services.budget.cost_today() == pytest.approx(spent + 0.25)
            assert json.loads(next(iter(services.metrics.latest("GPUCostToday")))) == {}
            services.budget.freeze("test")  # BatchComputeFreezer on the Terraform-made compute environment
            assert services.budget.freezer.is_frozen()
        # A freeze is never undone by the next apply (state and desired vCPUs are ignored).
        plan = _tf(work, env, "plan", "-var", "table_deletion_protection=false", "-detailed-exitcode")
        assert "No changes" in plan
    finally:
        services.budget.lift()
        ddb.delete_item(TableName="podinsights-status",
                        Key={"feed_slug": {"S": "probe"}, "guid_key": {"S": "ep-001"}})
        services.close()


VOLATILE = {"wall_sec", "realtime_factor", "cost_usd", "downloaded_at", "transcribed_at", "created_at", "diarization_sec",
            "run_id"}


def _stable(value):
    """A stage document without what differs between two runs of the same work (times, speeds, costs)."""
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def aws_instance_yaml() -> str:
    """deploy/dagster.yaml without what needs ECS or a bucket iac/ does not make: its PostgreSQL storage, pools."""
    doc = yaml.safe_load((ROOT / "deploy" / "dagster.yaml").read_text())
    del doc["run_launcher"]  # EcsRunLauncher: runs are launched in-process by podrun here
    del doc["compute_logs"]  # S3ComputeLogManager: its bucket is the deployment's, not iac/'s
    return yaml.safe_dump(doc)


@pytest.mark.timeout(900)
def test_the_demo_pipeline_on_the_applied_stack_is_the_local_run(applied_stack, home, demo_catalog, podrun, postgres,
                                                                 monkeypatch, tmp_path):
    """``podrun fetch`` and ``podrun transcribe`` with PODINSIGHT_DEPLOYMENT=aws on the stack iac/ made.

    S3 (the Terraform-made buckets), DynamoDB (the table and its state index), CloudWatch (metrics,
    and the job's log stream in the Terraform-made log group), AWS Batch (the Terraform-made queue
    ``transcribe`` and job definition ``whisper-base``: its command, the worker, runs as a subprocess
    through tests/support/batch_runtime.py, and the job's status follows it) and Dagster's run and
    event storage on PostgreSQL. The transcripts, segments, subtitles and KPIs are the local run's,
    times aside. Before that, the Batch job's container is lost at once (``MOTO_SIMPLE_BATCH_FAIL_AFTER=0``):
    one failure naming the job and why, nothing lost or charged, and the same command again completes.

    Not from iac/, made or changed by the test: the TLS-only bucket policies are lifted while the code
    runs (moto serves plain HTTP and enforces them); the PostgreSQL server is Debian's, started by the
    tests (iac/ makes no database; RUNBOOK.md §1 gives it to the deployment through DAGSTER_PG_*); moto's
    simple Batch mode with a runtime that plays the container (the interpreter, code and credentials are
    this machine's, not the image's and the task role's); the Dagster instance is deploy/dagster.yaml
    without the EcsRunLauncher and the S3 compute logs (``aws_instance_yaml``).
    """
    import psycopg2

    from podinsight_dagster.services import build_services
    from podinsight_dagster.store import layout
    from podinsight_dagster.store.checkpoints import DOWNLOADED
    from podinsight_dagster.store.keys import EpisodeKey
    from podinsight_dagster.pipes_batch import PIPES_PREFIX
    from tests.support.batch_runtime import KILLED, BatchRuntime
    from tests.support.postgres import PG_DB, PG_PASSWORD, PG_USER, dagster_env

    # The reference: the local deployment (folders, SQLite, Whisper in-process).
    demo_catalog(["tech-talk"])
    podrun("fetch", "--limit", "2")
    podrun("transcribe", "--model", "tiny.en")
    local = build_services(Settings.from_env())
    keys = sorted(r.partition_key for r in local.checkpoints.episodes(state="transcribed"))
    assert len(keys) == 2

    server, buckets = applied_stack.server, applied_stack.outputs["buckets"].values()
    aws_home = tmp_path / "aws-home"
    for name, value in {"PODINSIGHT_HOME": str(aws_home), "DAGSTER_HOME": str(aws_home / "dagster"),
                        "PODINSIGHT_DEPLOYMENT": "aws", "PODINSIGHT_TRANSCRIBE_VIA": "batch",
                        "AWS_ENDPOINT_URL": server.url, "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing", **dagster_env(postgres)}.items():
        monkeypatch.setenv(name, value)
    (aws_home / "dagster").mkdir(parents=True)
    (aws_home / "dagster" / "dagster.yaml").write_text(aws_instance_yaml())  # podrun's instance: PostgreSQL
    aws_settings = Settings.from_env().replace(feeds_dir=local.settings.feeds_dir)
    container = tmp_path / "container"
    # What the podcast-whisper image (docker/Dockerfile.gpu) and the job's task role give the worker.
    image_env = {"PATH": os.environ["PATH"], "HOME": str(container), "PYTHONPATH": str(ROOT),
                 "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1", "PODINSIGHT_MODEL": "base",
                 "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    s3 = server.client("s3")
    with tls_policies_lifted(s3, buckets), BatchRuntime(server.url, image_env, container) as runtime:
        podrun("fetch", "--limit", "2", "--feeds", str(local.settings.feeds_dir))
        aws = build_services(aws_settings)
        assert sorted(r.partition_key for r in aws.checkpoints.episodes(state=DOWNLOADED)) == keys

        # The Batch job's container is lost (as on a Spot reclaim): one failure naming the job and why.
        monkeypatch.setenv("MOTO_SIMPLE_BATCH_FAIL_AFTER", "0")
        failed = podrun("transcribe", "--model", "tiny.en", ok=False)
        monkeypatch.delenv("MOTO_SIMPLE_BATCH_FAIL_AFTER")
        [lost] = runtime.runs
        assert failed.exit_code == 1 and lost["exit_code"] == KILLED
        [why] = [line for line in failed.output.splitlines() if line.startswith("  transcript failed:")]
        assert re.fullmatch(rf"  transcript failed: AWS Batch job podinsight-transcript-[0-9a-f]{{8}} "
                            rf"\({lost['job_id']}\) FAILED: Host EC2 \(instance i-0moto\) terminated\.; "
                            r"exit code 137", why), why
        # Nothing lost, nothing charged: still downloaded, the audio in place, no transcript, no spend.
        assert sorted(r.partition_key for r in aws.checkpoints.episodes(state=DOWNLOADED)) == keys
        for pk in keys:
            ek = EpisodeKey.parse(pk)
            assert aws.raw.exists(layout.audio_key(ek)) and not aws.stage.exists(layout.transcript_key(ek))
        assert not [e for e in aws.budget.ledger.entries() if e.partition_key in keys]

        podrun("transcribe", "--model", "tiny.en")  # the same command again completes

        status = json.loads(podrun("status", "--json").output)
        assert status["episodes"] == {"discovered": 1, "downloaded": 0, "transcribed": 2, "failed": 0}
        assert status["cost_today_usd"] > 0 and "127.0.0.1" in status["per_host_429_rate"]
        assert sorted(e.partition_key for e in aws.budget.ledger.entries() if e.partition_key in keys) == keys
        assert sorted(r.partition_key for r in aws.checkpoints.episodes(state="transcribed")) == keys
        # The archive on the stack: `podrun query` over the stage bucket, archive_rollup into the all-in bucket.
        rows = json.loads(podrun("query", "SELECT partition_key FROM episodes ORDER BY 1", "--json").output)
        assert [r["partition_key"] for r in rows] == keys
        from dagster import DagsterInstance, materialize

        from podinsight_dagster.assets import archive_rollup
        from podinsight_dagster.definitions import resources_for

        with DagsterInstance.ephemeral() as instance:
            assert materialize([archive_rollup], instance=instance, resources=resources_for("aws")).success
        rolled = {o["Key"] for o in s3.list_objects_v2(Bucket="pod-insights-all-in")["Contents"]}
        assert {"segments/feed_slug=tech-talk/data.parquet", "kpis/feed_slug=tech-talk/data.parquet"} <= rolled
        for pk in keys:
            ek = EpisodeKey.parse(pk)
            for key in (layout.transcript_key(ek), layout.segments_key(ek), layout.kpis_key(ek)):
                here, there = local.stage.get_bytes(key), aws.stage.get_bytes(key)
                if key.endswith("segments.json"):
                    assert here == there, key  # JSON Lines of text, times and speakers: byte for byte
                else:
                    assert _stable(json.loads(here)) == _stable(json.loads(there)), key
            for key in (layout.vtt_key(ek), layout.srt_key(ek)):
                assert local.stage.get_bytes(key) == aws.stage.get_bytes(key), key
            meta = aws.raw.get_json(layout.meta_key(ek))
            assert meta["transcript_key"] == layout.transcript_key(ek)  # patched by compare-and-swap (If-Match)
            head = s3.head_object(Bucket="pod-insights-raw", Key=layout.audio_key(ek), ChecksumMode="ENABLED")
            assert head.get("ChecksumSHA256")  # stored with a checksum S3 verified
        assert not list(aws.stage.list_keys(PIPES_PREFIX + "/"))  # both jobs' context and messages removed
        aws.close()
        local.close()

    # Both jobs ran the job definition's command, with the submit's settings over the definition's.
    lost_job, done_job = runtime.runs
    assert done_job["exit_code"] == 0
    assert lost_job["command"] == done_job["command"] == [sys.executable, "-m", "podinsight_dagster.worker"]
    assert done_job["env"]["PODINSIGHT_MODEL"] == "tiny.en" and done_job["env"]["PODINSIGHT_DEPLOYMENT"] == "aws"
    jobs = server.client("batch").describe_jobs(jobs=[lost_job["job_id"], done_job["job_id"]])["jobs"]
    assert [(j["status"], j["jobQueue"].split("/")[-1], j["jobDefinition"].split("/")[-1].split(":")[0])
            for j in jobs] == [("FAILED", "transcribe", "whisper-base"), ("SUCCEEDED", "transcribe", "whisper-base")]
    stream = f"whisper/default/{done_job['job_id']}"  # the job definition's awslogs group and prefix
    logged = [e["message"] for e in server.client("logs").get_log_events(
        logGroupName="/aws/batch/podinsight", logStreamName=stream, startFromHead=True)["events"]]
    assert "2 of 2 episodes done, 0 failed" in logged
    names = {m["MetricName"] for m in server.client("cloudwatch").list_metrics(Namespace="PodInsight")["Metrics"]}
    assert {"DownloadSuccessRate", "PerHost429", "GBTransferred", "AvgDownloadMB", "GPUCostToday"} <= names

    # The runs are in PostgreSQL, and the Batch job's story in their event logs.
    with psycopg2.connect(host="127.0.0.1", port=postgres.port, dbname=PG_DB, user=PG_USER,
                          password=PG_PASSWORD) as conn, conn.cursor() as cur:
        cur.execute("SELECT run_id, pipeline_name, status FROM runs ORDER BY create_timestamp")
        runs = cur.fetchall()
        assert [r[1:] for r in runs] == [("fetch_episodes", "SUCCESS"), ("transcribe_episodes", "FAILURE"),
                                         ("transcribe_episodes", "SUCCESS")]
        assert f"podinsight-transcript-{runs[1][0][:8]} " in why  # the job is named after the failed run
        cur.execute("SELECT event FROM event_logs WHERE run_id = %s", (runs[-1][0],))
        events = "\n".join(r[0] for r in cur.fetchall())
    assert f"AWS Batch job {done_job['job_id']}: SUCCEEDED" in events
    assert f"log lines from CloudWatch /aws/batch/podinsight/{stream}" in events
    assert "2 of 2 episodes done, 0 failed" in events  # the worker's Pipes log, through S3


# ---------------------------------------------------------------------------
# checkov (its own virtualenv; iac/README.md)
# ---------------------------------------------------------------------------
@pytest.mark.skipif(not CHECKOV.exists(), reason="no .venv-checkov (make checkov; make test makes it)")
def test_checkov_passes_with_the_justified_skips(tmp_path):
    proc = subprocess.run([str(CHECKOV), "-d", str(IAC), "--config-file", str(IAC / ".checkov.yaml"), "--compact",
                           "--quiet", "-o", "cli"], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"})
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]


if __name__ == "__main__":  # regenerate appendix/IAM_policy.json from iac's template
    (APPENDIX / "IAM_policy.json").write_text(json.dumps(rendered_policy("*", "*"), indent=2) + "\n")
    print(APPENDIX / "IAM_policy.json")
