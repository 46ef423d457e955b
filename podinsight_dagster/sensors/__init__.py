"""Sensors: queue new episodes as feeds publish them; optionally queue transcription within budget."""

import json
import time
from dataclasses import replace
from datetime import datetime, timezone

from dagster import (DagsterRunStatus, DefaultSensorStatus, RunRequest, RunsFilter, SensorDefinition, SensorEvaluationContext, SensorResult,
                     SkipReason, sensor)

from podinsight_dagster.checks import feeds_check_evaluation
from podinsight_dagster.costs.budget import BudgetExceeded
from podinsight_dagster.costs.projection import estimate_audio
from podinsight_dagster.fetch.catalog import CatalogError, FeedSpec
from podinsight_dagster.fetch.http import HttpClient
from podinsight_dagster.store.checkpoints import DOWNLOAD, DOWNLOADED, FAILED, TRANSCRIBE
from podinsight_dagster.fetch.discover import poll_feeds
from podinsight_dagster.partitions import EPISODES, RANGE_END_TAG, RANGE_START_TAG, contiguous_ranges
from podinsight_dagster.resources.seams import PodInsightResource
from podinsight_dagster.settings import Settings

# The named jobs the sensors' runs belong to (definitions.py), so the UI lists them on those jobs' pages
# (a sensor with an asset selection launches Dagster's hidden __ASSET_JOB instead).
FETCH_JOB = "fetch_episodes"
TRANSCRIBE_JOB = "transcribe_episodes"
NEW_EPISODES_INTERVAL_S = Settings.new_episodes_interval_sec        # PODINSIGHT_NEW_EPISODES_INTERVAL_SEC
AUTO_TRANSCRIBE_INTERVAL_S = Settings.auto_transcribe_interval_sec  # PODINSIGHT_AUTO_TRANSCRIBE_INTERVAL_SEC
# Runs not finished yet: their episodes are not requested again.
OPEN_RUN_STATUSES = [DagsterRunStatus.NOT_STARTED, DagsterRunStatus.QUEUED, DagsterRunStatus.STARTING,
                     DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]
# While a download run is still going, what it has downloaded so far waits for it to finish (one transcription
# run for the batch, not one per tick), but never longer than this.
BATCH_HOLD_S = 10 * 60.0

MAX_NEW_PER_TICK = 25_000
DOWNLOAD_BATCH = 100
TRANSCRIBE_BATCH = 100
MAX_TRANSCRIBE_PER_TICK = 500
# Dagster cancels a sensor evaluation after 60 s (DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS). No feed starts after
# TICK_BUDGET_S; the feeds in flight then finish (each request within SENSOR_HTTP's timeouts, one attempt:
# a failing feed is retried on its next turn, never slept on inside a tick) and the tick registers what it
# found. Feeds not started carry over to the next tick, which starts with them (round robin).
TICK_BUDGET_S = 40.0
FEED_WORKERS = 16  # feeds are mostly waiting on the network; each host's limit still applies
SENSOR_HTTP = {"connect_timeout": 5.0, "read_timeout": 10.0, "low_speed_window_s": 10.0, "max_attempts": 1}
PARTITIONS_PER_ADD = 10_000  # keys per add_dynamic_partitions call: one SQL IN clause, well under SQLite's limit
# A range whose download run failed is requested again (new run key ``download:<start>:<end>:retry<n>``)
# after RANGE_RETRY_BACKOFF_S * 2**(n-1), at most MAX_RANGE_RETRIES times; then it is left for a person,
# with the reason in the cursor, the tick's log and skip reason, and the episodes' download stage status.
MAX_RANGE_RETRIES = 3
RANGE_RETRY_BACKOFF_S = 30 * 60.0
ATTEMPT_TAG = "podinsight/range_attempt"
TRIGGER_TAG = "podinsight/trigger"
FAILED_RUNS_PER_TICK = 200
GIVEN_UP_KEPT = 100


def _every(seconds: float) -> str:
    return f"{seconds / 60:g} minutes" if seconds >= 120 and seconds % 60 == 0 else f"{seconds:g} s"


def wall_clock() -> float:
    """Now, for retry backoffs (a function of its own so a test can move it forward)."""
    return time.time()


