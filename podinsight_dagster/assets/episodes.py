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


import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator

import warnings

from dagster import BetaWarning

# BackfillPolicy is "beta" in Dagster 1.13; we pin the version, so the warning would only reach
# operators (every podrun command prints it otherwise) and tell them nothing they can act on.
warnings.filterwarnings("ignore", category=BetaWarning, message=".*backfill_policy.*")

from dagster import (AssetExecutionContext, AssetMaterialization, AssetObservation, AssetsDefinition,
                     BackfillPolicy, DagsterEventType, Failure, MaterializeResult, MetadataValue, asset)

from podinsight_dagster.store import layout
from podinsight_dagster.costs.budget import BudgetExceeded
from podinsight_dagster.costs.projection import project
from podinsight_dagster.store.checkpoints import DONE, SEGMENTS, TRANSCRIBE
from podinsight_dagster.transcribe.options import transcript_code_version
from podinsight_dagster.store.keys import EpisodeKey
from podinsight_dagster.errors import StepError, StepSkipped
from podinsight_dagster.fetch.download import download_episodes, publish_download_metrics
from podinsight_dagster.transcribe.quality import transcript_issues
from podinsight_dagster.transcribe.steps import load_transcript, transcribe_episodes, write_kpis, write_segments
from podinsight_dagster.speakers.diarize import VERSION as DIARIZATION_VERSION
from podinsight_dagster.speakers.steps import diarize_episode, prepare_episode
from podinsight_dagster.chapters.steps import chapters_episode
from podinsight_dagster.chapters.tiling import VERSION as CHAPTERS_VERSION
from podinsight_dagster.partitions import episodes_partitions
from podinsight_dagster.resources import PodInsightResource
from podinsight_dagster.assets.catalog import episode_manifest
from podinsight_dagster.worker import Refused, outcome_message, read_outcomes

MAX_PARTITIONS_PER_RUN = 100
EPISODE_BACKFILL = BackfillPolicy.multi_run(max_partitions_per_run=MAX_PARTITIONS_PER_RUN)
# raw_audio has no step RetryPolicy: a step retry re-ran every episode of the step a minute later, permanent
# failures (404, an HTML page) included. Each episode's download retries its own transient failures
# (fetch/retry.py: PODINSIGHT_DOWNLOAD_ATTEMPTS, PODINSIGHT_DOWNLOAD_BACKOFF_MAX_S), inside download_episode.


Outcome = tuple[str, "dict | StepError"]


def each_episode(keys: list[str], step: Callable[[str], dict]) -> Iterator[Outcome]:
    """``step`` over ``keys`` one by one, any exception of one episode turned into its StepError."""
    for pk in keys:
        try:
            yield pk, step(pk)
        except StepError as exc:
            yield pk, exc
        except Exception as exc:  # noqa: BLE001 - a bug or bad data in one episode must not stop the others
            yield pk, StepError(f"{pk}: unexpected {type(exc).__name__}: {exc}")


def each_episode_prefetched(keys: list[str], prepare: Callable[[str], object], step: Callable[[str, object], dict],
                            workers: int = 2, ahead: int = 4) -> Iterator[Outcome]:
    """``each_episode`` whose ``prepare(pk)`` runs ahead in ``workers`` threads; ``step(pk, prepared)`` in key order.

    For work that releases the GIL (decoding, ONNX) and needs no shared state, while the
    order-dependent rest (and the Dagster events) stays on the step's thread, in order. At most
    ``ahead`` episodes are prepared and not yet stepped.
    """
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="prepare")
    pending: deque = deque()
    remaining = iter(keys)
    try:
        while True:
            for pk in remaining:
                pending.append((pk, pool.submit(prepare, pk)))
                if len(pending) >= ahead:
                    break
            if not pending:
                return
            pk, future = pending.popleft()
            try:
                yield pk, step(pk, future.result())
            except StepError as exc:
                yield pk, exc
            except Exception as exc:  # noqa: BLE001 - as each_episode
                yield pk, StepError(f"{pk}: unexpected {type(exc).__name__}: {exc}")
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def episode_metadata(checkpoints, pk: str) -> dict:
    """What the UI shows of an episode beside its hash key: title, feed, publication date, duration.

    ``duration_sec`` here is the feed's (itunes:duration); a step that measured the audio reports its own.
    """
    rec = checkpoints.get(pk) if checkpoints is not None else None
    if rec is None:
        return {}
    return _clean({"title": rec.title, "feed": rec.feed_slug, "published": rec.published,
                   "duration_sec": rec.duration_hint_sec})


