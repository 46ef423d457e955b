"""Phase 2 steps (run-book §4): raw audio -> transcript -> segments, subtitles -> KPIs.

transcribe    backfill.py --mode transcribe: raw audio (or the publisher's transcript) -> transcript.json
segments      transcript -> segments.json (JSON Lines, Athena shape) + VTT + SRT
kpis          transcript -> kpis.json; raw meta.json gets its transcript_key

``transcribe_episodes`` handles all episodes of a run in one call: publisher
transcripts first (``podcast:transcript`` links, per the transcript source
setting), then one ``iter_transcribe`` over the rest, so the model loads once,
audio decoding overlaps inference and short episodes share batches. Each
transcript.json is written as soon as its episode is done, so a run killed
half-way keeps what it finished.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Callable

from podinsight_dagster.store import layout
from podinsight_dagster.store.keys import EpisodeKey
from podinsight_dagster.store.objects import ConcurrentUpdate
from podinsight_dagster.costs.budget import SpendEntry
from podinsight_dagster.costs.kpis import compute_kpis
from podinsight_dagster.errors import StepError, StepSkipped
from podinsight_dagster.store.checkpoints import DONE, TRANSCRIBE
from podinsight_dagster.store.claims import Claims, default_owner, skip_for
from podinsight_dagster.transcribe.publisher import PublisherTranscriptError, fetch_publisher_transcript, links_from_json
from podinsight_dagster.transcribe.podcast20 import to_podcast_srt, to_transcript_json
from podinsight_dagster.transcribe.subtitles import build_cues, to_srt, to_vtt
from podinsight_dagster.transcribe.text import agreement
from podinsight_dagster.transcribe.options import Transcript, TranscriptionError, transcript_code_version
from podinsight_dagster.transcribe.transcriber import SpeechToText

if TYPE_CHECKING:
    from podinsight_dagster.services import Services

def asr_transcript_key(ek: EpisodeKey) -> str:
    """Where source "both" keeps the ASR transcript beside the publisher's transcript.json."""
    return f"{ek}/transcripts/transcript.asr.json"


# ---------------------------------------------------------------------------
@dataclass
class _Job:
    pk: str
    ek: EpisodeKey
    meta: dict
    links: list
    run_id: str | None = None        # stamped on the transcript.json it writes, with the code version:
    code_version: str | None = None  # a later attempt adopts a transcript its run wrote but never recorded


def _load_job(services: Services, pk: str) -> _Job:
    ek = EpisodeKey.parse(pk)
    try:
        meta = services.raw.get_json(layout.meta_key(ek))
    except FileNotFoundError as exc:
        raise StepError(f"{pk}: no raw audio yet (materialize raw_audio first)") from exc
    rec = services.checkpoints.get(pk)
    return _Job(pk, ek, meta, links_from_json(rec.transcripts_json if rec else None))


def _check_audio(services: Services, job: _Job) -> None:
    """The audio object is there and as long as meta.json recorded (a cheap truncation check)."""
    key, expected = job.meta["audio_key"], job.meta.get("bytes")
    try:
        actual = services.raw.size(key)
    except FileNotFoundError as exc:
        raise StepError(f"{job.pk}: audio {key} is missing (materialize raw_audio again)") from exc
    if expected is not None and actual != expected:
        msg = (f"audio {key} is {actual} bytes but meta.json records {expected}: "
               "truncated or replaced (materialize raw_audio again)")
        raise StepError(f"{job.pk}: {msg}")


def decoded_key(services: Services, audio_key: str, size: int) -> str:
    """The key under which an episode's decoded samples are kept between steps (audio.DECODED)."""
    return f"{services.raw.uri(audio_key)}#{size}"


class _AudioOpener:
    """Opens an episode's audio from the raw store when the transcriber's prefetch thread gets to it.

    ``decoded_key``: when diarization will read the audio again, the transcriber keeps the samples
    it decoded under this key (``audio.DECODED``), so the speakers step does not decode them twice.
    """

    def __init__(self, services: Services, key: str, size: int | None = None):
        self.services, self.key = services, key
        self.decoded_key = (decoded_key(services, key, size)
                            if size is not None and services.settings.diarization != "off" else None)

    def __call__(self):
        return self.services.raw.local_copy(self.key)

    def __str__(self) -> str:
        return self.services.raw.uri(self.key)