def batched_ranges(ordered: list[str], keys: list[str], size: int) -> list[tuple[str, str]]:
    """Contiguous partition ranges over ``keys`` in instance order, each at most ``size`` partitions."""
    pos = {k: i for i, k in enumerate(ordered)}
    out = []
    for start, end in contiguous_ranges(ordered, keys):
        span = ordered[pos[start]:pos[end] + 1]
        out += [(span[i], span[min(i + size, len(span)) - 1]) for i in range(0, len(span), size)]
    return out


# A sensor's run executes its steps in the run's own process, as podrun's runs do: the default multiprocess
# executor starts a process per step, each importing the code location again (3-15 s apiece on a busy machine,
# seven steps in a transcription run), which is most of a short run's time. Pools still bound the steps.
IN_PROCESS = {"execution": {"config": {"in_process": {}}}}


def range_run(kind: str, start: str, end: str, trigger: str, attempt: int = 0) -> RunRequest:
    """The run of one partition range; a retry (``attempt`` > 0) has its own run key, so it is not deduplicated."""
    return RunRequest(run_key=f"{kind}:{start}:{end}" + (f":retry{attempt}" if attempt else ""),
                      run_config=IN_PROCESS,
                      tags={RANGE_START_TAG: start, RANGE_END_TAG: end, TRIGGER_TAG: trigger,
                            ATTEMPT_TAG: str(attempt)})


def _failure_reason(services, ordered: list[str], start: str, end: str) -> str:
    """The range's failed downloads, from the checkpoint store's stage status (what the UI's run shows too)."""
    try:
        span = ordered[ordered.index(start):ordered.index(end) + 1]
    except ValueError:
        return "run failed (its partitions are no longer registered)"
    failed = [(pk, st) for pk in span for st in [services.checkpoints.stage(pk, DOWNLOAD)] if st.status == FAILED]
    if not failed:
        return "run failed (no episode's download is marked failed: see the run's logs)"
    pk, st = failed[0]
    more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
    return f"{len(failed)} of {len(span)} episodes failed to download; {pk}: {st.last_error}{more}"


def retry_failed_ranges(context: SensorEvaluationContext, services, previous: dict, trigger: str, *,
                        max_retries: int = MAX_RANGE_RETRIES, backoff_s: float = RANGE_RETRY_BACKOFF_S,
                        at: float | None = None) -> tuple[list[RunRequest], dict]:
    """Failed runs of this sensor's ranges since the last tick: schedule a retry (backoff) or give up.

    Returns the retries due now and the cursor's ``retries`` part: ``scan_after`` (the failed runs
    seen so far), ``pending`` (range -> attempt, due time, reason) and ``given_up`` (range -> reason).
    """
    at = wall_clock() if at is None else at
    state = previous.get("retries", {})
    pending: dict = dict(state.get("pending", {}))
    given_up: dict = dict(state.get("given_up", {}))
    scan_after = float(state.get("scan_after", 0.0))
    records = context.instance.get_run_records(
        filters=RunsFilter(statuses=[DagsterRunStatus.FAILURE], tags={TRIGGER_TAG: trigger},
                           updated_after=datetime.fromtimestamp(scan_after, tz=timezone.utc)),
        limit=FAILED_RUNS_PER_TICK)
    ordered = context.instance.get_dynamic_partitions(EPISODES) if records else []
    for rec in sorted(records, key=lambda r: r.update_timestamp):
        scan_after = max(scan_after, rec.update_timestamp.timestamp())
        tags = rec.dagster_run.tags
        start, end = tags.get(RANGE_START_TAG), tags.get(RANGE_END_TAG)
        if not start or not end:
            continue
        span = f"{start}:{end}"
        attempt = int(tags.get(ATTEMPT_TAG) or 0)
        if span in pending and pending[span]["attempt"] > attempt:
            continue  # a retry of this range is already scheduled
        reason = _failure_reason(services, ordered, start, end)
        if attempt >= max_retries:
            given_up[span] = {"attempts": attempt + 1, "run_id": rec.dagster_run.run_id, "reason": reason,
                              "at": at}
            pending.pop(span, None)
            context.log.error(f"range {span}: failed {attempt + 1} times, left for a person: {reason}")
            continue
        due = at + backoff_s * 2 ** attempt
        pending[span] = {"start": start, "end": end, "attempt": attempt + 1, "due": due, "reason": reason,
                         "run_id": rec.dagster_run.run_id}
        given_up.pop(span, None)
        context.log.warning(f"range {span}: run {rec.dagster_run.run_id} failed ({reason}); "
                            f"retry {attempt + 1} of {max_retries} in {backoff_s * 2 ** attempt:.0f} s")
    runs = []
    for span, entry in sorted(pending.items()):  # a copy: due entries are removed as they are requested
        if entry["due"] <= at:
            runs.append(range_run("download", entry["start"], entry["end"], trigger, attempt=entry["attempt"]))
            del pending[span]
    given_up = dict(sorted(given_up.items(), key=lambda kv: kv[1]["at"])[-GIVEN_UP_KEPT:])
    return runs, {"scan_after": scan_after, "pending": pending, "given_up": given_up}


