"""iac/ (Terraform) and appendix/ against the code: names, schema, metrics, IAM actions, Athena columns.

* ``terraform init -backend=false -plugin-dir=/opt/tf-plugins`` + ``validate`` in a temp copy
  (skipped when terraform is not installed);
* static checks that need no terraform: the table's schema is store/dynamo.py's TABLE, bucket
  and other names are settings.py's defaults, the dashboard shows exactly the metrics the code
  emits with their dimensions, the IAM policy allows exactly the calls the code makes,
  appendix/IAM_policy.json is iac's policy template rendered, the Athena DDL's columns are the
  keys segments_rows writes;
* ``terraform apply`` of the whole of iac/ against moto's server, then the code against the
  stack it made. Every resource applies on moto 5.2; what moto cannot prove (Spot interruption,
  CUDA, the alarm action firing, IAM enforcement) is in iac/README.md;
* checkov over iac/ when ``.venv-checkov`` exists (``iac/README.md``: how to make it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import string
import subprocess
import sys
from pathlib import Path

import pytest

from podinsight_dagster import settings as settings_module
from podinsight_dagster.costs.budget import BatchComputeFreezer
from podinsight_dagster.settings import Settings
from podinsight_dagster.store.dynamo import STATE_INDEX, TABLE

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
    "delete_object": {"s3:DeleteObject"},
    "get_item": {"dynamodb:GetItem"},
    "put_item": {"dynamodb:PutItem"},
    "update_item": {"dynamodb:UpdateItem"},
    "query": {"dynamodb:Query"},
    "scan": {"dynamodb:Scan"},
    # A transaction is authorised item by item: Put, Update (and ConditionCheck items).
    "transact_write_items": {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:ConditionCheckItem"},
    "put_metric_data": {"cloudwatch:PutMetricData"},
    "list_metrics": {"cloudwatch:ListMetrics"},
    "get_metric_data": {"cloudwatch:GetMetricData"},
    "update_compute_environment": {"batch:UpdateComputeEnvironment"},
    "describe_compute_environments": {"batch:DescribeComputeEnvironments"},
}
# Not called by the code yet, allowed for the Pipes-on-Batch launcher (docs/ARCHITECTURE.md:
# "Pipes on Batch") and for reading the jobs' logs; S3 parts listing for resuming an upload.
PLANNED = {"batch:SubmitJob", "batch:DescribeJobs", "batch:TerminateJob", "logs:DescribeLogStreams",
           "logs:GetLogEvents", "logs:FilterLogEvents", "s3:ListMultipartUploadParts"}
# Set-up only: tests and first-time bootstrap (production creates the table with Terraform).
NOT_AT_RUN_TIME = {"create_table", "get_waiter", "get_paginator"}


def code_operations() -> set[str]:
    ops: set[str] = set()
    for sub in ("store", "costs", "fetch"):
        for path in (PACKAGE / sub).rglob("*.py"):
            text = path.read_text()
            ops |= set(re.findall(r"\b(?:client|table)\.([a-z_]+)\(", text))
            ops |= set(re.findall(r'get_paginator\("([a-z_0-9]+)"\)', text))
            ops |= set(re.findall(r"\bself\.table\.(query|scan)\b", text))  # passed as callables to a pager
    return ops - NOT_AT_RUN_TIME


def policy_template_values(region: str, account_id: str, **names: str) -> dict[str, str]:
    d = variable_defaults()
    values = {k: str(d[k]) for k in ("raw_bucket", "stage_bucket", "manifest_bucket", "status_table",
                                     "metrics_namespace", "gpu_compute_environment", "fetch_job_queue",
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
    # Scoped: objects in the three buckets, the table and its state index, the one compute environment.
    for bucket in ("pod-insights-raw", "pod-insights-stage", "pod-insights-manifests"):
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


@needs_terraform
@pytest.mark.timeout(900)
def test_apply_on_moto_then_the_code_runs_on_the_stack(tmp_path, monkeypatch, moto_server):
    # moto attaches AWS managed policies (AWSBatchServiceRole, ...) only when it has loaded them.
    monkeypatch.setenv("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
    work = _iac_copy(tmp_path)
    endpoints = "\n".join(f'    {s} = "{moto_server.url}"' for s in SERVICES)
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
    env = _tf_env(tmp_path)
    _init(work, env)
    # Everything in iac/ applies on moto 5.2 (72 resources), no -target needed. The S3 lifecycle
    # configurations take ~55 s: the provider waits for them to read back settled.
    _tf(work, env, "apply", "-auto-approve", "-var", "table_deletion_protection=false", timeout=600)
    outputs = json.loads(_tf(work, env, "output", "-json"))
    assert outputs["buckets"]["value"] == {"raw": "pod-insights-raw", "stage": "pod-insights-stage",
                                           "manifests": "pod-insights-manifests"}

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
    for bucket in outputs["buckets"]["value"].values():
        rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
        assert any(r.get("AbortIncompleteMultipartUpload", {}).get("DaysAfterInitiation") == 1 for r in rules)
        block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        assert all(block.values())
    assert s3.get_bucket_versioning(Bucket="pod-insights-stage")["Status"] == "Enabled"
    assert s3.get_bucket_versioning(Bucket="pod-insights-manifests")["Status"] == "Enabled"
    assert s3.get_bucket_versioning(Bucket="pod-insights-raw").get("Status") != "Enabled"
    cw = moto_server.client("cloudwatch")
    [alarm] = cw.describe_alarms(AlarmNames=["PodInsight-GPUCostToday"])["MetricAlarms"]
    assert (alarm["Namespace"], alarm["MetricName"], alarm["Threshold"]) == ("PodInsight", "GPUCostToday", 40.0)
    assert alarm["AlarmActions"] == [outputs["cost_alarm_topic_arn"]["value"]]
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
    policies = {b: s3.get_bucket_policy(Bucket=b)["Policy"] for b in outputs["buckets"]["value"].values()}
    assert all('"aws:SecureTransport":"false"' in p.replace(" ", "") for p in policies.values())
    for bucket in policies:
        s3.delete_bucket_policy(Bucket=bucket)
    try:
        for store in (services.raw, services.stage, services.manifests):
            store.put_bytes("probe/hello.txt", b"hello " + store.name.encode())
            assert store.get_bytes("probe/hello.txt") == b"hello " + store.name.encode()
        rec = EpisodeRecord(partition_key="tech-talk/ep-001", feed_slug="tech-talk", guid_key="ep-001",
                            guid="ep-001", title="Episode 1", enclosure_url="https://example.com/1.mp3",
                            discovered_at=1.0, updated_at=1.0)
        assert services.checkpoints.register_episodes([rec]) == ["tech-talk/ep-001"]
        services.checkpoints.mark_downloaded("tech-talk/ep-001", bytes=123, sha256="0" * 64)
        [got] = services.checkpoints.episodes(state="downloaded")  # the state-index GSI
        assert got.partition_key == "tech-talk/ep-001" and got.bytes == 123
        services.budget.record_spend(SpendEntry("tech-talk/ep-001", 0.25, 3000.0, "cuda", "base"))
        assert services.budget.cost_today() == pytest.approx(0.25)
        assert json.loads(next(iter(services.metrics.latest("GPUCostToday")))) == {}
        services.budget.freeze("test")  # BatchComputeFreezer on the Terraform-made compute environment
        assert services.budget.freezer.is_frozen()
    finally:
        services.close()
        for bucket, policy in policies.items():
            s3.put_bucket_policy(Bucket=bucket, Policy=policy)
    # A freeze is never undone by the next apply (state and desired vCPUs are ignored).
    plan = _tf(work, env, "plan", "-var", "table_deletion_protection=false", "-detailed-exitcode")
    assert "No changes" in plan


# ---------------------------------------------------------------------------
# checkov (its own virtualenv; iac/README.md)
# ---------------------------------------------------------------------------
@pytest.mark.skipif(not CHECKOV.exists(), reason="no .venv-checkov (python3.11 -m venv .venv-checkov && "
                                                 ".venv-checkov/bin/pip install checkov)")
def test_checkov_passes_with_the_justified_skips(tmp_path):
    proc = subprocess.run([str(CHECKOV), "-d", str(IAC), "--config-file", str(IAC / ".checkov.yaml"), "--compact",
                           "--quiet", "-o", "cli"], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"})
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]


if __name__ == "__main__":  # regenerate appendix/IAM_policy.json from iac's template
    (APPENDIX / "IAM_policy.json").write_text(json.dumps(rendered_policy("*", "*"), indent=2) + "\n")
    print(APPENDIX / "IAM_policy.json")