def _doc(job: _Job, t: Transcript) -> dict:
    return {"partition_key": job.pk, "feed_slug": job.ek.feed_slug, "guid": job.meta.get("guid"),
            "guid_key": job.ek.guid_key, "title": job.meta.get("title"), "audio_key": job.meta["audio_key"],
            **t.to_dict(), "run_id": job.run_id, "code_version": job.code_version, "created_at": time.time()}


def _spend(services: Services, pk: str, t: Transcript, run_id: str | None) -> SpendEntry:
    """The spend line of one transcription: its compute time at the device's price."""
    return SpendEntry(pk, round(t.wall_sec * services.prices.per_second(t.device), 6), compute_sec=t.wall_sec,
                      device=t.device, model=t.model, run_id=run_id,
                      audio_sec=t.duration if t.source == "asr" else 0.0)


def _adopt(services: Services, job: _Job) -> Transcript | None:
    """The transcript an earlier attempt wrote at this code version but never recorded as done, or None.

    That attempt's run died (or its bookkeeping failed) between writing transcript.json and marking
    the stage done, maybe before its spend line was written: the work is kept, not done again, and
    paid exactly once, in the name of the run that did it (its line is added only if missing).
    """
    try:
        doc = services.stage.get_json(layout.transcript_key(job.ek))
    except FileNotFoundError:
        return None
    made_by = doc.get("run_id")
    if not made_by or doc.get("code_version") != job.code_version:
        return None
    t = Transcript.from_dict(doc)
    since = float(doc.get("created_at") or 0.0) - 60.0
    if not any(e.partition_key == job.pk and e.run_id == made_by for e in services.budget.ledger.entries(since)):
        services.budget.record_spend(_spend(services, job.pk, t, made_by))
    return t


def _try_publisher(services: Services, job: _Job) -> Transcript | str:
    try:
        return fetch_publisher_transcript(services.http, job.links, duration=job.meta.get("duration_sec"))
    except PublisherTranscriptError as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - a bad transcript must never cost the episode its ASR
        return f"publisher transcript failed: {type(exc).__name__}: {exc}"


def transcribe_episodes(services: Services, keys: list[str], transcriber: SpeechToText | None = None, *,
                        source: str | None = None,
                        on_result: Callable[[str, Transcript | StepError], None] | None = None,
                        owner: str | None = None, run_id: str | None = None, force: bool = False,
                        lease_s: float | None = None, ahead: bool = False) -> dict[str, Transcript | StepError]:
    """Transcribe every episode of ``keys``; writes each transcript.json; one failure never stops the rest.

    ``transcriber`` defaults to ``services.transcriber`` (asked only if some episode needs
    ASR). ``source`` overrides the transcriber's ``options.transcript_source``:
    prefer_publisher (publisher transcript when there is one, else ASR), always_asr, or both
    (transcript.json from the publisher, transcript.asr.json from ASR, their agreement,
    1 - WER, in ``publisher_asr_agreement``). A publisher transcript that cannot be fetched or
    parsed falls back to ASR, with the reason in ``publisher_error``.

    Each episode is claimed first (a lease on its transcribe stage for ``owner``, conditional on
    the episode being downloaded): one held by someone else, or already transcribed at this code
    version (unless ``force``), is skipped (``StepSkipped``), never transcribed twice at once.
    Every transcription that ran appends a spend line (with ``run_id``) as soon as it is done. A
    transcript.json that an earlier run wrote at this code version but never recorded as done (killed
    before its spend line or its stage status) is adopted: not transcribed again, its line added if missing.
    ``ahead``: this process runs the run's speakers and chapters steps next; each ASR transcript's voice and
    sentence encoding starts in the background as soon as it is stored (transcribe/ahead.py).
    """
    transcriber = transcriber or services.transcriber
    if not hasattr(transcriber, "transcribe"):  # a Pipes transcriber: its worker transcribes, not this process
        raise TypeError(f"PODINSIGHT_TRANSCRIBE_VIA={transcriber.via}: episodes are transcribed by the worker "
                        "(transcriber.transcribe_run), not in this process")
    mode = source or transcriber.options.transcript_source
    version = transcript_code_version(replace(transcriber.options, transcript_source=mode))
    owner = owner or run_id or default_owner()
    # The claim protocol (store/claims.py), shared with the download step; the lease is PODINSIGHT_CLAIM_LEASE_SEC.
    with Claims(services.checkpoints, TRANSCRIBE, owner, lease_s or services.settings.claim_lease_sec) as leases:
        return _transcribe(services, keys, transcriber, mode, on_result, owner, run_id,
                           None if force else version, version, leases, ahead)


