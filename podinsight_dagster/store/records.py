"""The checkpoint store's vocabulary: episode states, stages and their statuses, the records, and the seam
(``CheckpointStore``) its two implementations share (SQLite: store/checkpoints.py; DynamoDB: store/dynamo.py)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterable, Protocol

DISCOVERED = "discovered"
DOWNLOADED = "downloaded"
TRANSCRIBED = "transcribed"
FAILED = "failed"
STATES = (DISCOVERED, DOWNLOADED, TRANSCRIBED, FAILED)
_RANK = {DISCOVERED: 0, FAILED: 0, DOWNLOADED: 1, TRANSCRIBED: 2}

# Stages and their statuses.
DOWNLOAD, TRANSCRIBE, SEGMENTS, KPIS = "download", "transcribe", "segments", "kpis"
STAGES = (DOWNLOAD, TRANSCRIBE, SEGMENTS, KPIS)
PENDING, RUNNING, DONE = "pending", "running", "done"
STAGE_STATUSES = (PENDING, RUNNING, DONE, FAILED)
# The summary state an episode must be in for a stage to start (the previous stage is done).
REQUIRES = {DOWNLOAD: (DISCOVERED, FAILED, DOWNLOADED, TRANSCRIBED), TRANSCRIBE: (DOWNLOADED, TRANSCRIBED),
            SEGMENTS: (DOWNLOADED, TRANSCRIBED), KPIS: (DOWNLOADED, TRANSCRIBED)}


def now() -> float:
    return time.time()


@dataclass
class EpisodeRecord:
    partition_key: str
    feed_slug: str
    guid_key: str
    guid: str | None = None
    title: str | None = None
    enclosure_url: str | None = None
    enclosure_type: str | None = None
    enclosure_length: int | None = None
    published: str | None = None
    duration_hint_sec: float | None = None
    transcripts_json: str | None = None  # the feed's podcast:transcript links, JSON list
    persons_json: str | None = None      # the feed's podcast:person entries (item, else channel), JSON list
    chapters_url: str | None = None      # the feed's podcast:chapters link
    description: str | None = None       # the item's show notes, plain text (names a guest the feed may not list)
    download_url: str | None = None      # a smaller podcast:alternateEnclosure, downloaded instead of the enclosure
    download_integrity: str | None = None  # its podcast:integrity (SRI, e.g. sha256-<base64>), checked when given
    state: str = DISCOVERED
    failed_stage: str | None = None
    attempts: int = 0
    bytes: int | None = None
    sha256: str | None = None
    last_error: str | None = None
    quality_issue: str | None = None  # why a transcript looks wrong (empty despite speech, disordered)
    speaker_issue: str | None = None  # diarization found fewer voices than the feed lists
    discovered_at: float = field(default_factory=now)
    updated_at: float = field(default_factory=now)
    downloaded_at: float | None = None
    transcribed_at: float | None = None
    cost_usd: float | None = None


@dataclass
class StageStatus:
    """One stage of one episode. ``owner``/``lease_until`` are set while someone holds it (``claim``)."""

    partition_key: str
    stage: str
    status: str = PENDING
    attempts: int = 0
    last_error: str | None = None
    retryable: bool | None = None
    owner: str | None = None
    lease_until: float | None = None
    code_version: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    updated_at: float | None = None

    def held(self, at: float | None = None) -> bool:
        """Someone holds a live lease on it."""
        return self.status == RUNNING and self.lease_until is not None and self.lease_until > (at or now())


def claim_refusal(rec: EpisodeRecord | None, st: StageStatus, owner: str, *, at: float,
                  unless_done_version: str | None) -> str | None:
    """Why ``owner`` may not claim ``st`` now (None: it may). Shared by every CheckpointStore."""
    if rec is None:
        return "not in the checkpoint store"
    if rec.state not in REQUIRES[st.stage]:
        return f"episode is {rec.state}; {st.stage} needs it {' or '.join(REQUIRES[st.stage])}"
    if st.held(at) and st.owner != owner:
        return f"claimed by {st.owner} until {time.strftime('%H:%M:%S', time.gmtime(st.lease_until))} UTC"
    if unless_done_version is not None and st.status == DONE and st.code_version == unless_done_version:
        return f"already done at code version {unless_done_version}"
    return None


@dataclass
class FeedRecord:
    slug: str
    url: str                          # the URL the catalog names
    effective_url: str | None = None  # where the feed lives now (after a 301/308 or itunes:new-feed-url)
    tier: int | None = None
    etag: str | None = None
    last_modified: str | None = None
    last_status: str | None = None
    last_error: str | None = None
    episodes: int = 0
    checked_at: float | None = None
    # a paged feed's back-catalogue not read yet (the walk hit the page bound or a page failed): the
    # next poll continues there
    resume_url: str | None = None
    podcast_guid: str | None = None   # the show's <podcast:guid>: the same show at a new address keeps its state


# What the feed (or a manifest row) says about an episode: refreshed by register_episodes when carried.
DESCRIPTIVE = ("title", "enclosure_url", "enclosure_type", "enclosure_length", "published", "duration_hint_sec",
               "transcripts_json", "persons_json", "chapters_url", "description", "download_url", "download_integrity")
FEED_ONLY = ("download_url", "download_integrity")  # podcast:alternateEnclosure: no manifest row carries it


def carried_fields(rec: EpisodeRecord, from_feed: bool) -> dict:
    """What registering ``rec`` again refreshes: the fields it carries (and, from the feed, its alternate)."""
    carried = {k: getattr(rec, k) for k in DESCRIPTIVE if getattr(rec, k) is not None}
    if from_feed:
        carried.update({k: getattr(rec, k) for k in FEED_ONLY})
    return carried


class CheckpointStore(Protocol):
    """Episode and feed state that every step and process of a deployment shares."""

    def register_episodes(self, records: Iterable[EpisodeRecord], *, from_feed: bool = False) -> list[str]: ...
    def get(self, partition_key: str) -> EpisodeRecord | None: ...
    def require(self, partition_key: str) -> EpisodeRecord: ...
    def update(self, partition_key: str, **fields: object) -> None: ...
    def mark_attempt(self, partition_key: str) -> None: ...
    def mark_downloaded(self, partition_key: str, *, bytes: int, sha256: str) -> None: ...
    def mark_transcribed(self, partition_key: str, *, cost_usd: float | None = None) -> None: ...
    def mark_failed(self, partition_key: str, stage: str, error: str, *, retryable: bool = False) -> None: ...
    # ---- stages ----
    def stage(self, partition_key: str, stage: str) -> StageStatus: ...
    def stages(self, stage: str) -> dict[str, StageStatus]: ...
    def stage_counts(self) -> dict[str, dict[str, int]]: ...
    def mark_stage(self, partition_key: str, stage: str, status: str, *, error: str | None = None,
                   retryable: bool | None = None, code_version: str | None = None) -> None: ...
    def claim(self, partition_key: str, stage: str, owner: str, ttl_s: float, *,
              unless_done_version: str | None = None) -> str | None: ...
    def renew(self, partition_key: str, stage: str, owner: str, ttl_s: float) -> bool: ...
    def release_claims(self, owner: str, reason: str) -> int: ...
    def episodes(self, state: str | None = None, feed_slug: str | None = None,
                 limit: int | None = None) -> list[EpisodeRecord]: ...
    def counts(self) -> dict[str, int]: ...
    def counts_by_feed(self) -> dict[str, dict[str, int]]: ...
    def get_feed(self, slug: str) -> FeedRecord | None: ...
    def upsert_feed(self, rec: FeedRecord) -> None: ...
    def feeds(self) -> list[FeedRecord]: ...
    def close(self) -> None: ...


def _apply(st: StageStatus, status: str, *, error: str | None = None, retryable: bool | None = None,
           code_version: str | None = None) -> None:
    """``st`` moved to ``status`` (shared by the implementations)."""
    t = now()
    if status == RUNNING:
        st.attempts += 1
        st.started_at, st.finished_at = t, None
    elif status in (DONE, FAILED):
        st.finished_at = t
        st.owner = st.lease_until = None
    st.status = status
    st.last_error = error[:2000] if error else None
    st.retryable = retryable if status == FAILED else None
    if code_version is not None or status == DONE:
        st.code_version = code_version if code_version is not None else st.code_version
