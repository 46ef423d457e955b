"""One episode's transcription outcome as a JSON message: what a worker reports and the transcript asset reads.

Every Transcriber (in process, or worker.py under Dagster Pipes) reports a run's episodes in
these messages, so the asset turns either into materializations and failures through one path.
Dagster-free, like the rest of transcribe/.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from podinsight_dagster.errors import StepError, StepSkipped

def transcript_metadata(t: Any) -> dict:
    """What the ``transcript`` asset records for one transcribed episode (plain JSON values)."""
    return {"duration_sec": t.duration, "words": len(t.text.split()), "language": t.language,
            "language_probability": t.language_probability, "realtime_factor": round(t.realtime_factor, 2),
            "wall_sec": t.wall_sec, "model": t.model, "device": t.device, "source": t.source,
            "language_mismatch": t.language_mismatch, "unreliable_reason": t.unreliable_reason,
            "publisher_error": t.publisher_error, "preview": t.text[:300]}


def outcome_message(pk: str, result: Any) -> dict:
    """One episode's outcome: a transcript (or its metadata dict), or the StepError that stopped it."""
    if isinstance(result, StepError):
        return {"partition_key": pk, "ok": False, "error": str(result), "retryable": result.retryable,
                "skipped": isinstance(result, StepSkipped),
                "held_elsewhere": bool(getattr(result, "held_elsewhere", False))}
    return {"partition_key": pk, "ok": True,
            "metadata": result if isinstance(result, dict) else transcript_metadata(result)}


def refusal_message(reason: str) -> dict:
    """The budget refused the whole request: nothing was transcribed."""
    return {"refused": reason}


class Refused(RuntimeError):
    """The worker refused to spend (frozen, or today's cost at the ceiling)."""


def read_outcomes(messages: Iterable[Mapping]) -> dict[str, dict | StepError]:
    """``{partition_key: metadata or StepError}`` from outcome messages; raises Refused on a refusal."""
    outcomes: dict[str, dict | StepError] = {}
    for m in messages:
        if not isinstance(m, Mapping):
            continue
        if "refused" in m:
            raise Refused(str(m["refused"]))
        pk = m.get("partition_key")
        if not isinstance(pk, str):
            continue
        message, retryable = str(m.get("error") or f"{pk}: failed"), bool(m.get("retryable"))
        outcomes[pk] = (dict(m.get("metadata") or {}) if m.get("ok")
                        else StepSkipped(message, retryable, held_elsewhere=bool(m.get("held_elsewhere")))
                        if m.get("skipped") else StepError(message, retryable))
    return outcomes
