"""How an episode asset's step goes: each episode isolated from the others, one outcome and one log line each,
metadata per partition, later stages gated on earlier ones (the gate itself: store/claims.py), and the run's last
episode asset failing the step naming every failed episode (assets/episodes.py, assets/archive.py)."""

import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator

from dagster import (AssetExecutionContext, AssetMaterialization, AssetObservation, DagsterEventType, Failure,
                     MaterializeResult, MetadataValue)

from podinsight_dagster.dagster_internals import partition_list_read_once
from podinsight_dagster.errors import StepError, StepSkipped

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