def _resume_at(feeds: list[FeedSpec], previous: dict) -> int:
    """Where this tick starts in the catalog: the feed the last tick did not reach (round robin)."""
    slug = previous.get("next_feed")
    if not feeds or slug is None:
        return 0
    for i, spec in enumerate(feeds):
        if spec.slug == slug:
            return i
    return int(previous.get("next_index", 0)) % len(feeds)  # that feed left the catalog: its old place


def sensor_http(client: HttpClient) -> HttpClient:
    """The resource's client (policy, host limiter) with the sensor's short timeouts and a single attempt."""
    return HttpClient(replace(client.config, **SENSOR_HTTP), client.policy, client.limiter)


def poll_new_episodes(context: SensorEvaluationContext, podinsight: PodInsightResource, *,
                      tick_budget_s: float = TICK_BUDGET_S, max_workers: int = FEED_WORKERS,
                      max_range_retries: int = MAX_RANGE_RETRIES, retry_backoff_s: float = RANGE_RETRY_BACKOFF_S,
                      name: str = "new_episodes_sensor"):
    """One tick of ``new_episodes_sensor``: poll feeds for ``tick_budget_s``, register and queue what is new."""
    started = time.monotonic()
    try:
        catalog = podinsight.catalog()
    except CatalogError as exc:
        return SkipReason(f"feed catalog unreadable: {exc}")
    previous = json.loads(context.cursor) if context.cursor else {}
    feeds = list(catalog.feeds)
    start = _resume_at(feeds, previous)
    order = feeds[start:] + feeds[:start]
    services = podinsight.services()
    http = sensor_http(services.http)
    try:
        results, _, unpolled = poll_feeds(replace(services, http=http), order, deadline=started + tick_budget_s,
                                          max_workers=max_workers)
    finally:
        http.close()
    polled_s = time.monotonic() - started
    retries, retry_state = retry_failed_ranges(context, services, previous, name, max_retries=max_range_retries,
                                               backoff_s=retry_backoff_s)

    # Episodes the checkpoint store knows but the instance lacks (new ones, those of an interrupted tick,
    # those over the last tick's cap) are registered now, whichever feeds this tick reached.
    existing = context.instance.get_dynamic_partitions(EPISODES)
    known = set(existing)
    rank = {spec.slug: i for i, spec in enumerate(feeds)}
    waiting = [r for r in services.checkpoints.episodes() if r.feed_slug in rank and r.partition_key not in known]
    waiting.sort(key=lambda r: rank[r.feed_slug])  # stable: each feed's episodes stay in discovery order
    new = list(dict.fromkeys(r.partition_key for r in waiting))[:MAX_NEW_PER_TICK]

    polled = {f.slug for f in results}
    failed = {slug: err for slug, err in previous.get("failed_feeds", {}).items()
              if slug in rank and slug not in polled}
    for f in results:
        if f.status == "failed":
            failed[f.slug] = f.error
            context.log.warning(f"feed {f.slug} failed: {f.error}")
        elif f.status == "partial":  # a later page of a paged feed failed; the next poll resumes there
            context.log.warning(f"feed {f.slug}: {f.error}")
    next_feed = unpolled[0].slug if unpolled else None
    context.log.info(f"polled {len(results)} of {len(feeds)} feeds in {polled_s:.1f} s (budget {tick_budget_s:g} s)"
                     + (f"; {len(unpolled)} carried over to the next tick, from {next_feed}" if unpolled else "")
                     + f"; {len(new)} new episodes")
    # The feeds' health where a user looks: the every_feed_answers check on `feeds`, reported when it changes
    # (a failing feed is otherwise only a warning in a tick marked SUCCESS).
    health = feeds_check_evaluation(services, catalog)
    seen = {"passed": health.passed, "description": health.description}
    events = [health] if previous.get("feeds_check") != seen else []
    cursor = json.dumps({
        "ticks": previous.get("ticks", 0) + 1, "registered": previous.get("registered", 0) + len(new),
        "last_new": len(new), "last_polled": len(results), "carried_over": len(unpolled),
        "next_feed": next_feed, "next_index": rank.get(next_feed, 0) if next_feed else 0,
        "failed_feeds": failed, "retries": retry_state, "feeds_check": seen})
    if not new and not retries:
        given_up = retry_state["given_up"]
        left = (f"; {len(given_up)} failed ranges left for a person after {max_range_retries} retries "
                f"(see the cursor), last: {list(given_up)[-1]}: {list(given_up.values())[-1]['reason']}"
                if given_up else "")
        waiting_retry = (f"; {len(retry_state['pending'])} failed ranges waiting to be retried"
                         if retry_state["pending"] else "")
        return SensorResult(skip_reason=SkipReason(
            f"no new episodes; polled {len(results)} of {len(feeds)} feeds, {len(failed)} failing"
            + waiting_retry + left), cursor=cursor, asset_events=events)
    # The instance appends new partitions in the order given: the runs' ranges are contiguous there.
    runs = retries + [range_run("download", a, b, name)
                      for a, b in batched_ranges(list(existing) + new, new, DOWNLOAD_BATCH)]
    # Registered here in bulk, not returned as dynamic_partitions_requests: the sensor daemon applies those
    # with one has_dynamic_partition query per key (48-123 s for 20,000 keys, holding up every other sensor).
    for i in range(0, len(new), PARTITIONS_PER_ADD):
        context.instance.add_dynamic_partitions(EPISODES, new[i:i + PARTITIONS_PER_ADD])
    return SensorResult(run_requests=runs, cursor=cursor, asset_events=events)


