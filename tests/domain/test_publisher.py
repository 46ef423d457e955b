"""Publisher transcripts (podcast:transcript): parsing, and fetching over a real loopback server."""

import json

import pytest
import srt
import webvtt

from tests.support.cdn import Fault, PodcastCDN
from podinsight_dagster.fetch.http import HttpClient, HttpConfig
from podinsight_dagster.fetch.netpolicy import NetworkPolicy
from podinsight_dagster.transcribe.publisher import (PublisherLink, PublisherTranscriptError, fetch_publisher_transcript,
                                                 links_from_json, parse_transcript, rank_links)
from podinsight_dagster.transcribe.subtitles import MAX_LINE, build_cues, to_srt, to_vtt

VTT = """WEBVTT
Kind: captions

NOTE made by hand

intro
00:00:01.000 --> 00:00:04.500 align:start
<v Jane Doe>Welcome to the show.</v>

00:04.600 --> 00:07.000
<v John Roe>Thanks, Jane. It's <i>great</i> &amp; fun
to be here.</v>
"""

SRT = """1
00:00:01,000 --> 00:00:04,500
Welcome to the show.

2
00:00:04,600 --> 00:00:07,000
Thanks, Jane. It's great
to be here.
"""

JSON_SEGMENTS = {"version": "1.0.0", "segments": [
    {"startTime": 1.0, "endTime": 4.5, "body": "Welcome to the show.", "speaker": "Jane Doe"},
    {"startTime": 4.6, "endTime": 7.0, "body": "Thanks, Jane. It's great to be here.", "speaker": "John Roe"},
]}

JSON_WORDS = {"version": "1.0.0", "segments": [
    {"startTime": 1.0 + i * 0.4, "endTime": 1.3 + i * 0.4, "body": w, "speaker": "Jane Doe" if i < 4 else "John Roe"}
    for i, w in enumerate("Welcome to the show. Thanks, Jane. Great to be here.".split())
]}


def test_vtt_cues_voices_tags_and_entities():
    fmt, segs = parse_transcript(VTT.encode(), "vtt", 60.0)
    assert fmt == "vtt" and len(segs) == 2
    assert (segs[0].start, segs[0].end, segs[0].text, segs[0].speaker) == (1.0, 4.5, "Welcome to the show.", "Jane Doe")
    assert segs[1].text == "Thanks, Jane. It's great & fun to be here." and segs[1].speaker == "John Roe"
    assert (segs[1].start, segs[1].end) == (4.6, 7.0)
    assert segs[0].avg_logprob is None  # no model score for a publisher transcript


def test_srt_and_json_and_word_level_json():
    _, segs = parse_transcript(SRT.encode("utf-8-sig"), "srt", None)
    assert [s.text for s in segs] == ["Welcome to the show.", "Thanks, Jane. It's great to be here."]
    assert segs[1].start == 4.6
    fmt, segs = parse_transcript(json.dumps(JSON_SEGMENTS).encode(), "json", None)
    assert fmt == "json" and [s.speaker for s in segs] == ["Jane Doe", "John Roe"]
    # One word per segment (as some hosts publish): regrouped into sentences with word timings.
    _, segs = parse_transcript(json.dumps(JSON_WORDS).encode(), "json", None)
    assert [s.text for s in segs] == ["Welcome to the show.", "Thanks, Jane.", "Great to be here."]
    assert segs[0].speaker == "Jane Doe" and segs[1].speaker == "John Roe"
    assert len(segs[0].words) == 4 and segs[0].start == 1.0 and segs[0].end == pytest.approx(2.5)


def test_plain_text_and_html_are_spread_over_the_episode():
    text = "Jane Doe: Welcome to the show. It is a long one.\n\nJohn Roe: Thanks!"
    fmt, segs = parse_transcript(text.encode(), "text", 30.0)
    assert fmt == "text" and [s.text for s in segs] == ["Welcome to the show.", "It is a long one.", "Thanks!"]
    assert segs[0].start == 0 and segs[-1].end == pytest.approx(30.0, abs=0.01)
    assert [s.speaker for s in segs] == ["Jane Doe", "Jane Doe", "John Roe"]
    starts = [s.start for s in segs]
    assert starts == sorted(starts)
    fmt, segs = parse_transcript(b"<html><body><p>Hello there.</p><script>x()</script><p>Bye now.</p></body></html>",
                                 "html", 10.0)
    assert fmt == "html" and [s.text for s in segs] == ["Hello there.", "Bye now."]


