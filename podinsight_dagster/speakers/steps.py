"""The diarization step: transcript + audio -> speakers.json, speaker labels in transcript.json, the feed's voice prints."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from podinsight_dagster.errors import StepError
from podinsight_dagster.speakers.diarize import VERSION, diarize, embed_segments
from podinsight_dagster.speakers.encoder import load_encoder
from podinsight_dagster.speakers.overlap import METHOD as OVERLAP_METHOD, Overlap, clip_span, detect_overlaps, \
    new_word_runs, segment_and_screen_voices
from podinsight_dagster.speakers.names import (SpeakerName, VoicePrint, guest_from_show_notes, name_speakers,
                                               persons_from_json, speakers_listed, update_prints)
from podinsight_dagster.store import layout
from podinsight_dagster.store.keys import EpisodeKey
from podinsight_dagster.store.objects import ConcurrentUpdate
from podinsight_dagster.transcribe.options import Segment, TranscribeOptions, Transcript, TranscriptionError

if TYPE_CHECKING:
    from podinsight_dagster.services import Services

METHODS = ("voice", "off")
MIN_MARKED_SEC = 0.2     # a segment is marked overlapped when this much of it lies in an overlapped region
# A second hearing's run of new words is kept only when the model was this sure of them on average: under
# talking-over the model also guesses (bench/overlap_bench.py: the wrong runs it added had mean word
# probability 0.23; kept words are model output, not ours to invent).
RECOVERED_MIN_PROBABILITY = 0.5


def _load_prints(services: Services, feed_slug: str) -> tuple[list[VoicePrint], object]:
    try:
        doc, version = services.stage.get_json_versioned(layout.voiceprints_key(feed_slug))
    except FileNotFoundError:
        return [], None
    return [VoicePrint(**p) for p in doc.get("prints", [])], version


def _save_prints(services: Services, feed_slug: str, centroids, names: list[SpeakerName], talk: list[float]) -> int:
    """Fold this episode's named voices into the feed's prints (compare-and-swap, re-read when another run won)."""
    for _ in range(5):
        prints, version = _load_prints(services, feed_slug)
        new = update_prints(prints, centroids, names, talk)
        body = {"method": VERSION, "prints": [asdict(p) for p in new]}
        key = layout.voiceprints_key(feed_slug)
        try:
            if version is None:
                if not services.stage.put_bytes_if_absent(key, json.dumps(body).encode(), "application/json"):
                    continue  # another run created them first: fold into theirs
            else:
                services.stage.put_json_if(key, body, str(version))
            return len(new)
        except ConcurrentUpdate:
            continue
    raise StepError(f"{feed_slug}: voice prints kept changing while this episode's were added", retryable=True)


def _decode(services: Services, audio_key: str):
    from podinsight_dagster.transcribe.audio import DECODED, decode
    from podinsight_dagster.transcribe.steps import decoded_key

    # The transcript step of this process may have kept the samples it decoded (same object, same size).
    kept = DECODED.take(decoded_key(services, audio_key, services.raw.size(audio_key)))
    if kept is not None:
        return kept
    with services.raw.local_copy(audio_key) as path:
        return decode(path)


@dataclass
class Prepared:
    """The part of an episode's diarization that needs no shared state: its transcript, audio and voice embeddings.

    ``prepare_episode`` may run for several episodes at once (threads: the ONNX encoder runs one
    core per call); ``diarize_episode`` then does the rest in episode order, so voice prints are
    read and folded in the same order as when episodes are diarized one by one.
    """
    pk: str
    doc: dict
    transcript: Transcript
    emb: np.ndarray | None = None       # (segments, dim), when the voice path applies
    embed_sec: float = 0.0
    audio_unread: str | None = None     # why a publisher-named transcript's audio could not be counted
    audio: np.ndarray | None = None     # kept for the overlap test and the second hearing of overlapped stretches
    feats: np.ndarray | None = None     # the voice encoder's filterbank of ``audio``, when made ahead
    screen: np.ndarray | None = None    # the overlap test's screening voices
    ahead: bool = False                 # the voices were made while the transcript step went on (transcribe/ahead.py)


def _voice_path(services: Services, transcript: Transcript) -> bool:
    # A publisher transcript that names its speakers keeps them, but its voices are still counted from the
    # audio so that the speaker_count check can say when the two disagree.
    return services.settings.diarization != "off" and bool(transcript.segments)


def _publisher_named(transcript: Transcript) -> bool:
    return transcript.source == "publisher" and any(s.speaker for s in transcript.segments)


def prepare_episode(services: Services, pk: str) -> Prepared:
    """Read the transcript and, when voices are to be labelled or counted, decode the audio and embed every segment."""
    ek = EpisodeKey.parse(pk)
    try:
        doc = services.stage.get_json(layout.transcript_key(ek))
    except FileNotFoundError as exc:
        raise StepError(f"{pk}: no transcript yet (materialize transcript first)") from exc
    transcript = Transcript.from_dict(doc)
    prepared = Prepared(pk, doc, transcript)
    if _voice_path(services, transcript):
        try:
            meta = services.raw.get_json(layout.meta_key(ek))
            audio = _decode(services, meta["audio_key"])
        except (FileNotFoundError, KeyError, TranscriptionError) as exc:
            if _publisher_named(transcript):
                # The publisher's names stand; there is just no audio to count them against (as before issue 18).
                prepared.audio_unread = str(exc)
                return prepared
            if isinstance(exc, TranscriptionError):
                raise
            raise StepError(f"{pk}: no raw audio to diarize (materialize raw_audio again)") from exc
        from podinsight_dagster.transcribe.ahead import AHEAD
        from podinsight_dagster.transcribe.steps import decoded_key

        # Made while the transcript step transcribed the next episodes, from this very transcript, when it could.
        ahead = AHEAD.voices(decoded_key(services, meta["audio_key"], services.raw.size(meta["audio_key"])),
                             [(s.start, s.end) for s in transcript.segments])
        if ahead is not None:
            prepared.emb, prepared.embed_sec = ahead.emb, ahead.embed_sec
            prepared.feats, prepared.screen, prepared.ahead = ahead.feats, ahead.screen, True
        elif _publisher_named(transcript):  # voices counted only: no overlap test, so no screening voices
            started = time.perf_counter()
            prepared.emb = embed_segments(transcript, audio)
            prepared.embed_sec = time.perf_counter() - started
        else:
            encoder = load_encoder()
            started = time.perf_counter()
            prepared.feats = encoder.log_mel(audio)
            prepared.emb, prepared.screen = segment_and_screen_voices(
                encoder, audio, [(s.start, s.end) for s in transcript.segments], prepared.feats)
            prepared.embed_sec = time.perf_counter() - started
        if not _publisher_named(transcript):
            prepared.audio = audio
    return prepared


def diarize_episode(services: Services, pk: str, prepared: Prepared | None = None) -> dict:
    """Label every segment (and word) of the episode's transcript with a speaker; returns speakers.json.

    The number of speakers comes from the audio (estimated from the voices), or ``Settings.speakers``
    when set. The feed's hosts and guests (``podcast:person``, plus the guest the show notes name)
    are an upper bound when the list names a guest (a list of hosts alone is usually the channel's
    and says nothing of guests), never a quota. Names come only with evidence
    (``names.name_speakers``), recorded per speaker; only names with strong evidence teach the
    feed's voice prints. A publisher transcript that names its speakers keeps them; its voices are
    counted all the same, and a different count is a ``speaker_issue``. ``prepared``: this
    episode's ``prepare_episode`` (done now when not given). Raises StepError.
    """
    ek = EpisodeKey.parse(pk)
    prepared = prepared or prepare_episode(services, pk)
    doc, transcript = prepared.doc, prepared.transcript
    rec = services.checkpoints.get(pk)
    persons = persons_from_json(rec.persons_json if rec else None)
    listed = speakers_listed(persons)
    # A guest the feed does not list but the show notes name ("with guest Jane Doe") is one more candidate name.
    notes_guest = None
    if rec is not None and not any(p.role == "guest" for p in persons):
        notes_guest = guest_from_show_notes(rec.description)
        if notes_guest in {p.name for p in persons}:
            notes_guest = None
    expected = listed + 1 if notes_guest and listed else listed
    settings = services.settings
    out = {"partition_key": pk, "method": VERSION, "persons_listed": listed,
           "persons": [asdict(p) for p in persons], "show_notes_guest": notes_guest,
           "audio_sec": round(transcript.duration, 3)}

    if _publisher_named(transcript):
        names: dict[str, float] = {}
        for s in transcript.segments:
            if s.speaker:
                names[s.speaker] = names.get(s.speaker, 0.0) + max(s.end - s.start, 0.0)
        out.update(method="publisher", num_speakers=len(names), count_source="publisher", wall_sec=0.0,
                   speakers=[{"id": i, "name": n, "role": None, "source": "publisher",
                              "evidence": [{"source": "publisher", "detail": "the publisher's transcript"}],
                              "talk_sec": round(t, 3)} for i, (n, t) in enumerate(names.items())])
        if prepared.emb is not None:
            heard = diarize(transcript, None, emb=prepared.emb, embed_sec=prepared.embed_sec)
            out.update(audio_num_speakers=heard.num_speakers, wall_sec=heard.wall_sec)
        elif prepared.audio_unread:
            out["audio_unread"] = prepared.audio_unread
        return _finish(services, pk, ek, out, doc=None, listed=expected)
    if settings.diarization == "off" or not transcript.segments:
        out.update(method="off" if transcript.segments else VERSION, num_speakers=0, count_source="none",
                   wall_sec=0.0, speakers=[])
        return _finish(services, pk, ek, out, doc=None, listed=expected)

    forced = settings.speakers or None
    # Upper bound: only a list that names the episode's guests (or the show notes' guest) bounds its voices.
    bound = expected if expected and (notes_guest or any(p.role == "guest" for p in persons)) else None
    result = diarize(transcript, None, num_speakers=forced, emb=prepared.emb, embed_sec=prepared.embed_sec,
                     max_speakers=None if forced else bound)
    out.update(count_source="setting" if forced else "estimated", count_bound=None if forced else bound)
    prints, _ = _load_prints(services, ek.feed_slug)
    names = name_speakers(result.centroids, result.labels, persons, prints, notes_guest,
                          texts=[s.text for s in transcript.segments], starts=[s.start for s in transcript.segments],
                          show_words=ek.feed_slug.split("-"))
    speakers = [{"id": c, "name": n.name, "role": n.role, "source": n.source,
                 "evidence": [asdict(e) for e in n.evidence], "talk_sec": result.talk_sec[c]}
                for c, n in enumerate(names)]
    for seg, label in zip(doc["segments"], result.labels):
        seg["speaker"] = names[label].name
        for w in seg.get("words") or []:
            w["speaker"] = names[label].name
    doc["speakers"] = speakers
    labels = list(result.labels)
    overlap = mark_overlaps(prepared.audio, doc, labels, result.centroids, [n.name for n in names],
                            services.transcriber.options, feats=prepared.feats, screen=prepared.screen)
    out.update(num_speakers=result.num_speakers, wall_sec=round(result.wall_sec + overlap["wall_sec"], 3),
               speakers=speakers, segment_speakers=labels, overlap=overlap)
    if any(n.teaches_prints() for n in names):
        out["feed_voiceprints"] = _save_prints(services, ek.feed_slug, result.centroids, names, result.talk_sec)
    return _finish(services, pk, ek, out, doc=doc, listed=expected)


def mark_overlaps(audio: np.ndarray | None, doc: dict, labels: list[int], centroids: np.ndarray, names: list[str],
                  options: TranscribeOptions, *, feats: np.ndarray | None = None,
                  screen: np.ndarray | None = None) -> dict:
    """Mark overlapped speech on ``doc``'s segments and add the words a second hearing finds (speakers/overlap.py).

    Segments touching an overlapped region get ``overlap`` and ``speakers`` (their own first). Each region is
    heard again (without VAD, the clip of the segments it touches); runs of words the first pass does not
    have become segments of their own (``recovered``), given to the voice they came from: the other voice of
    the region where they sound over a segment of the first pass, else the nearer of the two voices.
    ``labels`` (one per segment) grows with them; ``options`` say which model hears (the transcript step's, loaded
    only when a region is found); ``feats`` and ``screen``: the encoder's filterbank and the screening voices when
    made ahead (``detect_overlaps``). Returns speakers.json's ``overlap`` part.
    """
    started = time.perf_counter()
    report = {"method": OVERLAP_METHOD, "regions": [], "overlap_sec": 0.0, "recovered_words": 0, "windows": 0}
    segs = doc["segments"]
    if audio is None or len(names) < 2:
        return {**report, "wall_sec": 0.0}
    encoder = load_encoder()
    spans = [(s["start"], s["end"]) for s in segs]
    regions, report["windows"] = detect_overlaps(encoder, audio, spans, centroids, feats, screen)
    for seg, label in zip(segs, labels):
        heard = [c for r in regions if min(seg["end"], r.end) - max(seg["start"], r.start) >= MIN_MARKED_SEC
                 for c in r.speakers]
        if heard:
            seg["overlap"] = True
            seg["speakers"] = list(dict.fromkeys([names[label]] + [names[c] for c in heard]))
    added: list[tuple[dict, int]] = []
    if regions:
        from podinsight_dagster.transcribe.engine import load_engine
        from podinsight_dagster.transcribe.regions import transcribe_clip

        try:
            engine = load_engine(options)
        except (LookupError, OSError, RuntimeError) as exc:
            # The marks stand; the words under them are not looked for, and speakers.json says why.
            report["not_heard_again"] = f"the model {options.model} could not be loaded: {exc}"
            regions_heard: list[Overlap] = []
        else:
            regions_heard = regions
        first = [w for seg in segs for w in _timed_words(seg)]
        language = doc.get("language") or "en"
        for r in regions_heard:
            start, end = clip_span(r, spans)
            heard_segs = transcribe_clip(engine, audio, start, end, language)
            heard = [(w, hs) for hs in heard_segs for w in hs.words]
            for run in new_word_runs(first, [(w.start, w.end, w.word) for w, _ in heard], r):
                words = [heard[i][0] for i in run]
                if sum(w.probability for w in words) / len(words) < RECOVERED_MIN_PROBABILITY:
                    report["unsure_runs"] = report.get("unsure_runs", 0) + 1
                    continue
                source = heard[run[0]][1]
                who = _voice_of(words[0].start, words[-1].end, r, spans, labels, centroids, encoder, audio)
                other = r.speakers[1] if who == r.speakers[0] else r.speakers[0]
                for w in words:
                    w.speaker = names[who]
                seg = Segment(words[0].start, words[-1].end, "".join(w.word for w in words).strip(), source.avg_logprob,
                              source.no_speech_prob, source.compression_ratio, words, names[who], overlap=True,
                              speakers=[names[who], names[other]], recovered=True)
                added.append((asdict(seg), who))
                first += [(w.start, w.end, w.word) for w in words]
    if added:
        merged = sorted(list(zip(segs, labels)) + added, key=lambda pair: pair[0]["start"])
        segs[:] = [seg for seg, _ in merged]
        labels[:] = [label for _, label in merged]
        doc["text"] = " ".join(s["text"].strip() for s in segs)
    report.update(regions=[{"start": r.start, "end": r.end, "speakers": [names[c] for c in r.speakers]}
                           for r in regions],
                  overlap_sec=round(sum(r.duration for r in regions), 3),
                  recovered_words=sum(len(a["words"]) for a, _ in added),
                  wall_sec=round(time.perf_counter() - started, 3))
    return report


def _timed_words(seg: dict) -> list[tuple[float, float, str]]:
    """A segment's words with times: the aligner's, else its text spread evenly over it (no word timings)."""
    if seg.get("words"):
        return [(w["start"], w["end"], w["word"]) for w in seg["words"]]
    words = seg["text"].split()
    step = (seg["end"] - seg["start"]) / max(len(words), 1)
    return [(seg["start"] + i * step, seg["start"] + (i + 1) * step, w) for i, w in enumerate(words)]


def _voice_of(start: float, end: float, region: Overlap, spans, labels, centroids, encoder, audio) -> int:
    """Whose words these are: over a first-pass segment of one of the region's voices, the other; else by voice."""
    inside = min(end, region.end) - max(start, region.start)
    if inside >= (end - start) / 2:
        mid = (start + end) / 2
        under = [lab for (s, e), lab in zip(spans, labels) if s <= mid <= e and lab in region.speakers]
        if under:
            return region.speakers[1] if under[0] == region.speakers[0] else region.speakers[0]
    emb = encoder.embed_spans(audio, [(start, end)])[0]
    pair = list(region.speakers)
    return pair[int(np.argmax(centroids[pair] @ emb))]


def _finish(services: Services, pk: str, ek: EpisodeKey, out: dict, *, doc: dict | None, listed: int) -> dict:
    if doc is not None:
        services.stage.put_json(layout.transcript_key(ek), doc)
    services.stage.put_json(layout.speakers_key(ek), out)
    issue = None
    heard = out.get("audio_num_speakers")
    if heard is not None and heard != out["num_speakers"]:
        issue = f"the audio has {heard} voices but the publisher's transcript names {out['num_speakers']} speakers"
    elif out["method"] != "off" and out["num_speakers"] == 1 and listed > 1:
        lists = "and its show notes name" if listed > out["persons_listed"] else "lists"
        issue = f"diarization found one speaker but the feed {lists} {listed}"
    services.checkpoints.update(pk, speaker_issue=issue)
    return out


def load_speakers(services: Services, pk: str) -> dict | None:
    try:
        return services.stage.get_json(layout.speakers_key(EpisodeKey.parse(pk)))
    except FileNotFoundError:
        return None