def run_per_episode(context: AssetExecutionContext, outcomes: Iterable[Outcome],
                    summary: Callable[[dict[str, dict]], dict] | None = None, *, checkpoints=None) -> Iterator:
    """Report the outcome of every partition of the run; one episode's failure never stops the rest.

    With ``checkpoints`` (the store), each episode's materialization also carries ``episode_metadata``.

    ``outcomes`` yields ``(partition_key, metadata or StepError)`` in any order (downloads finish
    in the order their hosts allow). A generator: when some episodes fail, the ones that
    succeeded are yielded as materializations before the Failure is raised (events logged with
    context.log_event would be dropped with the failing step).
    """
    keys = list(context.partition_keys)
    done: dict[str, dict] = {}
    failed: dict[str, StepError] = {}
    skipped: dict[str, StepSkipped] = {}
    progress = SuccessLines(context.log.info, len(keys))
    with partition_list_read_once(context.instance):
        for i, (pk, result) in enumerate(outcomes, 1):
            if isinstance(result, (StepSkipped, StepError)):
                progress.flush()  # the log stays in the order episodes finished
            if isinstance(result, StepSkipped):
                context.log.warning(f"[{i}/{len(keys)}] {result}")
                skipped[pk] = result
                continue
            if isinstance(result, StepError):
                context.log.error(f"[{i}/{len(keys)}] {result}")
                failed[pk] = result
                continue
            done[pk] = {**episode_metadata(checkpoints, pk), **result}
            progress.add(i, f"{pk}: {_one_line(result)}")
            # Attached as each episode finishes, while the others are still in flight (at the end it
            # would add ~8 ms per episode to the step); used if the step materializes the run's partitions.
            context.add_asset_metadata(_clean(done[pk]), partition_key=pk)
        progress.flush()
    totals = {"episodes": len(keys), "succeeded": len(done), "failed": len(failed), "skipped": len(skipped)}
    if summary:
        totals.update(summary(done))
    held = sorted(pk for pk, exc in skipped.items() if exc.held_elsewhere)
    if held and later_stage_in_run(context):
        # Another run holds these and makes their later stages too: this run's later steps leave them alone
        # (left_to_other_runs), even once that run has finished this stage.
        yield AssetObservation(asset_key=context.asset_key, metadata={LEFT_TO_OTHERS: MetadataValue.json(held)})
    if failed and later_stage_in_run(context):
        # A later episode asset runs in this run: let it run for the good episodes (it skips the failed
        # ones, reading their stage status); the last one fails the run naming them all.
        context.log.error(f"{len(failed)} of {len(keys)} episodes failed; their later stages will not run")
        yield MaterializeResult(metadata={**totals, "failed_partitions": MetadataValue.json(sorted(failed))})
        return
    if failed:
        # Record the episodes that did succeed before failing the step for the rest.
        for pk, meta in done.items():
            yield AssetMaterialization(asset_key=context.asset_key, partition=pk, metadata=_clean(meta))
        reasons = "\n".join(f"- {pk}: {exc}" for pk, exc in failed.items())
        raise Failure(
            description=f"{len(failed)} of {len(keys)} episodes failed:\n{reasons}",
            metadata={**totals, "failed_partitions": MetadataValue.json(sorted(failed))},
            allow_retries=any(e.retryable for e in failed.values()),
        )
    yield MaterializeResult(metadata=totals)


