"""dagster_cloud.yaml: the Dagster+ code location, checked as Dagster+ and its ECS agent read it."""

import re
from pathlib import Path

import yaml

from podinsight_dagster.settings import ENV_VARS, Settings

ROOT = Path(__file__).resolve().parents[1]
DOC = yaml.safe_load((ROOT / "dagster_cloud.yaml").read_text())
ECR = re.compile(r"^\d{12}\.dkr\.ecr\.[a-z]{2}(-[a-z]+)+-\d\.amazonaws\.com/podcast-ingestor$")


def _location():
    assert set(DOC) == {"locations"} and len(DOC["locations"]) == 1
    return DOC["locations"][0]


def test_location_has_the_keys_dagster_plus_expects():
    loc = _location()
    assert set(loc) <= {"location_name", "code_source", "build", "working_directory", "executable_path", "image",
                        "container_context", "agent_queue"}, set(loc)
    assert loc["location_name"] == "podinsight"
    assert loc["code_source"] == {"module_name": "podinsight_dagster.definitions"}
    module = ROOT.joinpath(*loc["code_source"]["module_name"].split(".")).with_suffix(".py")
    assert module.is_file()
    assert ECR.match(loc["build"]["registry"]), loc["build"]["registry"]
    assert (ROOT / loc["build"]["directory"]).is_dir()


def test_container_context_passes_the_ecs_agents_schema():
    from dagster_aws.ecs.container_context import EcsContainerContext

    loc = _location()
    assert set(loc["container_context"]) == {"ecs"}
    context = EcsContainerContext.create_from_config(loc["container_context"])
    assert re.match(r"^arn:aws:iam::\d{12}:role/[\w+=,.@-]+$", context.task_role_arn)
    assert context.run_resources == {"cpu": "256", "memory": "512"}  # run-book §3.4: 0.25 vCPU, 512 MB
    assert {k: context.server_resources[k] for k in ("cpu", "memory")} == {"cpu": "1024", "memory": "2048"}  # 1 vCPU, 2 GB
    assert "PODINSIGHT_DEPLOYMENT=aws" in context.env_vars


def test_every_variable_it_sets_is_a_setting_and_parses():
    env = dict(item.split("=", 1) for item in _location()["container_context"]["ecs"]["env_vars"])
    known = {v.name for v in ENV_VARS}
    unknown = {name for name in env if name.startswith("PODINSIGHT_") or name.startswith("AWS_")} - known
    assert unknown == set(), unknown
    assert all(value for value in env.values())  # a bare NAME would pass the agent's own value on
    settings = Settings.from_env(env)
    assert (settings.deployment, settings.raw_bucket, settings.status_table) == (
        "aws", "pod-insights-raw", "podinsights-status")
    assert not any(v.secret for v in ENV_VARS if v.name in env)  # credentials never live in this file


def test_roles_are_the_ones_iac_creates():
    iam = (ROOT / "iac" / "iam.tf").read_text()
    doc = yaml.safe_load((ROOT / "dagster_cloud.yaml").read_text())
    ecs = doc["locations"][0]["container_context"]["ecs"]
    for arn in (ecs["task_role_arn"], ecs["execution_role_arn"]):
        assert f'name               = "{arn.rsplit("/", 1)[1]}"' in iam
