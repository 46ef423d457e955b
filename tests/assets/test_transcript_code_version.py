"""transcript's Dagster code_version follows the settings that change its output: a new model shows it stale."""

from dagster import AssetKey, DagsterInstance, materialize
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._core.loader import LoadingContextForTest

from podinsight_dagster.assets import assets_for
from podinsight_dagster.definitions import definitions_for
from podinsight_dagster.partitions import EPISODES
from podinsight_dagster.resources import PodInsightConfig, podinsight_resources
from podinsight_dagster.services import build_services, transcribe_options
from podinsight_dagster.transcribe.options import transcript_code_version

from ..domain.test_stage_transcribe import CLIP, _episode, _vtt_from

TRANSCRIPT = AssetKey("transcript")


def _status(instance, defs, pk):
    resolver = CachingStaleStatusResolver(instance, defs.resolve_asset_graph(), LoadingContextForTest(instance))
    return resolver.get_status(TRANSCRIPT, pk), resolver.get_stale_causes(TRANSCRIPT, pk)


def test_changing_the_model_shows_materialized_transcripts_stale(settings, demo_cdn):
    old, new = settings.replace(model="tiny.en"), settings.replace(model="base.en")
    old_defs, new_defs = definitions_for(old), definitions_for(new)
    old_version = old_defs.resolve_asset_graph().get(TRANSCRIPT).code_version
    assert old_version == transcript_code_version(transcribe_options(old))
    assert new_defs.resolve_asset_graph().get(TRANSCRIPT).code_version not in (None, old_version)
    # Settings that do not change a transcript's content leave the version alone.
    assert definitions_for(old.replace(batch_size=3)).resolve_asset_graph().get(TRANSCRIPT).code_version == old_version
    # speakers, segments and kpis follow transcript through their deps (staleness propagates downstream).
    graph = new_defs.resolve_asset_graph()
    assert TRANSCRIPT in graph.get(AssetKey("speakers")).parent_keys

    # A publisher transcript: the asset materializes without loading a model.
    services = build_services(old)
    demo_cdn.add_file("/p/pub.vtt", _vtt_from("Publisher words only. Nothing else here.", 10), content_type="text/vtt")
    pk = _episode(services, "pub", CLIP.read_bytes(), [{"url": demo_cdn.url("/p/pub.vtt"), "type": "text/vtt"}])
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(EPISODES, [pk])
        result = materialize(assets_for(old), selection=["transcript"], partition_key=pk, instance=instance,
                             resources=podinsight_resources(PodInsightConfig.from_settings(old)))
        assert result.success
        assert _status(instance, old_defs, pk)[0] == StaleStatus.FRESH
        status, causes = _status(instance, new_defs, pk)
        assert status == StaleStatus.STALE
        assert any("code version" in c.reason for c in causes), causes
