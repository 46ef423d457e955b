"""transcribe_episodes: publisher transcripts first, one batched ASR pass, one failure never stops the rest."""

import hashlib
import io
import json
from pathlib import Path

import pytest
import srt
import webvtt

from tests.support.cdn import Fault, PodcastCDN
from podinsight_dagster.store import layout
from podinsight_dagster.store.checkpoints import DOWNLOADED, FAILED, TRANSCRIBED, EpisodeRecord
from podinsight_dagster.store.keys import EpisodeKey, partition_key
from podinsight_dagster.errors import StepError
from podinsight_dagster.fetch.download import probe_duration
from podinsight_dagster.services import build_services
from podinsight_dagster.transcribe.steps import (asr_transcript_key, transcribe_episode, transcribe_episodes,
                                             write_kpis, write_segments)
from podinsight_dagster.transcribe.text import wer
from podinsight_dagster.transcribe.options import Transcript
from podinsight_dagster.transcribe.transcriber import InProcessTranscriber

from ..conftest import audio_bytes, reference

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "audio"
CLIP = FIXTURES / "clip-14s.mp3"


@pytest.fixture
def services(settings):
    return build_services(settings)


@pytest.fixture
def cdn():
    with PodcastCDN(name="stage-cdn") as server:
        yield server


class Loads(InProcessTranscriber):
    """The in-process transcriber, counting how often it was asked to transcribe (and so to load the model)."""

    def __init__(self, services):
        super().__init__(services.transcriber.options)
        self.count = 0

    def transcribe(self, sources):
        self.count += 1
        return super().transcribe(sources)