def build_new_episodes_sensor(*, tick_budget_s: float = TICK_BUDGET_S, max_workers: int = FEED_WORKERS,
                              name: str = "new_episodes_sensor", max_range_retries: int = MAX_RANGE_RETRIES,
                              retry_backoff_s: float = RANGE_RETRY_BACKOFF_S,
                              interval_s: int = NEW_EPISODES_INTERVAL_S) -> SensorDefinition:
    """``new_episodes_sensor`` with another interval, per-tick polling budget or concurrency (tests: short ones)."""

    @sensor(name=name, minimum_interval_seconds=interval_s, default_status=DefaultSensorStatus.STOPPED,
            job_name=FETCH_JOB,
            description=f"Every {_every(interval_s)} (PODINSIGHT_NEW_EPISODES_INTERVAL_SEC) polls the feeds "
                        f"(conditional GET, {max_workers} at a time, for at most "
                        f"{tick_budget_s:g} s a tick; the rest carry over to the next tick), registers new "
                        "episodes as partitions and queues their download, one run per 100 episodes. A range "
                        f"whose run failed is queued again after a backoff, at most {max_range_retries} times, "
                        "then left for a person (the cursor's retries.given_up says why). A feed that fails "
                        "fails the every_feed_answers check on `feeds`. "
                        "Transcription keeps the run-book's human gate (auto_transcribe_sensor, off by default).")
    def _new_episodes_sensor(context: SensorEvaluationContext, podinsight: PodInsightResource):
        return poll_new_episodes(context, podinsight, tick_budget_s=tick_budget_s, max_workers=max_workers,
                                 max_range_retries=max_range_retries, retry_backoff_s=retry_backoff_s, name=name)

    return _new_episodes_sensor


new_episodes_sensor = build_new_episodes_sensor()


def keys_in_open_runs(instance, ordered: list[str], trigger: str) -> set[str]:
    """The episodes of ``trigger``'s range runs that have not finished (queued, starting or running)."""
    pos = {k: i for i, k in enumerate(ordered)}
    out: set[str] = set()
    for rec in instance.get_run_records(filters=RunsFilter(statuses=OPEN_RUN_STATUSES, tags={TRIGGER_TAG: trigger}),
                                        limit=1000):
        start, end = rec.dagster_run.tags.get(RANGE_START_TAG), rec.dagster_run.tags.get(RANGE_END_TAG)
        if start in pos and end in pos:
            out.update(ordered[pos[start]:pos[end] + 1])
    return out


