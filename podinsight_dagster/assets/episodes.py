"""Per-episode assets, partitioned by ``episodes`` (``<feed_slug>/<guid_key>``).

raw_audio -> transcript -> speakers -> segments -> kpis
                          \-> chapters

Each asset handles every partition of its run (``context.partition_keys``), so a
backfill of 1,000 episodes becomes a handful of runs (BackfillPolicy.multi_run)
and the Whisper model loads once per run. Outputs are written by the domain
steps, not an IO manager (the default one refuses multi-partition outputs).

One failing episode never stops the others in its run, nor their later stages:
a step with a later episode asset in the same run records its failures in the
checkpoint store's stage status and succeeds, so the next step runs; each step
processes only the episodes whose previous stage is done and counts the others
as failed ("upstream failed"); the last episode asset of the run then fails the
step (and so the run) naming every failed episode. See docs/ARCHITECTURE.md,
"State and money".
"""


from collections import Counter
from typing import Iterator

import warnings

from dagster import BetaWarning

# BackfillPolicy is "beta" in Dagster 1.13; we pin the version, so the warning would only reach
# operators (every podrun command prints it otherwise) and tell them nothing they can act on.
warnings.filterwarnings("ignore", category=BetaWarning, message=".*backfill_policy.*")

from dagster import AssetExecutionContext, AssetsDefinition, BackfillPolicy, Failure, MetadataValue, asset

from podinsight_dagster.store import layout
from podinsight_dagster.costs.budget import BudgetExceeded
from podinsight_dagster.costs.projection import reserve_for_run
from podinsight_dagster.store.checkpoints import KPIS, SEGMENTS, TRANSCRIBE
from podinsight_dagster.store.claims import run_stage, upstream_gate
from podinsight_dagster.transcribe.options import transcript_code_version
from podinsight_dagster.store.keys import EpisodeKey
from podinsight_dagster.errors import StepError, StepSkipped
from podinsight_dagster.fetch.download import download_episodes, publish_download_metrics
from podinsight_dagster.transcribe.quality import transcript_issues
from podinsight_dagster.transcribe.outcomes import Refused
from podinsight_dagster.transcribe.steps import load_transcript, write_kpis, write_segments
from podinsight_dagster.speakers.diarize import VERSION as DIARIZATION_VERSION
from podinsight_dagster.speakers.steps import diarize_episode, prepare_episode
from podinsight_dagster.chapters.steps import chapters_episode
from podinsight_dagster.chapters.tiling import VERSION as CHAPTERS_VERSION
from podinsight_dagster.partitions import episodes_partitions
from podinsight_dagster.resources.seams import (BudgetResource, CheckpointsResource, HttpResource, MetricsResource,
                                                ObjectStoresResource, TranscriberResource, services_from)
from podinsight_dagster.assets.catalog import episode_manifest
# How each asset's step goes over its episodes (isolation, gating, the failing last step): assets/episode_runs.py.
from podinsight_dagster.assets.episode_runs import (Outcome, each_episode, each_episode_prefetched,
                                                    left_to_other_runs, preflight_or_fail, run_per_episode)

MAX_PARTITIONS_PER_RUN = 100
EPISODE_BACKFILL = BackfillPolicy.multi_run(max_partitions_per_run=MAX_PARTITIONS_PER_RUN)
# raw_audio has no step RetryPolicy: a step retry re-ran every episode of the step a minute later, permanent
# failures (404, an HTML page) included. Each episode's download retries its own transient failures
# (fetch/retry.py: PODINSIGHT_DOWNLOAD_ATTEMPTS, PODINSIGHT_DOWNLOAD_BACKOFF_MAX_S), inside download_episode.


@asset(partitions_def=episodes_partitions, deps=[episode_manifest], group_name="episodes",
       backfill_policy=EPISODE_BACKFILL, pool="podinsight_fetch",
       description="The episode's audio in pod-insights-raw/<feed_slug>/<guid_key>/audio/, with meta/meta.json.")
