"""README's "An episode range from Dagster's command line": the block as it is, on the demo's tech-talk feed.

`dagster asset materialize --partition-range` refuses the episode assets (multi-run backfill policy);
`dagster job execute` with the range tags runs the range as one run. The block is read from README.md
and run with bash, so the documented commands are the tested ones.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance

from podinsight_dagster.instance import prepare_instance
from podinsight_dagster.partitions import RANGE_END_TAG, RANGE_START_TAG
from podinsight_dagster.services import build_transcript_index
from podinsight_dagster.store.checkpoints import TRANSCRIBED, SqliteCheckpointStore

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def readme_range_block() -> str:
    text = (ROOT / "README.md").read_text()
    blocks = [b for b in re.findall(r"```bash\n(.*?)```", text, re.S) if RANGE_START_TAG in b]
    assert len(blocks) == 1, "README must show one range command block"
    return blocks[0]


def test_the_readme_range_command_runs_the_range_as_one_run(settings, demo_catalog):
    demo_catalog(["tech-talk"])  # 3 episodes: tt-0001, h-1d3c72a1df358c87, 6f1c2a9e-...
    prepare_instance(settings)  # what podrun and `make ui` do first
    block = readme_range_block()
    first, last = re.search(r"FIRST=(\S+) LAST=(\S+)", block).groups()
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=ROOT, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
    assert done.returncode == 0, done.stdout[-5000:]

    store = SqliteCheckpointStore(settings.checkpoint_db)
    keys = [r.partition_key for r in store.episodes()]
    assert len(keys) == 3 and {first, last} <= set(keys)
    in_range = {first, last}
    for pk in keys:
        rec = store.get(pk)
        if pk in in_range:
            assert rec.state == TRANSCRIBED, (pk, rec)
            assert (settings.stage_root / pk / "kpis" / "kpis.json").is_file()
        else:  # outside the range: registered, never downloaded
            assert rec.state == "discovered" and not (settings.raw_root / pk).exists()
    with DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        runs = [r for r in instance.get_runs() if r.job_name == "episode_pipeline"]
        assert len(runs) == 1 and (runs[0].tags[RANGE_START_TAG], runs[0].tags[RANGE_END_TAG]) == (first, last)
        assert instance.get_materialized_partitions(AssetKey("transcript_index")) == in_range
    index = build_transcript_index(settings)
    try:
        assert index.stats()["episodes"] == 2
    finally:
        index.close()


@pytest.mark.filterwarnings("ignore:.*is superseded")  # Dagster points at `dg launch`; README's claim is about this CLI
def test_dagster_asset_materialize_partition_range_refuses_the_episode_assets_as_readme_says(settings):
    """README: "`dagster asset materialize --partition-range` refuses the episode assets" (multi-run backfill
    policy), which is why it shows the block above. Dagster's own CLI, in-process (no second interpreter)."""
    from click.testing import CliRunner
    from dagster._cli import cli as dagster_cli

    prepare_instance(settings)
    result = CliRunner().invoke(dagster_cli, ["asset", "materialize", "-m", "podinsight_dagster.definitions",
                                              "--select", "raw_audio,transcript",
                                              "--partition-range", "tech-talk/tt-0001...tech-talk/tt-0002"])
    assert result.exit_code != 0 and "BackfillPolicy.single_run()" in str(result.exception)
    with DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        assert instance.get_runs_count() == 0
