"""The cost alarm's action (run-book §6.1): disable the GPU compute environment, desiredvCpus 0.

Subscribed to the alarm's SNS topic. It makes the same call as the code's
BatchComputeFreezer.freeze (podinsight_dagster/costs/budget.py; tests/test_iac.py checks),
only when the alarm enters ALARM; lifting is `podrun freeze --lift`. Standard library and
the runtime's boto3 only.
"""

import json
import os

import boto3


def handler(event, context, client=None):
    states = [json.loads(r["Sns"]["Message"]).get("NewStateValue") for r in event.get("Records", [])]
    if "ALARM" not in states:
        return {"frozen": False, "states": states}
    environment = os.environ["COMPUTE_ENVIRONMENT"]
    batch = client or boto3.client("batch")
    batch.update_compute_environment(computeEnvironment=environment, state="DISABLED",
                                     computeResources={"desiredvCpus": 0})
    print(f"froze {environment}: GPUCostToday alarm")
    return {"frozen": True, "compute_environment": environment}