def _episode(services, guid, data: bytes, links=None, slug="show") -> str:
    pk = partition_key(slug, guid)
    services.checkpoints.register_episodes([EpisodeRecord(
        partition_key=pk, feed_slug=slug, guid_key=guid, guid=guid, title=f"Episode {guid}",
        enclosure_url=f"https://cdn.example/{guid}.mp3", transcripts_json=json.dumps(links) if links else None)])
    ek = EpisodeKey.parse(pk)
    key = layout.audio_key(ek)
    services.raw.put_bytes(key, data, content_type="audio/mpeg")
    with services.raw.local_copy(key) as path:
        duration = probe_duration(path)
    services.raw.put_json(layout.meta_key(ek), {
        "partition_key": pk, "guid": guid, "title": f"Episode {guid}", "audio_key": key, "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(), "duration_sec": duration, "transcript_key": None})
    services.checkpoints.mark_downloaded(pk, bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    return pk


def _vtt_from(text: str, seconds: float) -> bytes:
    sentences = [s.strip() for s in text.replace("\n", " ").split(". ") if s.strip()]
    step = seconds / len(sentences)
    cues = [f"{i + 1}\n00:00:{i * step:06.3f} --> 00:00:{(i + 1) * step:06.3f}\n<v Host>{s.rstrip('.')}.</v>\n"
            for i, s in enumerate(sentences)]
    return ("WEBVTT\n\n" + "\n".join(cues)).encode()


def _finish(services, pk):
    write_segments(services, pk)
    return write_kpis(services, pk)


def test_publisher_first_then_asr_and_every_stage_file(services, settings, cdn):
    cdn.add_file("/p/a.vtt", _vtt_from("Hello and welcome. This is the publisher's own transcript. Bye now.", 12),
                 content_type="text/vtt")
    a = _episode(services, "a", CLIP.read_bytes(), [{"url": cdn.url("/p/a.vtt"), "type": "text/vtt",
                                                     "language": "en", "rel": "captions"}])
    b = _episode(services, "b", (FIXTURES / "clip-18s.mp3").read_bytes())
    loads = Loads(services)
    results = transcribe_episodes(services, [a, b], loads)
    assert loads.count == 1  # only b needed ASR
    assert results[a].source == "publisher" and results[a].publisher_format == "vtt"
    assert results[a].text.startswith("Hello and welcome.") and results[a].duration == pytest.approx(14.0, abs=0.1)
    assert results[b].source == "asr" and results[b].publisher_error is None and len(results[b].text.split()) > 30
    for pk in (a, b):
        ek = EpisodeKey.parse(pk)
        kpis = _finish(services, pk)
        for key in (layout.transcript_key(ek), layout.segments_key(ek), layout.vtt_key(ek), layout.srt_key(ek),
                    layout.kpis_key(ek)):
            assert services.stage.exists(key), key
        assert services.raw.get_json(layout.meta_key(ek))["transcript_key"] == layout.transcript_key(ek)
        assert services.checkpoints.get(pk).state == TRANSCRIBED
        doc = services.stage.get_json(layout.transcript_key(ek))
        assert doc["partition_key"] == pk and doc["title"] == f"Episode {ek.guid_key}" and doc["segments"]
        rows = [json.loads(line) for line in services.stage.get_bytes(layout.segments_key(ek)).decode().splitlines()]
        assert {"text", "start_sec", "end_sec", "speaker", "avg_logprob", "no_speech_prob"} <= set(rows[0])
        assert all(isinstance(r["speaker"], int) for r in rows)
        assert [r["start_sec"] for r in rows] == sorted(r["start_sec"] for r in rows)
        assert all(0 <= r["start_sec"] <= r["end_sec"] <= doc["duration"] for r in rows), (rows, doc["duration"])
        vtt = webvtt.from_buffer(io.StringIO(services.stage.get_bytes(layout.vtt_key(ek)).decode()))
        subs = list(srt.parse(services.stage.get_bytes(layout.srt_key(ek)).decode()))
        assert len(list(vtt)) == len(subs) > 0 and all(len(line) <= 65 for s in subs for line in s.content.split("\n"))
        assert set(kpis) >= {"duration_sec", "speech_sec", "speech_ratio", "words", "words_per_minute", "segments",
                             "language", "language_probability", "mean_avg_logprob", "low_confidence_share",
                             "suspected_hallucination", "model", "device", "compute_type", "wall_sec",
                             "realtime_factor", "cost_usd", "source", "language_mismatch"}
    ka = services.stage.get_json(layout.kpis_key(EpisodeKey.parse(a)))
    kb = services.stage.get_json(layout.kpis_key(EpisodeKey.parse(b)))
    assert ka["source"] == "publisher" and ka["mean_avg_logprob"] is None and ka["model"] is None
    assert kb["source"] == "asr" and kb["model"] == "tiny.en" and kb["mean_avg_logprob"] < 0
    rows = services.stage.get_bytes(layout.segments_key(EpisodeKey.parse(a))).decode().splitlines()
    assert json.loads(rows[0])["speaker_name"] == "Host" and json.loads(rows[0])["speaker"] == 0


def test_all_publisher_never_loads_the_model(services, cdn):
    cdn.add_file("/p/x.srt", b"1\n00:00:00,500 --> 00:00:03,000\nJust the publisher.\n", content_type="application/x-subrip")
    pk = _episode(services, "x", CLIP.read_bytes(), [{"url": cdn.url("/p/x.srt"), "type": "application/x-subrip"}])

    class NoModel(InProcessTranscriber):
        def transcribe(self, sources):
            raise AssertionError("the model must not load when every episode has a publisher transcript")

    t = transcribe_episode(services, pk, NoModel(services.transcriber.options))
    assert t.source == "publisher" and t.text == "Just the publisher." and t.wall_sec >= 0


def test_broken_publisher_transcript_falls_back_to_asr_and_says_why(services, cdn):
    cdn.set_fault("/p/gone.json", Fault(status=404))
    pk = _episode(services, "g", CLIP.read_bytes(), [{"url": cdn.url("/p/gone.json"), "type": "application/json"}])
    t = transcribe_episodes(services, [pk], Loads(services))[pk]
    assert t.source == "asr" and "404" in t.publisher_error and len(t.text.split()) > 20
    kpis = _finish(services, pk)
    assert kpis["source"] == "asr" and "404" in kpis["publisher_fallback_reason"]


def test_always_asr_ignores_links_and_both_scores_agreement(services, cdn):
    text = reference("tech-talk", "ep1")
    cdn.add_file("/p/t.vtt", _vtt_from(text, 48), content_type="text/vtt")
    links = [{"url": cdn.url("/p/t.vtt"), "type": "text/vtt", "language": "en"}]
    pk = _episode(services, "tt", audio_bytes("tech-talk", "ep1"), links)
    t = transcribe_episodes(services, [pk], Loads(services), source="always_asr")[pk]
    assert t.source == "asr" and cdn.request_count("/p/t.vtt") == 0
    assert wer(text, t.text) <= 0.2
    t = transcribe_episodes(services, [pk], Loads(services), source="both")[pk]
    ek = EpisodeKey.parse(pk)
    assert t.source == "publisher" and 0.8 <= t.publisher_asr_agreement <= 1.0
    asr = Transcript.from_dict(services.stage.get_json(asr_transcript_key(ek)))
    assert asr.source == "asr" and asr.publisher_asr_agreement == t.publisher_asr_agreement
    assert services.stage.get_json(layout.transcript_key(ek))["source"] == "publisher"
    assert _finish(services, pk)["publisher_asr_agreement"] == t.publisher_asr_agreement


def test_bad_episodes_fail_alone_with_clear_reasons(services):
    good = _episode(services, "good", CLIP.read_bytes())
    corrupt = _episode(services, "corrupt", b"ID3\x03\x00\x00\x00\x00\x00\x00" + bytes(range(256)) * 100)
    short = _episode(services, "short", (FIXTURES / "clip-22s.mp3").read_bytes())
    ek = EpisodeKey.parse(short)  # the audio object lost its tail after download
    with services.raw.local_copy(layout.audio_key(ek)) as path:
        path.write_bytes(path.read_bytes()[:30000])
    missing = partition_key("show", "never-downloaded")
    good2 = _episode(services, "good2", (FIXTURES / "clip-18s.mp3").read_bytes())
    results = transcribe_episodes(services, [good, corrupt, short, missing, good2], Loads(services))
    assert isinstance(results[good], Transcript) and isinstance(results[good2], Transcript)
    for pk, why in ((corrupt, "cannot decode audio"), (short, "truncated or replaced"), (missing, "no raw audio")):
        assert isinstance(results[pk], StepError) and why in str(results[pk]), results[pk]
    for pk in (corrupt, short):
        # A failed transcription never erases the download: the episode stays downloaded, its stage failed.
        rec, stage = services.checkpoints.get(pk), services.checkpoints.stage(pk, "transcribe")
        assert rec.state == DOWNLOADED and rec.failed_stage == "transcribe" and rec.last_error
        assert stage.status == FAILED and stage.last_error and stage.attempts == 1
    assert services.stage.exists(layout.transcript_key(EpisodeKey.parse(good2)))
    with pytest.raises(StepError, match="cannot decode audio"):
        transcribe_episode(services, corrupt, Loads(services))
