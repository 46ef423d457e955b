"""What the checkpoint store says about a deployment, summed up (``podrun status``, and what a command's work left failed).

The summary's counts agree with the stages: an episode is ``failed`` when any of its stages is
failed now (a download, a transcription, its segments or KPIs), whatever its summary state; else
it is where its summary state says (discovered, downloaded, transcribed). Every episode is
counted once, so the four numbers add up to the episodes known.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from podinsight_dagster.store.checkpoints import (DISCOVERED, DOWNLOADED, FAILED, STAGES, TRANSCRIBED,
                                                   CheckpointStore)
from podinsight_dagster.store.failures import failed_episodes


@dataclass(frozen=True)
class Failure:
    """One episode whose stage is failed now, and why."""

    partition_key: str
    stage: str
    error: str | None
    retryable: bool | None


def failures(checkpoints: CheckpointStore, keys=None, listed: list | None = None) -> list[Failure]:
    """Each episode (of ``keys``, else all) with a failed stage: its first failed stage, in stage order.

    Built on ``failed_episodes`` (store/failures.py: every failed stage), or on its rows when given (``listed``).
    """
    wanted = None if keys is None else set(keys)
    out: dict[str, Failure] = {}
    for f in failed_episodes(checkpoints) if listed is None else listed:
        if f.partition_key not in out and (wanted is None or f.partition_key in wanted):
            out[f.partition_key] = Failure(f.partition_key, f.stage, f.reason, f.retryable)
    return sorted(out.values(), key=lambda f: (STAGES.index(f.stage) if f.stage in STAGES else 9, f.partition_key))


def episode_summary(checkpoints: CheckpointStore, failed: list[Failure] | None = None) -> dict[str, int]:
    """Episodes per place, agreeing with the stages: discovered, downloaded, transcribed, failed (sums to all)."""
    failed_keys = {f.partition_key for f in (failures(checkpoints) if failed is None else failed)}
    out = {DISCOVERED: 0, DOWNLOADED: 0, TRANSCRIBED: 0, FAILED: 0}
    for rec in checkpoints.episodes():
        out[FAILED if rec.partition_key in failed_keys or rec.state == FAILED else rec.state] += 1
    return out


def failed_feeds(checkpoints: CheckpointStore) -> list[dict]:
    """The feeds whose last poll failed, with the error."""
    return [{"slug": f.slug, "url": f.effective_url or f.url, "error": f.last_error, "checked_at": f.checked_at}
            for f in checkpoints.feeds() if f.last_status == "failed"]


def status_report(services) -> dict:
    """``podrun status --json``: episodes (agreeing with the stages), stages, failed feeds, rates, GB, cost."""
    checkpoints = services.checkpoints
    every_failed_stage = failed_episodes(checkpoints)
    failed = failures(checkpoints, listed=every_failed_stage)
    episodes = checkpoints.episodes()
    fetched = [e for e in episodes if e.state in (DOWNLOADED, TRANSCRIBED)]
    failed_fetch = [e for e in episodes if e.state == FAILED and e.failed_stage == "download"]
    attempted = len(fetched) + len(failed_fetch)
    per_host = {json.loads(d).get("hostname", "?"): v for d, v in services.metrics.latest("PerHost429").items()}
    freeze = services.budget.status()
    by_stage: dict[str, int] = {}
    for f in failed:
        by_stage[f.stage] = by_stage.get(f.stage, 0) + 1
    return {
        "episodes": episode_summary(checkpoints, failed),
        "failed_by_stage": by_stage,
        "failed_feeds": failed_feeds(checkpoints),
        "by_feed": checkpoints.counts_by_feed(),
        "stages": checkpoints.stage_counts(),
        "reserved_usd": round(services.budget.ledger.reserved(), 6),
        "download_success_rate": round(100.0 * len(fetched) / attempted, 2) if attempted else None,
        "per_host_429_rate": per_host,
        "gb_transferred": round(sum(e.bytes or 0 for e in fetched) / 1e9, 4),
        "cost_today_usd": round(services.budget.cost_today(), 6),
        "cost_ceiling_usd": services.budget.ceiling_usd,
        "frozen": freeze.active,
        "freeze_reason": freeze.reason if freeze.active else None,
        "failed_episodes": [f.to_json() for f in every_failed_stage],
    }


def status_lines(doc: dict) -> list[str]:
    """``podrun status`` as text: one summary line that agrees with the stage lines, failed feeds with their error."""
    failed = doc["episodes"][FAILED]
    top = "  ".join(f"{k}: {v}" for k, v in doc["episodes"].items())
    if failed:
        top += " (" + ", ".join(f"{stage} {n}" for stage, n in doc["failed_by_stage"].items()) + ")"
    lines = [top]
    for stage, counts in doc["stages"].items():
        lines.append(f"  {stage:<10} " + "  ".join(f"{k}: {v}" for k, v in counts.items()))
    if doc["failed_feeds"]:
        lines.append(f"failed feeds: {len(doc['failed_feeds'])}")
        lines += [f"  {f['slug']}: {f['error'] or 'no error recorded'}" for f in doc["failed_feeds"]]
    rate = doc["download_success_rate"]
    lines.append(f"download success rate: {'-' if rate is None else f'{rate:.1f}%'} (run-book target > 98%)")
    for host, r in sorted(doc["per_host_429_rate"].items()):
        lines.append(f"429 rate {host}: {r:.2f}% (target < 1%)")
    lines.append(f"GB transferred: {doc['gb_transferred']:.3f}")
    lines.append(f"cost today: ${doc['cost_today_usd']:.4f} of ${doc['cost_ceiling_usd']:.2f}"
                 + (f"  FROZEN: {doc['freeze_reason']}" if doc["frozen"] else ""))
    return lines


def failure_sentence(failed: list[Failure], total: int, doing: str, shown: int = 3, what: str = "episodes") -> str:
    """``2 of 5 episodes failed to download (f/a: HTTP 404; f/b: ...)``: the first few, each error's first line."""
    def first_line(error: str | None) -> str:
        lines = (error or "").strip().splitlines()
        return lines[0][:160] if lines else "no error recorded"

    listed = "; ".join(f"{f.partition_key}: {first_line(f.error)}" for f in failed[:shown])
    more = f"; and {len(failed) - shown} more" if len(failed) > shown else ""
    return f"{len(failed)} of {total} {what} failed to {doing} ({listed}{more})"