def raw_audio(context: AssetExecutionContext, stores: ObjectStoresResource, checkpoints: CheckpointsResource,
              http: HttpResource, metrics: MetricsResource):
    services = services_from(stores=stores, checkpoints=checkpoints, http=http, metrics=metrics)
    preflight_or_fail(services.settings, "fetch")
    clean = getattr(services.raw, "clean_staging", None)
    if clean is not None and clean():
        context.log.info("removed stale partial downloads left by a killed run")
    attempted: Counter[str] = Counter()
    succeeded: Counter[str] = Counter()
    moved = {"bytes": 0, "files": 0}

    def outcomes() -> Iterator[Outcome]:
        # Concurrently, as many at once as the per-host limits allow; each reported as it finishes.
        # Claimed per episode for this run (store/claims.py): one another task holds is skipped, not failed.
        for pk, out in download_episodes(services, list(context.partition_keys), owner=context.run_id):
            if isinstance(out, StepSkipped):  # another task's work: not an attempt of this run
                yield pk, out
                continue
            slug = EpisodeKey.parse(pk).feed_slug
            attempted[slug] += 1
            if isinstance(out, StepError):
                yield pk, out
                continue
            succeeded[slug] += 1
            if not out.skipped:
                moved["bytes"] += out.bytes
                moved["files"] += 1
            yield pk, {"bytes": out.bytes, "sha256": out.sha256, "duration_sec": out.duration_sec,
                       "path": MetadataValue.path(services.raw.uri(out.audio_key)), "reused": out.skipped}

    def summary(done: dict[str, dict]) -> dict:
        metrics = publish_download_metrics(services, dict(attempted), dict(succeeded), moved["bytes"], moved["files"])
        return {"bytes_downloaded": moved["bytes"],
                "metrics": MetadataValue.json({f"{m.name}{dict(m.dimensions)}": round(m.value, 4) for m in metrics})}

    yield from run_per_episode(context, outcomes(), summary, checkpoints=services.checkpoints)


def transcript_asset(code_version: str | None = None):
    """The ``transcript`` asset with ``code_version`` (``transcript_code_version`` of the settings in force).

    What changes a transcript (model, compute type, beam size, VAD, language settings, source, the
    transcription code) is configuration, so the version is made where the definitions are built
    (``definitions_for(settings)``): changing the model shows every transcript, and so its
    speakers, segments and kpis, as stale in the UI.
    """

    @asset(name="transcript", partitions_def=episodes_partitions, deps=[raw_audio], group_name="episodes",
           backfill_policy=EPISODE_BACKFILL, pool="podinsight_transcribe", code_version=code_version,
           description="faster-whisper transcript: pod-insights-stage/<feed_slug>/<guid_key>/transcripts/"
                       "transcript.json")
    def _asset(context: AssetExecutionContext, stores: ObjectStoresResource, checkpoints: CheckpointsResource,
               http: HttpResource, budget: BudgetResource, transcriber: TranscriberResource):
        # http: publisher transcripts, fetched where the episodes are transcribed (here when in-process).
        services = services_from(stores=stores, checkpoints=checkpoints, http=http, budget=budget,
                                 transcriber=transcriber)
        yield from _transcript_run(context, services)

    return _asset


def transcript_asset_for(settings) -> AssetsDefinition:
    """The ``transcript`` asset versioned for ``settings`` (a ``Settings``)."""
    from podinsight_dagster.services import transcribe_options

    return transcript_asset(transcript_code_version(transcribe_options(settings)))


transcript = transcript_asset()  # unversioned: the definitions use transcript_asset_for(settings)


def _transcript_run(context: AssetExecutionContext, services):
    preflight_or_fail(services.settings, "transcribe")
    options = services.transcriber.options
    keys = list(context.partition_keys)
    try:
        hold = reserve_for_run(services.budget, services.raw, map(services.checkpoints.get, keys), options.model,
                               owner=context.run_id)
    except BudgetExceeded as exc:
        raise Failure(f"transcription refused: {exc}", allow_retries=False) from exc
    context.log.info(hold.describe())
    try:
        try:
            # In this process, a subprocess or a Batch job: the transcriber's business (services.build_transcriber).
            outcomes = services.transcriber.transcribe_run(services, keys, context)
        except Refused as exc:  # the worker's own guard (the freeze set since the reservation, say)
            raise Failure(f"transcription refused: {exc}", allow_retries=False) from exc
        yield from _report_transcripts(context, services, options, outcomes)
    finally:
        services.budget.settle(hold.reservation)