def _transcribe(services, keys, transcriber, mode, on_result, owner, run_id, unless_version, version,
                leases: Claims, ahead: bool = False) -> dict[str, Transcript | StepError]:
    results: dict[str, Transcript | StepError] = {}

    def done(pk: str, result: Transcript | StepError, paid: bool = False) -> None:
        results[pk] = result
        if isinstance(result, Transcript):
            if not paid:  # every transcription that ran is paid for, whatever happens to the episode next
                services.budget.record_spend(_spend(services, pk, result, run_id))
            services.checkpoints.mark_stage(pk, TRANSCRIBE, DONE, code_version=version)
        elif not isinstance(result, StepSkipped) and leases.holds(pk):
            services.checkpoints.mark_failed(pk, TRANSCRIBE, str(result), retryable=result.retryable)
        leases.release(pk)
        if on_result is not None:
            on_result(pk, result)

    jobs: dict[str, _Job] = {}
    for pk in keys:
        why = leases.claim(pk, unless_done_version=unless_version)
        if why is not None:
            done(pk, skip_for(pk, why)
                 or StepError(f"{pk}: no raw audio yet, not transcribed: {why} (materialize raw_audio first)"))
            continue
        try:
            jobs[pk] = _load_job(services, pk)
        except StepError as exc:
            done(pk, exc)
            continue
        jobs[pk].run_id, jobs[pk].code_version = run_id, version
        if unless_version is not None:  # not forced: a transcript already made and paid for is kept
            adopted = _adopt(services, jobs[pk])
            if adopted is not None:
                del jobs[pk]
                done(pk, adopted, paid=True)

    publisher: dict[str, Transcript] = {}
    publisher_errors: dict[str, str] = {}
    if mode != "always_asr":
        todo = [job for job in jobs.values() if job.links]
        if todo:
            with ThreadPoolExecutor(max_workers=min(8, len(todo)), thread_name_prefix="publisher") as pool:
                for job, got in zip(todo, pool.map(partial(_try_publisher, services), todo)):
                    if isinstance(got, Transcript):
                        publisher[job.pk] = got
                    else:
                        publisher_errors[job.pk] = got
    for pk, t in publisher.items():
        if mode == "prefer_publisher":
            services.stage.put_json(layout.transcript_key(jobs[pk].ek), _doc(jobs[pk], t))
            done(pk, t)

    asr: list[_Job] = []
    for pk, job in jobs.items():
        if pk in results:
            continue
        try:
            _check_audio(services, job)
        except StepError as exc:
            if pk in publisher:  # source "both": the publisher's transcript stands on its own
                done(pk, _store_publisher_only(services, job, publisher[pk], str(exc)))
            else:
                done(pk, exc)
            continue
        asr.append(job)
    if not asr:
        return results

    sources = [_AudioOpener(services, job.meta["audio_key"], job.meta.get("bytes")) for job in asr]
    try:
        for index, out in transcriber.transcribe(sources):
            job = asr[index]
            try:
                stored = _store_asr(services, job, out, mode, publisher.get(job.pk), publisher_errors.get(job.pk))
                if ahead:
                    _start_ahead(services, job, stored)
                done(job.pk, stored)
            except Exception as exc:  # noqa: BLE001 - e.g. a storage error writing one episode
                done(job.pk, StepError(f"{job.pk}: storing the transcript failed: {type(exc).__name__}: {exc}"))
    except Exception as exc:  # noqa: BLE001 - the batch broke down (a bug, a dead GPU): fail what is left
        for job in asr:
            if job.pk not in results:
                msg = f"transcription stopped before this episode finished: {type(exc).__name__}: {exc}"
                done(job.pk, StepError(f"{job.pk}: {msg}", retryable=True))
    return results


def _start_ahead(services: Services, job: _Job, t: Transcript | StepError) -> None:
    """Start the speakers and chapters steps' encoders on this episode's transcript while the model goes on."""
    if not isinstance(t, Transcript) or t.source != "asr" or not t.segments:
        return
    # Only ever a head start: the later steps compute whatever is missing themselves.
    from podinsight_dagster.chapters.steps import start_sentences_ahead
    from podinsight_dagster.transcribe.ahead import AHEAD
    from podinsight_dagster.transcribe.audio import DECODED

    size = job.meta.get("bytes")
    if services.settings.diarization != "off" and size is not None:
        key = decoded_key(services, job.meta["audio_key"], size)  # where the prefetch thread kept the samples
        AHEAD.submit_voices(key, [(s.start, s.end) for s in t.segments], lambda: DECODED.peek(key))
    start_sentences_ahead(t)


