"""Which episodes ``podrun transcribe`` works on, read from the checkpoint store's states and stages."""

from __future__ import annotations


def select_for_transcription(checkpoints, code_version: str, *, retry_failed: bool = False, stale: bool = False):
    """Episodes to transcribe: downloaded ones whose transcribe stage is pending, or failed and retryable
    (any failure with ``retry_failed``); with ``stale``, those done at another code version. Never one that
    someone holds (a live lease)."""
    from podinsight_dagster.store.checkpoints import DONE, DOWNLOADED, FAILED, PENDING, TRANSCRIBED

    stages = checkpoints.stages("transcribe")
    out = []
    for rec in checkpoints.episodes():
        if rec.state not in (DOWNLOADED, TRANSCRIBED):
            continue
        st = stages.get(rec.partition_key)
        if st is not None and st.held():
            continue
        if stale:
            if st is not None and st.status == DONE and st.code_version != code_version:
                out.append(rec)
            continue
        status = st.status if st is not None else (DONE if rec.state == TRANSCRIBED else PENDING)
        if rec.state == TRANSCRIBED and status == DONE:
            continue
        if status in (PENDING, "running") or (status == FAILED and (st.retryable or retry_failed)):
            out.append(rec)
        elif status == DONE and rec.state == DOWNLOADED:
            out.append(rec)  # transcribed, but its segments or KPIs are not written yet
    return out