def downloads_in_progress(instance) -> list[str]:
    """Run ids of download runs (fetch_episodes, episode_pipeline) not finished yet."""
    return [rec.dagster_run.run_id for job in (FETCH_JOB, "episode_pipeline")
            for rec in instance.get_run_records(filters=RunsFilter(job_name=job, statuses=OPEN_RUN_STATUSES),
                                                limit=10)]


def queue_transcription(context: SensorEvaluationContext, podinsight: PodInsightResource,
                        name: str = "auto_transcribe_sensor", at: float | None = None):
    """One tick of ``auto_transcribe_sensor``: what finished downloading and waits, in range runs, within budget.

    Waiting: downloaded, in the instance, its transcription neither failed for good (``podrun transcribe
    --retry-failed`` does those), held by another run, nor in a run of this sensor not finished yet.
    """
    at = wall_clock() if at is None else at
    services = podinsight.services()
    ordered = context.instance.get_dynamic_partitions(EPISODES)
    in_instance = set(ordered)
    queued = keys_in_open_runs(context.instance, ordered, name)
    stages = services.checkpoints.stages(TRANSCRIBE)

    def waits(pk: str) -> bool:
        st = stages.get(pk)
        return st is None or not (st.held() or (st.status == FAILED and not st.retryable))

    todo = [r for r in services.checkpoints.episodes(state=DOWNLOADED)
            if r.partition_key in in_instance and r.partition_key not in queued and waits(r.partition_key)]
    todo = todo[:MAX_TRANSCRIBE_PER_TICK]
    if not todo:
        return SkipReason("no downloaded episodes waiting" + (f" ({len(queued)} in transcription runs not finished)"
                                                               if queued else ""))
    downloading = downloads_in_progress(context.instance)
    oldest = min((r.downloaded_at or at) for r in todo)
    if downloading and at - oldest < BATCH_HOLD_S:
        return SkipReason(f"{len(todo)} downloaded episodes wait for download run {downloading[0]} to finish (one "
                          f"transcription run for the batch; at most {BATCH_HOLD_S / 60:g} minutes)")
    budget = services.budget
    # Shrink the request until its projection fits under the ceiling.
    _, seconds = estimate_audio(services.raw, todo)  # measured lengths of the downloaded files, read once
    rate = budget.rate(services.settings.model)
    while todo:
        projected = sum(seconds[:len(todo)]) * rate.usd_per_audio_second
        try:
            budget.check(projected)
            break
        except BudgetExceeded as exc:
            if budget.status().active or len(todo) == 1:
                return SkipReason(f"not queuing transcription: {exc} ({rate.basis})")
            todo = todo[: len(todo) // 2]
    keys = [r.partition_key for r in todo]
    context.log.info(f"queuing transcription of {len(keys)} downloaded episodes")
    return [range_run("transcribe", a, b, name) for a, b in batched_ranges(ordered, keys, TRANSCRIBE_BATCH)]


def build_auto_transcribe_sensor(*, interval_s: int = AUTO_TRANSCRIBE_INTERVAL_S,
                                 name: str = "auto_transcribe_sensor") -> SensorDefinition:
    """``auto_transcribe_sensor`` looking for finished downloads every ``interval_s``."""

    @sensor(name=name, minimum_interval_seconds=interval_s, default_status=DefaultSensorStatus.STOPPED,
            job_name=TRANSCRIBE_JOB,
            description="Off by default (the run-book's human gate). When on, every "
                        f"{_every(interval_s)} (PODINSIGHT_AUTO_TRANSCRIBE_INTERVAL_SEC) queues transcription of "
                        "the episodes that finished downloading and wait (batched: while a download run is still "
                        f"going, for up to {BATCH_HOLD_S / 60:g} minutes, its episodes wait for it to finish), as "
                        "long as today's cost plus the projection stays under the ceiling.")
    def _auto_transcribe_sensor(context: SensorEvaluationContext, podinsight: PodInsightResource):
        return queue_transcription(context, podinsight, name=name)

    return _auto_transcribe_sensor


auto_transcribe_sensor = build_auto_transcribe_sensor()


def sensors_for(settings: Settings) -> list[SensorDefinition]:
    """Both sensors, at the intervals ``settings`` give."""
    return [build_new_episodes_sensor(interval_s=settings.new_episodes_interval_sec),
            build_auto_transcribe_sensor(interval_s=settings.auto_transcribe_interval_sec)]