def _store_publisher_only(services: Services, job: _Job, pub: Transcript, asr_error: str) -> Transcript:
    pub.asr_error = asr_error
    services.stage.put_json(layout.transcript_key(job.ek), _doc(job, pub))
    return pub


def _store_asr(services: Services, job: _Job, out: Transcript | TranscriptionError, mode: str,
               pub: Transcript | None, pub_error: str | None) -> Transcript | StepError:
    if isinstance(out, TranscriptionError):
        if pub is not None:  # source "both": the publisher's transcript stands on its own
            return _store_publisher_only(services, job, pub, str(out))
        return StepError(f"{job.pk}: {out}")
    out.publisher_error = pub_error
    if pub is not None and mode == "both":
        score = round(agreement(pub.text, out.text), 4)
        out.publisher_asr_agreement = pub.publisher_asr_agreement = score
        # The episode's compute (and so its cost KPI) is the fetch plus the ASR run.
        pub.wall_sec = round(pub.wall_sec + out.wall_sec, 3)
        pub.device = out.device
        services.stage.put_json(asr_transcript_key(job.ek), _doc(job, out))
        services.stage.put_json(layout.transcript_key(job.ek), _doc(job, pub))
        return pub
    services.stage.put_json(layout.transcript_key(job.ek), _doc(job, out))
    return out


def transcribe_episode(services: Services, pk: str, transcriber: SpeechToText | None = None) -> Transcript:
    """One episode (the same path as ``transcribe_episodes``); raises StepError."""
    result = transcribe_episodes(services, [pk], transcriber)[pk]
    if isinstance(result, StepError):
        raise result
    return result


def load_transcript(services: Services, pk: str) -> Transcript:
    ek = EpisodeKey.parse(pk)
    try:
        return Transcript.from_dict(services.stage.get_json(layout.transcript_key(ek)))
    except FileNotFoundError as exc:
        raise StepError(f"{pk}: no transcript yet (materialize transcript first)") from exc


def segments_rows(transcript: Transcript) -> list[dict]:
    # Athena table shape (run-book Appendix B): speaker is an int. Named speakers (diarization's labels or a
    # publisher transcript's) are numbered in order of appearance, the name kept beside; 0 when unknown.
    speakers: dict[str, int] = {}
    rows = []
    for s in transcript.segments:
        row = {"text": s.text, "start_sec": s.start, "end_sec": s.end, "speaker": 0,
               "avg_logprob": s.avg_logprob, "no_speech_prob": s.no_speech_prob}
        if s.speaker:
            row["speaker"] = speakers.setdefault(s.speaker, len(speakers))
            row["speaker_name"] = s.speaker
        if s.overlap:   # overlapped speech (speakers/overlap.py): every voice heard, its own first
            row["overlap"] = True
            row["speakers"] = list(s.speakers or [])
            if s.recovered:
                row["recovered"] = True
        rows.append(row)
    return rows


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
    # The Podcasting 2.0 forms a publisher links with <podcast:transcript> (podrun publish)
    services.stage.put_bytes(layout.podcast_json_key(ek),
                             json.dumps(to_transcript_json(transcript.segments), ensure_ascii=False).encode(),
                             content_type="application/json")
    services.stage.put_bytes(layout.podcast_srt_key(ek), to_podcast_srt(transcript.segments).encode(),
                             content_type="application/x-subrip")
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
    # Patch raw meta only now that every stage file is whole (run-book step 2.7). A compare-and-swap:
    # a re-download rewriting meta.json meanwhile is re-read, never overwritten with stale fields.
    for attempt in range(5):
        meta, version = services.raw.get_json_versioned(layout.meta_key(ek))
        meta["transcript_key"] = layout.transcript_key(ek)
        try:
            services.raw.put_json_if(layout.meta_key(ek), meta, version)
            break
        except ConcurrentUpdate:
            if attempt == 4:
                raise StepError(f"{pk}: meta.json kept changing while its transcript_key was patched",
                                retryable=True) from None
    services.checkpoints.mark_transcribed(pk, cost_usd=kpis["cost_usd"])
    return kpis