class SuccessLines:
    """The run log's lines for episodes that succeeded: one message per ``interval_s`` at most, naming each.

    Every log line is an event the instance stores (~2-5 ms on SQLite, more under load): a fetch of
    2,000 small episodes spent seconds on one line per episode. Episodes that finish within the interval
    share one message (a line each in it, as before); failures and skips keep a message each, at once.
    """

    def __init__(self, log: Callable[[str], None], total: int, interval_s: float = 2.0):
        self.log, self.total, self.interval_s = log, total, interval_s
        self.lines: list[str] = []
        self.last_i = 0
        self.since = time.monotonic()

    def add(self, i: int, line: str) -> None:
        self.lines.append(line)
        self.last_i = i
        if time.monotonic() - self.since >= self.interval_s:
            self.flush()

    def flush(self) -> None:
        if self.lines:
            head = f"[{self.last_i}/{self.total}] "
            self.log(head + self.lines[0] if len(self.lines) == 1 else
                     head + f"{len(self.lines)} episodes succeeded:\n" + "\n".join(self.lines))
            self.lines = []
        self.since = time.monotonic()


# The per-episode assets in the order a run materializes them (transcript_index, in the archive
# group, comes last when a run includes it).
EPISODE_ASSETS = ("raw_audio", "transcript", "speakers", "chapters", "segments", "kpis", "transcript_index")


def assets_in_run(context: AssetExecutionContext) -> set[str]:
    selection = context.run.asset_selection
    if not selection:  # a job of its own (materialize, define_asset_job): the assets it executes
        selection = context.job_def.asset_layer.executable_asset_keys
    return {k.to_user_string() for k in selection}


def later_stage_in_run(context: AssetExecutionContext) -> bool:
    """Whether this run also materializes an episode asset after this one."""
    name = context.asset_key.to_user_string()
    if name not in EPISODE_ASSETS:
        return False
    return any(n in assets_in_run(context) for n in EPISODE_ASSETS[EPISODE_ASSETS.index(name) + 1:])


LEFT_TO_OTHERS = "left_to_other_runs"


def left_to_other_runs(context: AssetExecutionContext) -> frozenset[str]:
    """Episodes an earlier step of this run skipped because another run held them (its observations)."""
    records = context.instance.get_records_for_run(context.run.run_id,
                                                   of_type=DagsterEventType.ASSET_OBSERVATION).records
    out: set[str] = set()
    for record in records:
        meta = record.event_log_entry.dagster_event.event_specific_data.asset_observation.metadata
        if LEFT_TO_OTHERS in meta:
            out.update(meta[LEFT_TO_OTHERS].value)
    return frozenset(out)


def upstream_gate(services, pk: str, stage: str, label: str, left_to_others: frozenset[str] = frozenset()) -> None:
    """Raise unless ``stage`` of ``pk`` is done: StepSkipped while someone else holds it (or held it when an
    earlier step of this run got to it: ``left_to_others``), else StepError."""
    if pk in left_to_others:
        raise StepSkipped(f"{pk}: skipped, another run held it when this run got to it and makes it",
                          held_elsewhere=True)
    st = services.checkpoints.stage(pk, stage)
    if st.status == DONE:
        return
    if st.held():
        raise StepSkipped(f"{pk}: skipped, {label} is being made by {st.owner}", held_elsewhere=True)
    why = f": {st.last_error}" if st.last_error else ""
    raise StepError(f"{pk}: {label} is {st.status}{why} (upstream failed, not attempted)")


