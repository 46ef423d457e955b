"""PODINSIGHT_DEPLOYMENT=aws against moto's server on loopback: what podrun says when the stack or the credentials are missing.

The whole pipeline on the aws deployment (podrun fetch, transcribe through AWS Batch, status; the
outputs compared with the local run's) runs on the stack iac/ makes:
tests/test_iac.py::test_the_demo_pipeline_on_the_applied_stack_is_the_local_run.
"""


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