def _report_transcripts(context, services, options, outcomes):
    def step(pk: str) -> dict:
        # Each episode's outcome, from either path, is reported (or raised) by run_per_episode.
        out = outcomes.get(pk) or StepError(f"{pk}: no transcription result")
        if isinstance(out, StepError):
            raise out
        return {**out, "preview": MetadataValue.text(out.get("preview") or "")}

    def summary(done: dict[str, dict]) -> dict:
        asr = [m for m in done.values() if m["source"] == "asr"]
        audio = sum(m["duration_sec"] for m in asr)
        wall = sum(m["wall_sec"] for m in asr)
        devices = sorted({m["device"] for m in asr if m["device"]})
        return {"audio_sec": round(audio, 1), "realtime_factor": round(audio / wall, 2) if wall else 0.0,
                "publisher_transcripts": len(done) - len(asr), "model": options.model,
                "device": ", ".join(devices) or options.device, "batch_size": options.batch_size,
                "code_version": transcript_code_version(options),
                "transcript_source": options.transcript_source}

    yield from run_per_episode(context, each_episode(list(context.partition_keys), step), summary,
                               checkpoints=services.checkpoints)


@asset(partitions_def=episodes_partitions, deps=[transcript], group_name="episodes",
       backfill_policy=EPISODE_BACKFILL, code_version=DIARIZATION_VERSION,
       description="Who spoke: speakers/speakers.json, speaker labels on transcript.json's segments and words, "
                   "the feed's voice prints (diarization from voice embeddings, offline).")
def speakers(context: AssetExecutionContext, stores: ObjectStoresResource, checkpoints: CheckpointsResource,
             transcriber: TranscriberResource):
    # The transcriber's options: an overlapped region is heard again by the transcript step's model.
    services = services_from(stores=stores, checkpoints=checkpoints, transcriber=transcriber)
    left = left_to_other_runs(context)

    def prepare(pk: str):
        # Labels are optional for what follows: segments wait for the transcript, not for this step.
        upstream_gate(services.checkpoints, pk, TRANSCRIBE, "transcript", left)
        return prepare_episode(services, pk)

    def step(pk: str, prepared) -> dict:
        out = diarize_episode(services, pk, prepared)
        names = [s["name"] for s in out["speakers"]]
        return {"speakers": out["num_speakers"], "count_source": out["count_source"],
                "persons_listed": out["persons_listed"], "names": ", ".join(names) or None,
                "wall_sec": out["wall_sec"], "method": out["method"],
                # The voices were encoded while the transcript step went on (transcribe/ahead.py).
                "voices_ahead": bool(getattr(prepared, "ahead", False))}

    def summary(done: dict[str, dict]) -> dict:
        return {"diarization_sec": round(sum(m["wall_sec"] for m in done.values()), 3),
                "voices_ahead": sum(bool(m.get("voices_ahead")) for m in done.values())}

    # Decoding and the voice encoder run for the next episode in a thread while this one is clustered, named and
    # written, in episode order (voice prints are folded in that order). One thread: two concurrent encoder calls
    # measured no faster on 2 shared cores and each holds its own ~600 MB of ONNX buffers on long episodes.
    outcomes = each_episode_prefetched(list(context.partition_keys), prepare, step, workers=1, ahead=2)
    yield from run_per_episode(context, outcomes, summary, checkpoints=services.checkpoints)


