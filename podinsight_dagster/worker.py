"""The GPU worker: transcribe, segment and score episodes under Dagster Pipes.

Launched by Dagster (``PipesECSClient``/AWS Batch in production, a subprocess
locally) with the episode partition keys in the Pipes extras. It needs only
``dagster-pipes`` and the domain code: no dagster, no webserver.

    python -m podinsight_dagster.worker            # under Pipes
    python -m podinsight_dagster.worker KEY [KEY]  # by hand, without Pipes
"""

from __future__ import annotations

import sys

from podinsight_dagster.errors import StepError
from podinsight_dagster.services import Services, build_services
from podinsight_dagster.settings import Settings
from podinsight_dagster.transcribe.steps import transcribe_episodes, write_kpis, write_segments


def process(services: Services, keys: list[str], report=print) -> dict[str, str]:
    """Transcribe (all in one batched pass), segment and score each episode; returns {partition_key: error}."""
    failures: dict[str, str] = {}
    for pk, result in transcribe_episodes(services, keys).items():
        try:
            if isinstance(result, StepError):
                raise result
            write_segments(services, pk)
            kpis = write_kpis(services, pk)
        except StepError as exc:
            failures[pk] = str(exc)
            report(f"FAILED {pk}: {exc}")
            continue
        report(f"ok {pk}: {kpis['words']} words, {kpis['realtime_factor']}x real time")
    return failures


def main(argv: list[str]) -> int:
    services = build_services(Settings.from_env())
    try:
        if argv:
            return 1 if process(services, argv) else 0
        from dagster_pipes import open_dagster_pipes

        with open_dagster_pipes() as pipes:
            keys = list(pipes.extras.get("partition_keys") or [pipes.partition_key])
            failures = process(services, keys, report=pipes.log.info)
            pipes.report_custom_message({"succeeded": len(keys) - len(failures), "failed": failures})
            if failures:
                raise RuntimeError(f"{len(failures)} of {len(keys)} episodes failed: {failures}")
        return 0
    finally:
        services.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
