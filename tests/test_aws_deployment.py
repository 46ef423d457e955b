"""PODINSIGHT_DEPLOYMENT=aws end to end: podrun fetch, transcribe and status against moto's server on loopback.

S3 holds the audio and the stage files, DynamoDB the episode states and the spend ledger,
CloudWatch the run-book's metrics; boto3 speaks real HTTP to the local endpoint.
"""

import json


from podinsight_dagster.services import build_services
from podinsight_dagster.settings import Settings
from podinsight_dagster.store import layout
from podinsight_dagster.store.keys import EpisodeKey

from .conftest import make_aws_stack


def test_fetch_transcribe_status_on_the_aws_deployment(aws_home, moto_server, demo_catalog, podrun):
    settings = Settings.from_env()
    make_aws_stack(moto_server, settings)
    demo_catalog(["tech-talk"])
    out = podrun("fetch", "--limit", "2").output
    assert "downloading 2 episodes" in out and "s3://pod-insights-manifests/" in out
    out = podrun("transcribe", "--limit", "1", "--model", "tiny.en").output
    assert "transcribing 1 episodes" in out
    doc = json.loads(podrun("status", "--json").output)
    assert doc["episodes"] == {"discovered": 1, "downloaded": 1, "transcribed": 1, "failed": 0}
    assert doc["cost_today_usd"] > 0 and "127.0.0.1" in doc["per_host_429_rate"]

    services = build_services(settings)
    [done] = services.checkpoints.episodes(state="transcribed")
    ek = EpisodeKey.parse(done.partition_key)
    s3 = moto_server.client("s3")
    raw = {o["Key"] for o in s3.list_objects_v2(Bucket="pod-insights-raw")["Contents"]}
    assert layout.audio_key(ek) in raw and layout.meta_key(ek) in raw
    stage = {o["Key"] for o in s3.list_objects_v2(Bucket="pod-insights-stage")["Contents"]}
    assert {layout.transcript_key(ek), layout.segments_key(ek), layout.vtt_key(ek), layout.kpis_key(ek)} <= stage
    meta = json.loads(s3.get_object(Bucket="pod-insights-raw", Key=layout.meta_key(ek))["Body"].read())
    assert meta["transcript_key"] == layout.transcript_key(ek)  # patched by compare-and-swap (If-Match)
    head = s3.head_object(Bucket="pod-insights-raw", Key=layout.audio_key(ek), ChecksumMode="ENABLED")
    assert head.get("ChecksumSHA256")  # stored with a checksum S3 verified
    names = {m["MetricName"] for m in moto_server.client("cloudwatch").list_metrics(Namespace="PodInsight")["Metrics"]}
    assert {"DownloadSuccessRate", "PerHost429", "GBTransferred", "AvgDownloadMB", "GPUCostToday"} <= names
    assert len(services.budget.ledger.entries()) == 1


def test_a_missing_table_is_one_sentence(aws_home, moto_server, podrun):
    result = podrun("status", ok=False)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.startswith("Error: AWS ") and "ResourceNotFoundException" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_no_credentials_is_one_sentence(aws_home, monkeypatch, moto_server, podrun):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    result = podrun("status", ok=False)
    assert result.exit_code == 1
    assert result.output.strip() == ("Error: AWS: Unable to locate credentials (PODINSIGHT_DEPLOYMENT=aws; "
                                     "check AWS_REGION, AWS_ENDPOINT_URL and the credentials)")


VOLATILE = {"wall_sec", "realtime_factor", "cost_usd", "downloaded_at", "transcribed_at", "created_at", "diarization_sec",
            "run_id"}


def _stable(value):
    """A stage document without what differs between two runs of the same work (times, speeds, costs)."""
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def test_aws_outputs_are_the_local_outputs(home, moto_server, demo_catalog, podrun, monkeypatch, tmp_path, request):
    """The same episodes through both deployments: transcripts, segments and KPIs equal, times aside."""
    demo_catalog(["tech-talk"])
    podrun("fetch", "--limit", "2")
    podrun("transcribe", "--model", "tiny.en")
    local = build_services(Settings.from_env())
    keys = [r.partition_key for r in local.checkpoints.episodes(state="transcribed")]
    assert len(keys) == 2

    monkeypatch.setenv("PODINSIGHT_HOME", str(tmp_path / "aws-home"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "aws-home" / "dagster"))
    request.getfixturevalue("aws_home")  # now the aws deployment, on moto
    aws_settings = Settings.from_env().replace(feeds_dir=local.settings.feeds_dir)
    make_aws_stack(moto_server, aws_settings)
    podrun("fetch", "--limit", "2", "--feeds", str(local.settings.feeds_dir))
    podrun("transcribe", "--model", "tiny.en")
    aws = build_services(aws_settings)
    assert sorted(r.partition_key for r in aws.checkpoints.episodes(state="transcribed")) == sorted(keys)
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
