"""Seams that are what they say: services.py picks each implementation, each asset requests the seams it uses."""

import pytest
from dagster import AssetKey

from podinsight_dagster.definitions import defs
from podinsight_dagster.pipes_transcriber import BatchTranscriber, SubprocessTranscriber
from podinsight_dagster.resources import PodInsightConfig
from podinsight_dagster.resources.seams import CheckpointsResource, SeamNotRequested, services_from
from podinsight_dagster.services import build_transcriber, transcribe_options
from podinsight_dagster.settings import Settings
from podinsight_dagster.transcribe.transcriber import InProcessTranscriber

from .conftest import TEST_MODEL


@pytest.mark.parametrize("via, kind", [("in-process", InProcessTranscriber), ("subprocess", SubprocessTranscriber),
                                       ("batch", BatchTranscriber)])
def test_the_composition_root_picks_the_transcriber_from_the_settings(tmp_path, via, kind):
    settings = Settings.from_env({"PODINSIGHT_HOME": str(tmp_path), "PODINSIGHT_MODEL": TEST_MODEL,
                                  "PODINSIGHT_TRANSCRIBE_VIA": via, "PODINSIGHT_BATCH_JOB_QUEUE": "gpu-queue"})
    transcriber = build_transcriber(settings)
    assert type(transcriber) is kind and transcriber.via == via
    assert transcriber.options == transcribe_options(settings)  # what the asset's metadata and code version read
    if via == "subprocess":  # the worker gets these settings as its environment
        assert transcriber.env == settings.to_env()
    if via == "batch":  # ... and a Batch job those that are not this machine's folders
        assert (transcriber.job_queue, transcriber.bucket) == ("gpu-queue", settings.stage_bucket)
        assert transcriber.env == settings.to_env(paths=False) and "PODINSIGHT_HOME" not in transcriber.env
    # The worker is where a Pipes transcriber's episodes are transcribed: in its own process, whatever the setting.
    assert type(build_transcriber(settings, in_process=True)) is InProcessTranscriber


# The seams each asset's step touches (its domain steps read nothing else): the UI's asset page lists these.
SEAMS = {
    "feeds": {"catalog"},
    "episode_manifest": {"catalog", "stores", "checkpoints", "http"},
    "raw_audio": {"stores", "checkpoints", "http", "metrics"},
    "transcript": {"stores", "checkpoints", "http", "budget", "transcriber"},
    "speakers": {"stores", "checkpoints", "transcriber"},  # an overlapped region is heard again
    "chapters": {"stores", "checkpoints", "http"},
    "segments": {"stores", "checkpoints"},
    "kpis": {"stores", "checkpoints"},
    "transcript_index": {"stores", "checkpoints", "archive"},
    "archive_rollup": {"archive"},
}


CHECK_SEAMS = {
    "download_success_rate": {"checkpoints"}, "per_host_429": {"metrics"}, "gpu_cost_today": {"budget"},
    "transcript_sanity": {"checkpoints"}, "speaker_count": {"checkpoints"},
    "every_feed_answers": {"catalog", "checkpoints"},
}


def test_each_asset_and_check_requests_the_seam_resources_it_uses():
    requested = {name: set(defs.resolve_assets_def(AssetKey(name)).required_resource_keys) - {"io_manager"}
                 for name in SEAMS}
    assert requested == SEAMS  # and none asks for the whole bundle ("podinsight")
    checks = {spec.name: set(check.required_resource_keys) - {"io_manager"} for check in defs.asset_checks
              for spec in check.check_specs}
    assert checks == CHECK_SEAMS


def test_a_seam_the_asset_did_not_request_is_one_sentence_naming_it(tmp_path):
    config = PodInsightConfig.from_settings(Settings.from_env({"PODINSIGHT_HOME": str(tmp_path)}))
    services = services_from(checkpoints=CheckpointsResource(config=config))
    assert services.checkpoints.get("nobody/none") is None
    with pytest.raises(SeamNotRequested, match="'http' resource .* add `http` to the asset's parameters"):
        services.http.get_bytes("http://127.0.0.1/x")
    services.checkpoints.close()
