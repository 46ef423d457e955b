"""Phase 2 steps (run-book §4): raw audio -> transcript -> segments, subtitles -> KPIs.

transcribe    backfill.py --mode transcribe: raw audio -> transcript.json
segments      transcript -> segments.json (JSON Lines, Athena shape) + VTT + SRT
kpis          transcript -> kpis.json; raw meta.json gets its transcript_key
"""

from __future__ import annotations

import json

from . import layout
from .keys import EpisodeKey
from .kpis import compute_kpis
from .pipeline import Services, StepError
from .subtitles import build_cues, to_srt, to_vtt
from .transcribe import Engine, Transcript, TranscriptionError


# ---------------------------------------------------------------------------
def transcribe_episode(services: Services, pk: str, engine: Engine) -> Transcript:
    ek = EpisodeKey.parse(pk)
    try:
        meta = services.raw.get_json(layout.meta_key(ek))
    except FileNotFoundError as exc:
        raise StepError(f"{pk}: no raw audio yet (materialize raw_audio first)") from exc
    try:
        with services.raw.local_copy(meta["audio_key"]) as path:
            transcript = engine.transcribe(path)
    except TranscriptionError as exc:
        services.checkpoints.mark_failed(pk, "transcribe", str(exc))
        raise StepError(f"{pk}: {exc}") from exc
    doc = {"partition_key": pk, "feed_slug": ek.feed_slug, "guid": meta.get("guid"), "guid_key": ek.guid_key,
           "title": meta.get("title"), "audio_key": meta["audio_key"], **transcript.to_dict()}
    services.stage.put_json(layout.transcript_key(ek), doc)
    return transcript


def load_transcript(services: Services, pk: str) -> Transcript:
    ek = EpisodeKey.parse(pk)
    try:
        return Transcript.from_dict(services.stage.get_json(layout.transcript_key(ek)))
    except FileNotFoundError as exc:
        raise StepError(f"{pk}: no transcript yet (materialize transcript first)") from exc


def segments_rows(transcript: Transcript) -> list[dict]:
    # Athena table shape (run-book Appendix B). No diarization yet: speaker is 0 for all.
    return [{"text": s.text, "start_sec": s.start, "end_sec": s.end, "speaker": 0,
             "avg_logprob": s.avg_logprob, "no_speech_prob": s.no_speech_prob} for s in transcript.segments]


def write_segments(services: Services, pk: str) -> dict:
    ek = EpisodeKey.parse(pk)
    transcript = load_transcript(services, pk)
    rows = segments_rows(transcript)
    services.stage.put_bytes(layout.segments_key(ek),
                             "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode(),
                             content_type="application/x-ndjson")
    cues = build_cues(transcript.segments)
    services.stage.put_bytes(layout.vtt_key(ek), to_vtt(cues).encode(), content_type="text/vtt")
    services.stage.put_bytes(layout.srt_key(ek), to_srt(cues).encode(), content_type="application/x-subrip")
    return {"segments": len(rows), "cues": len(cues)}


def write_kpis(services: Services, pk: str) -> dict:
    ek = EpisodeKey.parse(pk)
    transcript = load_transcript(services, pk)
    kpis = compute_kpis(transcript, services.prices)
    services.stage.put_json(layout.kpis_key(ek), {"partition_key": pk, **kpis})
    missing = [k for k in (layout.transcript_key(ek), layout.segments_key(ek), layout.vtt_key(ek),
                           layout.srt_key(ek), layout.kpis_key(ek)) if not services.stage.exists(k)]
    if missing:
        raise StepError(f"{pk}: stage files missing, meta.json not patched: {missing}")
    # Patch raw meta only now that every stage file is whole (run-book step 2.7).
    meta = services.raw.get_json(layout.meta_key(ek))
    meta["transcript_key"] = layout.transcript_key(ek)
    services.raw.put_json(layout.meta_key(ek), meta)
    services.checkpoints.mark_transcribed(pk, cost_usd=kpis["cost_usd"])
    return kpis


