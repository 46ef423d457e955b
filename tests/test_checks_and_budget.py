"""Asset checks pass and fail on the figures they read; the cost freeze refuses spend."""

import time

import pytest
from dagster import AssetCheckSeverity, AssetSelection, DagsterInstance, Definitions, define_asset_job

from podinsight_dagster.checks import download_success_rate, gpu_cost_today, per_host_429, transcript_sanity
from podinsight_dagster.costs.budget import BudgetExceeded, SpendEntry
from podinsight_dagster.store.checkpoints import EpisodeRecord
from podinsight_dagster.store.metrics import Metric
from podinsight_dagster.services import build_services
from podinsight_dagster.settings import Settings
from podinsight_dagster.assets import all_assets
from podinsight_dagster.definitions import resources_for


@pytest.fixture
def services(settings):
    return build_services(Settings.from_env())


def _run(check):
    """Evaluate one check in a real run of a job that selects only it, with the local resources."""
    defs = Definitions(assets=all_assets, asset_checks=[check], resources=resources_for("local"),
                       jobs=[define_asset_job("check_only", selection=AssetSelection.checks(check))])
    with DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def("check_only").execute_in_process(instance=instance, raise_on_error=False)
    (evaluation,) = result.get_asset_check_evaluations()
    return evaluation


def _episodes(services, feed, ok, failed):
    recs = [EpisodeRecord(partition_key=f"{feed}/e{i}", feed_slug=feed, guid_key=f"e{i}") for i in range(ok + failed)]
    services.checkpoints.register_episodes(recs)
    for r in recs[:ok]:
        services.checkpoints.mark_downloaded(r.partition_key, bytes=1, sha256="x")
    for r in recs[ok:]:
        services.checkpoints.mark_failed(r.partition_key, "download", "HTTP 404")


def test_download_success_rate_passes_and_fails_per_feed(services):
    _episodes(services, "good", 100, 0)
    _episodes(services, "fine", 99, 1)
    result = _run(download_success_rate)
    assert result.passed and result.metadata["overall_percent"].value == 99.5
    _episodes(services, "flaky", 9, 1)
    result = _run(download_success_rate)
    assert not result.passed and result.severity == AssetCheckSeverity.ERROR
    assert result.metadata["feeds_below"].value == {"flaky": 90.0}


def test_per_host_429_warns(services):
    services.metrics.put([Metric("PerHost429", 0.2, "Percent", (("hostname", "a.example"),))])
    assert _run(per_host_429).passed
    services.metrics.put([Metric("PerHost429", 4.0, "Percent", (("hostname", "b.example"),))])
    result = _run(per_host_429)
    assert not result.passed and result.severity == AssetCheckSeverity.WARN
    assert result.metadata["per_host_percent"].value == {"a.example": 0.2, "b.example": 4.0}


def test_gpu_cost_check_and_freeze(services, monkeypatch):
    assert _run(gpu_cost_today).passed
    services.budget.record_spend(SpendEntry("f/x", 41.0))
    result = _run(gpu_cost_today)
    assert not result.passed and result.metadata["cost_today_usd"].value == 41.0
    assert all(spec.blocking for spec in gpu_cost_today.check_specs)


def test_budget_refuses_projection_and_freezes_at_ceiling(services):
    budget = services.budget
    assert budget.check(projected_usd=10.0) == 0.0
    with pytest.raises(BudgetExceeded, match="would cross"):
        budget.check(projected_usd=45.0)
    assert not budget.status().active  # a too-large request is refused, not a reason to freeze
    budget.record_spend(SpendEntry("f/x", 40.0))
    with pytest.raises(BudgetExceeded, match="frozen"):
        budget.check(projected_usd=0.01)
    state = budget.status()
    assert state.active and "40.00" in state.reason and state.since <= time.time()
    assert budget.freezer.is_frozen()  # the compute capacity is stopped too
    with pytest.raises(BudgetExceeded, match="podrun freeze --lift"):
        budget.check()  # stays frozen until a person lifts it
    budget.lift()
    assert not budget.freezer.is_frozen()
    with pytest.raises(BudgetExceeded, match="reached"):
        budget.check()  # lifting does not forget what was spent: the ledger only grows


def test_freeze_disables_the_batch_gpu_environment(services, moto_server):
    """In AWS mode the freeze is the run-book's alarm + Lambda: the GPU environment DISABLED, desiredvCpus 0."""
    import base64
    import json

    import requests

    from podinsight_dagster.costs.budget import BatchComputeFreezer, Budget, SqliteSpendLedger

    batch = moto_server.client("batch")
    iam, ec2 = moto_server.client("iam"), moto_server.client("ec2")
    role = iam.create_role(RoleName="batch", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    profile = iam.create_instance_profile(InstanceProfileName="batch")["InstanceProfile"]["Arn"]
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.0.0/24")["Subnet"]["SubnetId"]
    sg = ec2.create_security_group(GroupName="g", Description="g", VpcId=vpc)["GroupId"]
    batch.create_compute_environment(
        computeEnvironmentName="gpu_spot", type="MANAGED", state="ENABLED", serviceRole=role,
        computeResources={"type": "SPOT", "minvCpus": 0, "maxvCpus": 40, "desiredvCpus": 8,
                          "instanceTypes": ["g5.xlarge"], "subnets": [subnet], "securityGroupIds": [sg],
                          "instanceRole": profile, "bidPercentage": 100, "spotIamFleetRole": role})
    budget = Budget(SqliteSpendLedger(services.settings.checkpoint_db), freezer=BatchComputeFreezer(batch, "gpu_spot"))
    # moto accepts UpdateComputeEnvironment but does not store desiredvCpus: read what it received.
    requests.post(moto_server.url + "/moto-api/recorder/reset-recording", timeout=10)
    requests.post(moto_server.url + "/moto-api/recorder/start-recording", timeout=10)
    budget.freeze("GPUCostToday alarm")
    requests.post(moto_server.url + "/moto-api/recorder/stop-recording", timeout=10)
    recorded = [json.loads(line) for line in
                requests.get(moto_server.url + "/moto-api/recorder/download-recording", timeout=10).text.splitlines()
                if line.strip()]
    updates = [r for r in recorded if r["url"].endswith("/v1/updatecomputeenvironment")]
    assert len(updates) == 1
    body = json.loads(base64.b64decode(updates[0]["body"]) if updates[0].get("body_encoded") else updates[0]["body"])
    assert body == {"computeEnvironment": "gpu_spot", "state": "DISABLED", "computeResources": {"desiredvCpus": 0}}
    assert budget.status().active and budget.freezer.is_frozen()
    budget.lift()
    assert not budget.status().active and not budget.freezer.is_frozen()


def test_transcript_sanity_reads_the_checkpoint_store(services):
    rec = EpisodeRecord(partition_key="f/x", feed_slug="f", guid_key="x")
    services.checkpoints.register_episodes([rec])
    services.checkpoints.mark_transcribed("f/x")
    assert _run(transcript_sanity).passed
    services.checkpoints.update("f/x", quality_issue="no text although 40s of the audio is speech")
    result = _run(transcript_sanity)
    assert not result.passed and result.metadata["issues"].value == {"f/x": "no text although 40s of the audio is speech"}
