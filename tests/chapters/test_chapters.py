"""Chapters: topic boundaries on synthetic transcripts, key-phrase titles, publisher chapters first."""

import json
from dataclasses import asdict

import pytest

from podinsight_dagster.chapters.embed import encoder
from podinsight_dagster.chapters.steps import chapters_episode, generate_chapters, parse_publisher_chapters
from podinsight_dagster.chapters.tiling import find_boundaries, sentences_from_segments
from podinsight_dagster.services import build_services
from podinsight_dagster.store import layout
from podinsight_dagster.store.checkpoints import DONE, TRANSCRIBE, EpisodeRecord
from podinsight_dagster.store.keys import EpisodeKey
from podinsight_dagster.transcribe.options import Transcript
from tests.chapters.synthetic import TOPICS, transcript
from tests.support.cdn import PodcastCDN

ORDERS = [
    ("sourdough", "telescopes", "mortgages", "marathon", "beekeeping"),
    ("beekeeping", "mortgages", "sourdough", "marathon", "telescopes"),
    ("telescopes", "marathon", "sourdough"),
    ("mortgages", "beekeeping"),
]


@pytest.mark.parametrize("order", ORDERS, ids=["-".join(o) for o in ORDERS])
@pytest.mark.parametrize("per_segment", [1, 3])
def test_every_topic_boundary_is_found_within_one_sentence(order, per_segment):
    segments, truth = transcript(order, per_segment=per_segment)
    sentences = sentences_from_segments(segments)
    assert len(sentences) == sum(len(TOPICS[t]) for t in order)  # segments split back into their sentences
    found = find_boundaries(encoder().encode([s.text for s in sentences]), [s.start for s in sentences])
    assert len(found) == len(truth), (found, truth)
    assert all(abs(f - t) <= 1 for f, t in zip(found, truth)), (found, truth)


def _transcript(order) -> Transcript:
    segments, _ = transcript(order)
    return Transcript(text=" ".join(s.text for s in segments), language="en", language_probability=1.0,
                      duration=segments[-1].end, speech_duration=segments[-1].end, segments=segments,
                      model="tiny.en", device="cpu", compute_type="int8", wall_sec=1.0)


def test_generated_chapters_cover_the_episode_with_key_phrase_titles():
    chapters = generate_chapters(_transcript(ORDERS[0]))
    assert [round(c["startTime"] / 6) for c in chapters] == pytest.approx([0, 8, 16, 24, 32], abs=1)
    assert chapters[-1]["endTime"] == 240.0
    assert all(a["endTime"] == b["startTime"] for a, b in zip(chapters, chapters[1:]))
    titles = [c["title"].lower() for c in chapters]
    for title, words in zip(titles, [("bread", "sourdough", "oven", "starter", "dough"),
                                     ("telescope", "light", "star", "saturn"),
                                     ("rate", "loan", "mortgage", "interest"),
                                     ("run", "race", "marathon", "mileage"),
                                     ("bee", "honey", "hive", "colony")]):
        assert any(w in title for w in words), titles
        assert len(title) <= 60


class _NoEncoder:
    def encode(self, texts):
        raise AssertionError("the sentence encoder was used for a transcript too short to split")


def test_a_transcript_too_short_to_split_is_one_chapter_without_the_encoder():
    full = _transcript(ORDERS[0])
    short = [s for s in full.segments if s.start < 50.0]  # under twice the 30-s chapter minimum
    one = Transcript(**{**full.__dict__, "segments": short, "duration": short[-1].end})
    assert generate_chapters(one, encoder=_NoEncoder()) == generate_chapters(one, encoder=encoder())
    [chapter] = generate_chapters(one, encoder=_NoEncoder())
    assert chapter["startTime"] == 0.0 and chapter["endTime"] == short[-1].end and chapter["title"]
    with pytest.raises(AssertionError, match="too short"):  # a longer one still needs it
        generate_chapters(full, encoder=_NoEncoder())


def test_publisher_chapters_are_checked_and_kept_with_their_fields():
    doc = parse_publisher_chapters(json.dumps({"version": "1.1.0", "chapters": [
        {"startTime": 90.5, "title": "Two", "img": "https://x.test/2.jpg"}, {"startTime": 0, "title": "One"}]}).encode())
    assert doc["version"] == "1.2.0" and [c["title"] for c in doc["chapters"]] == ["One", "Two"]
    assert doc["chapters"][1]["img"] == "https://x.test/2.jpg"
    for bad in (b"[]", b'{"chapters": []}', b'{"chapters": [{"title": "no start"}]}', b"<html>"):
        with pytest.raises(ValueError):
            parse_publisher_chapters(bad)


def _episode(services, pk: str, chapters_url: str | None) -> EpisodeKey:
    ek = EpisodeKey.parse(pk)
    services.checkpoints.register_episodes([EpisodeRecord(partition_key=pk, feed_slug=ek.feed_slug,
                                                          guid_key=ek.guid_key, chapters_url=chapters_url)])
    services.checkpoints.mark_stage(pk, TRANSCRIBE, DONE)
    services.stage.put_json(layout.transcript_key(ek), asdict(_transcript(ORDERS[2])))
    return ek


def test_chapters_step_prefers_the_publishers_and_falls_back_to_generated(settings):
    services = build_services(settings)
    publisher = {"version": "1.2.0", "chapters": [{"startTime": 0, "title": "Cold open"},
                                                  {"startTime": 61, "title": "Stars", "toc": False}]}
    try:
        with PodcastCDN(name="chapters-cdn") as cdn:
            cdn.add_file("/ep1.chapters.json", json.dumps(publisher).encode(), "application/json+chapters")
            ek = _episode(services, "show/ep1", cdn.url("/ep1.chapters.json"))
            out = chapters_episode(services, "show/ep1")
            assert out["source"] == "publisher" and out["chapters"] == 2
            assert services.stage.get_json(layout.chapters_key(ek)) == publisher

            ek2 = _episode(services, "show/ep2", cdn.url("/missing.json"))  # a 404: generated instead
            out = chapters_episode(services, "show/ep2")
        assert out["source"] == "generated" and out["chapters"] == 3 and "missing.json" in out["publisher_error"]
        doc = services.stage.get_json(layout.chapters_key(ek2))
        assert doc["version"] == "1.2.0" and [c["startTime"] for c in doc["chapters"]][0] == 0
    finally:
        services.close()