def test_content_wins_over_a_wrong_declared_type_and_garbage_is_refused():
    assert parse_transcript(VTT.encode(), "json", None)[0] == "vtt"
    assert parse_transcript(SRT.encode(), "text", None)[0] == "srt"
    with pytest.raises(ValueError):
        parse_transcript(b'{"not": "a transcript"}', "json", None)
    with pytest.raises(ValueError):
        parse_transcript(b"WEBVTT\n\n", "vtt", None)


def test_links_ranked_best_format_first():
    links = links_from_json(json.dumps([
        {"url": "https://x.example/t.txt", "type": "text/plain", "language": "en", "rel": None},
        {"url": "https://x.example/t.srt", "type": "application/x-subrip", "language": "en", "rel": None},
        {"url": "https://x.example/t.json", "type": "application/json", "language": "de", "rel": None},
        {"url": "https://x.example/t.vtt", "type": None, "language": "en", "rel": "captions"},
    ]))
    assert [link.format for link in links] == ["text", "srt", "json", "vtt"]
    assert [link.url.rsplit(".", 1)[1] for link in rank_links(links)] == ["json", "vtt", "srt", "txt"]
    assert [link.url.rsplit(".", 1)[1] for link in rank_links(links, "en")] == ["vtt", "srt", "txt", "json"]
    assert links_from_json(None) == [] and links_from_json("not json") == []


@pytest.fixture
def cdn():
    with PodcastCDN(name="publisher-cdn") as server:
        yield server


@pytest.fixture
def http():
    return HttpClient(HttpConfig(max_attempts=2, backoff_base=0.01), NetworkPolicy.parse("127.0.0.0/8"))


@pytest.mark.parametrize("path, body, ctype", [
    ("/t.vtt", VTT.encode(), "text/vtt"),
    ("/t.srt", SRT.encode(), "application/x-subrip"),
    ("/t.json", json.dumps(JSON_SEGMENTS).encode(), "application/json"),
])
def test_fetched_over_loopback_into_a_transcript_with_subtitles(cdn, http, tmp_path, path, body, ctype):
    cdn.add_file(path, body, content_type=ctype)
    t = fetch_publisher_transcript(http, [PublisherLink(cdn.url(path), ctype, "en")], duration=60.0)
    assert t.source == "publisher" and t.publisher_format == path.rsplit(".", 1)[1]
    assert t.publisher_url == cdn.url(path) and t.language == "en" and t.duration == 60.0
    assert "Welcome to the show." in t.text and t.speech_duration == pytest.approx(5.9)
    cues = build_cues(t.segments)
    assert all(len(line) <= MAX_LINE for c in cues for line in c.lines)
    (tmp_path / "t.vtt").write_text(to_vtt(cues))
    assert len(webvtt.read(str(tmp_path / "t.vtt"))) == len(cues)
    assert len(list(srt.parse(to_srt(cues)))) == len(cues)


def test_a_broken_link_falls_through_to_the_next_and_all_broken_says_why(cdn, http):
    cdn.add_file("/good.srt", SRT.encode(), content_type="application/x-subrip")
    cdn.add_file("/bad.json", b"<html>oops</html>", content_type="application/json")
    cdn.set_fault("/gone.vtt", Fault(status=404))
    links = [PublisherLink(cdn.url("/gone.vtt"), "text/vtt"), PublisherLink(cdn.url("/bad.json"), "application/json"),
             PublisherLink(cdn.url("/good.srt"), "application/x-subrip")]
    t = fetch_publisher_transcript(http, links, duration=None)
    assert t.publisher_format == "srt" and t.duration == 7.0
    with pytest.raises(PublisherTranscriptError) as err:
        fetch_publisher_transcript(http, links[:2], duration=None)
    assert "404" in str(err.value) and "bad.json" in str(err.value)


def test_timings_are_clamped_to_the_audio(cdn, http):
    cdn.add_file("/t.vtt", VTT.encode(), content_type="text/vtt")
    t = fetch_publisher_transcript(http, [PublisherLink(cdn.url("/t.vtt"), "text/vtt")], duration=5.0)
    assert all(0 <= s.start <= s.end <= 5.0 for s in t.segments)