@contextmanager
def partition_list_read_once(instance) -> Iterator[None]:
    """Serve the dynamic partition list from one read while per-partition metadata is attached.

    Dagster 1.13 validates each ``add_asset_metadata(partition_key=...)`` by listing every
    partition of the definition, or (1.13.27) by one ``has_dynamic_partition`` query per call:
    at 20,000 partitions that is ~50 ms per episode, ~7 ms at 80 (see docs/BENCHMARKS.md). The
    run's partition range is fixed when the run is created, so one read serves the whole loop.
    Scoped to this block and this instance object only.
    """
    original = instance.get_dynamic_partitions
    cache: dict[str, list[str]] = {}
    members: dict[str, set[str]] = {}

    def cached(partitions_def_name: str) -> list[str]:
        if partitions_def_name not in cache:
            cache[partitions_def_name] = original(partitions_def_name)
        return cache[partitions_def_name]

    def has(partitions_def_name: str, partition_key: str) -> bool:
        if partitions_def_name not in members:
            members[partitions_def_name] = set(cached(partitions_def_name))
        return partition_key in members[partitions_def_name]

    patched = {"get_dynamic_partitions": cached, "has_dynamic_partition": has}
    had_own = {name: vars(instance)[name] for name in patched if name in vars(instance)}
    for name, fn in patched.items():
        setattr(instance, name, fn)
    try:
        yield
    finally:
        for name in patched:
            if name in had_own:
                setattr(instance, name, had_own[name])
            else:
                delattr(instance, name)  # back to the class's method


def preflight_or_fail(settings, phase: str) -> None:
    """Fail the step in one sentence, before any work, when an AWS resource the run needs is missing."""
    from podinsight_dagster.services import preflight
    from podinsight_dagster.store.preflight import PreflightError

    try:
        preflight(settings, phase)
    except PreflightError as exc:
        raise Failure(description=str(exc), allow_retries=False) from None


def _clean(meta: dict) -> dict:
    return {k: v for k, v in meta.items() if v is not None}


def _one_line(meta: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in meta.items() if not isinstance(v, (dict, list, MetadataValue)))


@asset(partitions_def=episodes_partitions, deps=[episode_manifest], group_name="episodes",
       backfill_policy=EPISODE_BACKFILL, pool="podinsight_fetch",
       description="The episode's audio in pod-insights-raw/<feed_slug>/<guid_key>/audio/, with meta/meta.json.")
def raw_audio(context: AssetExecutionContext, podinsight: PodInsightResource):
    services = podinsight.services()
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
    def _asset(context: AssetExecutionContext, podinsight: PodInsightResource):
        yield from _transcript_run(context, podinsight)

    return _asset


def transcript_asset_for(settings) -> AssetsDefinition:
    """The ``transcript`` asset versioned for ``settings`` (a ``Settings``)."""
    from podinsight_dagster.services import transcribe_options

    return transcript_asset(transcript_code_version(transcribe_options(settings)))


transcript = transcript_asset()  # unversioned: the definitions use transcript_asset_for(settings)


def _transcript_run(context: AssetExecutionContext, podinsight: PodInsightResource):
    services = podinsight.services()
    preflight_or_fail(services.settings, "transcribe")
    options = services.transcriber.options
    keys = list(context.partition_keys)
    projection = project(services.budget, services.raw, map(services.checkpoints.get, keys), options.model)
    audio_sec, projected = projection.audio.seconds, projection.usd
    try:
        # One transaction: refused when today's spend + running reservations + this projection would cross
        # the ceiling, or when frozen (run-book §6.1). Every launch (UI backfill, sensor, podrun) comes here.
        reservation = services.budget.reserve(projected, owner=context.run_id,
                                              ttl_s=min(12 * 3600.0, 600.0 + 2 * audio_sec))
    except BudgetExceeded as exc:
        raise Failure(f"transcription refused: {exc} (projection: {projection.describe()})",
                      allow_retries=False) from exc
    context.log.info(f"reserved ${reservation.usd:.4f} for {projection.describe()}")
    try:
        yield from _transcript(context, podinsight, services, options, keys)
    finally:
        services.budget.settle(reservation)