# speakers as well as transcript: the soundbites written beside the chapters keep to one speaker's turn, so they
# read the transcript after diarization labelled it (an ordering only: the step gates on the transcript, as segments).
@asset(partitions_def=episodes_partitions, deps=[transcript, speakers], group_name="episodes",
       backfill_policy=EPISODE_BACKFILL, code_version=CHAPTERS_VERSION,
       description="Podcasting 2.0 chapters (chapters/chapters.json, version 1.2.0): the feed's podcast:chapters "
                   "when it links them, else topic boundaries from sentence embeddings with key-phrase titles; "
                   "up to 3 podcast:soundbite candidates beside them (chapters/soundbites.json).")
def chapters(context: AssetExecutionContext, stores: ObjectStoresResource, checkpoints: CheckpointsResource,
             http: HttpResource):
    services = services_from(stores=stores, checkpoints=checkpoints, http=http)  # http: the feed's own chapters
    left = left_to_other_runs(context)

    def step(pk: str) -> dict:
        # Optional, like speakers: segments and kpis wait for the transcript, not for this step.
        upstream_gate(services.checkpoints, pk, TRANSCRIBE, "transcript", left)
        out = chapters_episode(services, pk)
        ek = EpisodeKey.parse(pk)
        return {**out, "path": MetadataValue.path(services.stage.uri(layout.chapters_key(ek)))}

    def summary(done: dict[str, dict]) -> dict:
        return {"publisher_chapters": sum(m["source"] == "publisher" for m in done.values()),
                "chapters_sec": round(sum(m["wall_sec"] for m in done.values()), 3)}

    yield from run_per_episode(context, each_episode(list(context.partition_keys), step), summary,
                               checkpoints=services.checkpoints)


# transcript as well as speakers: segments read transcript.json, and a run that selects transcript and segments
# without speakers (a UI backfill) must still order them (Dagster orders only the steps a run selects).
@asset(partitions_def=episodes_partitions, deps=[transcript, speakers], group_name="episodes",
       backfill_policy=EPISODE_BACKFILL,
       description="Timed segments as JSON Lines (Athena shape) plus transcript.vtt and transcript.srt.")
def segments(context: AssetExecutionContext, stores: ObjectStoresResource, checkpoints: CheckpointsResource):
    services = services_from(stores=stores, checkpoints=checkpoints)
    left = left_to_other_runs(context)

    def step(pk: str) -> dict:
        upstream_gate(services.checkpoints, pk, TRANSCRIBE, "transcript", left)
        out = run_stage(services.checkpoints, pk, SEGMENTS, lambda: write_segments(services, pk))
        ek = EpisodeKey.parse(pk)
        return {**out, "path": MetadataValue.path(services.stage.uri(layout.segments_key(ek)))}

    yield from run_per_episode(context, each_episode(list(context.partition_keys), step),
                               checkpoints=services.checkpoints)


@asset(partitions_def=episodes_partitions, deps=[segments], group_name="episodes",
       backfill_policy=EPISODE_BACKFILL,
       description="Per-episode KPIs (kpis.json); patches the raw meta.json transcript_key when all is written.")
def kpis(context: AssetExecutionContext, stores: ObjectStoresResource, checkpoints: CheckpointsResource):
    services = services_from(stores=stores, checkpoints=checkpoints)
    left = left_to_other_runs(context)

    def step(pk: str) -> dict:
        upstream_gate(services.checkpoints, pk, SEGMENTS, "segments", left)
        # write_kpis marks kpis done itself, with the episode transcribed.
        k = run_stage(services.checkpoints, pk, KPIS, lambda: write_kpis(services, pk), marks_done=False)
        issues = transcript_issues(load_transcript(services, pk))
        services.checkpoints.update(pk, quality_issue="; ".join(issues) or None)
        keep = ("duration_sec", "speech_ratio", "words", "words_per_minute", "language", "realtime_factor",
                "cost_usd", "suspected_hallucination", "unreliable_text", "source", "speakers")
        return {**{key: k[key] for key in keep}, "quality_issues": len(issues)}

    def summary(done: dict[str, dict]) -> dict:
        return {"cost_usd": round(sum(m["cost_usd"] for m in done.values()), 6),
                "words": sum(m["words"] for m in done.values())}

    yield from run_per_episode(context, each_episode(list(context.partition_keys), step), summary,
                               checkpoints=services.checkpoints)
