"""Which episodes failed, at which stage and why: ``podrun status --failed`` and ``status --json``.

Read from the checkpoint store's stage status (the same on SQLite and DynamoDB), so it
lists what every run and process recorded, whichever started it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from podinsight_dagster.store.checkpoints import FAILED, STAGES, CheckpointStore


@dataclass(frozen=True)
class FailedEpisode:
    partition_key: str
    feed_slug: str
    title: str | None
    stage: str               # download, transcribe, segments or kpis
    reason: str              # the stage's last error, as recorded
    retryable: bool          # a later run picks it up by itself (podrun fetch / transcribe); else it needs a person
    attempts: int            # runs that worked on the stage
    failed_at: float | None  # Unix time

    def to_json(self) -> dict:
        return asdict(self)


def failed_episodes(checkpoints: CheckpointStore) -> list[FailedEpisode]:
    """Every episode with a stage that failed (one row per failed stage), in stage order, then by key."""
    out: list[FailedEpisode] = []
    listed: set[str] = set()
    for stage in STAGES:
        for pk, st in sorted(checkpoints.stages(stage).items()):
            if st.status != FAILED:
                continue
            rec = checkpoints.get(pk)
            out.append(FailedEpisode(pk, rec.feed_slug if rec else pk.split("/", 1)[0], rec.title if rec else None,
                                     stage, st.last_error or "no reason recorded", bool(st.retryable), st.attempts,
                                     st.finished_at))
            listed.add(pk)
    # An episode whose download failed before stages were recorded (an older data root): its summary row says it.
    for rec in checkpoints.episodes(state=FAILED):
        if rec.partition_key not in listed:
            out.append(FailedEpisode(rec.partition_key, rec.feed_slug, rec.title, rec.failed_stage or "download",
                                     rec.last_error or "no reason recorded", False, rec.attempts, rec.updated_at))
    return out