def _transcript(context, podinsight, services, options, keys):
    if services.settings.transcribe_via == "in-process":
        # All episodes of the run in one call: publisher transcripts first, then one batched ASR pass
        # (model loaded once, and only if needed; decoding overlaps inference; short episodes share
        # batches).
        # (No per-episode log line here: run_per_episode writes one per episode below; each line is an
        # event-log write, ~2-10 ms on SQLite.)
        results = transcribe_episodes(services, keys, owner=context.run_id, run_id=context.run_id)
        messages = [outcome_message(pk, r) for pk, r in results.items()]
    else:
        # The same steps in worker.py under Dagster Pipes (a subprocess, or a Batch job on a GPU),
        # which reports each episode's outcome in the same messages.
        messages = podinsight.run_worker(context, {"partition_keys": keys, "through": "transcript",
                                                   "run_id": context.run_id})
    try:
        outcomes = read_outcomes(messages)
    except Refused as exc:
        raise Failure(f"transcription refused: {exc} (projection: {projection.describe()})",
                      allow_retries=False) from exc

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
def speakers(context: AssetExecutionContext, podinsight: PodInsightResource):
    services = podinsight.services()
    left = left_to_other_runs(context)

    def prepare(pk: str):
        # Labels are optional for what follows: segments wait for the transcript, not for this step.
        upstream_gate(services, pk, TRANSCRIBE, "transcript", left)
        return prepare_episode(services, pk)

    def step(pk: str, prepared) -> dict:
        out = diarize_episode(services, pk, prepared)
        names = [s["name"] for s in out["speakers"]]
        return {"speakers": out["num_speakers"], "count_source": out["count_source"],
                "persons_listed": out["persons_listed"], "names": ", ".join(names) or None,
                "wall_sec": out["wall_sec"], "method": out["method"]}

    def summary(done: dict[str, dict]) -> dict:
        return {"diarization_sec": round(sum(m["wall_sec"] for m in done.values()), 3)}

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
def chapters(context: AssetExecutionContext, podinsight: PodInsightResource):
    services = podinsight.services()
    left = left_to_other_runs(context)

    def step(pk: str) -> dict:
        # Optional, like speakers: segments and kpis wait for the transcript, not for this step.
        upstream_gate(services, pk, TRANSCRIBE, "transcript", left)
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
def segments(context: AssetExecutionContext, podinsight: PodInsightResource):
    services = podinsight.services()
    left = left_to_other_runs(context)

    def step(pk: str) -> dict:
        upstream_gate(services, pk, TRANSCRIBE, "transcript", left)
        services.checkpoints.mark_stage(pk, SEGMENTS, "running")
        try:
            out = write_segments(services, pk)
        except Exception as exc:
            services.checkpoints.mark_failed(pk, SEGMENTS, str(exc), retryable=getattr(exc, "retryable", False))
            raise
        services.checkpoints.mark_stage(pk, SEGMENTS, DONE)
        ek = EpisodeKey.parse(pk)
        return {**out, "path": MetadataValue.path(services.stage.uri(layout.segments_key(ek)))}

    yield from run_per_episode(context, each_episode(list(context.partition_keys), step),
                               checkpoints=services.checkpoints)


@asset(partitions_def=episodes_partitions, deps=[segments], group_name="episodes",
       backfill_policy=EPISODE_BACKFILL,
       description="Per-episode KPIs (kpis.json); patches the raw meta.json transcript_key when all is written.")
def kpis(context: AssetExecutionContext, podinsight: PodInsightResource):
    services = podinsight.services()
    left = left_to_other_runs(context)

    def step(pk: str) -> dict:
        upstream_gate(services, pk, SEGMENTS, "segments", left)
        services.checkpoints.mark_stage(pk, "kpis", "running")
        try:
            k = write_kpis(services, pk)
        except Exception as exc:
            services.checkpoints.mark_failed(pk, "kpis", str(exc), retryable=getattr(exc, "retryable", False))
            raise
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
