"""The guest the show notes name: the phrases read, the ones left alone, and the name through the speakers step."""

import json

import numpy as np
import pytest

from podinsight_dagster.fetch.catalog import Catalog, FeedSpec
from podinsight_dagster.fetch.discover import discover
from podinsight_dagster.fetch.feeds import parse_feed
from podinsight_dagster.services import build_services
from podinsight_dagster.settings import Settings
from podinsight_dagster.speakers.metrics import diarization_error
from podinsight_dagster.speakers.names import Person, guest_from_show_notes, name_speakers
from podinsight_dagster.speakers.steps import diarize_episode
from podinsight_dagster.store import layout
from podinsight_dagster.store.keys import EpisodeKey
from podinsight_dagster.transcribe.options import Segment, Transcript
from tests.support.voices import ESPEAK_VOICES, FESTIVAL_VOICES, make_episode


@pytest.mark.parametrize("notes, guest", [
    ("Sleep stages, dreaming and memory, with guest Priya Raman.", "Priya Raman"),
    ("This week, with special guest Dr. Jane Doe, we look at sleep.", "Jane Doe"),
    ("My guest today, Jane Doe, explains how bridges stand up.", "Jane Doe"),
    ("Our guest this week is José Álvarez-Ruiz, who studies coral.", "José Álvarez-Ruiz"),
    ("Our guest: Dr. Jane Q. Doe, a geologist", "Jane Q. Doe"),
    ("Interview with Jane Doe about her new book.", "Jane Doe"),
    ("An interview with Ludwig van Beethoven", "Ludwig van Beethoven"),
    ("Guest: Mary O'Neil\nTopics: soil, compost", "Mary O'Neil"),
    ("We are joined by Ada Lovelace to talk about engines.", "Ada Lovelace"),
    ("Featuring Samira Haddad.", "Samira Haddad"),
    ("with guest Jane Doe, CEO of Acme Corp", "Jane Doe"),
    ("Talking With Jane Doe About Sleep", "Jane Doe"),
    ("This week we welcome back Grace Hopper!", "Grace Hopper"),
])
def test_the_guest_named_in_the_show_notes(notes, guest):
    assert guest_from_show_notes(notes) == guest


@pytest.mark.parametrize("notes", [
    "Sleep stages, dreaming and memory.",
    "Small scripts grow into fragile pipelines. We talk about tasks, retries & keeping records.",
    "With guests Jane Doe and John Roe.",                       # two guests: whose voice is whose?
    "Featuring Jane Doe, John Roe and Ann Poe.",
    "with my guest Jane Doe & John Roe",
    "An interview with Jane Doe. Next week: an interview with John Roe.",
    "Interview with the founder of Acme.",                      # no name
    "Interview with NASA Goddard",                              # an organisation
    "Featuring music by Blue Dot Sessions.",
    "Featuring Apple Music",
    "Talking with New York Times reporters about the election.",
    "with guest appearances from the audience",
    "Alex talks with Priya Raman's colleague",                  # someone else
    "Guest: Jane\nDoe",                                         # a name never spans lines
    "Welcome to the show. Our first story takes us to Rome.",
    None,
])
def test_show_notes_that_name_no_single_guest(notes):
    assert guest_from_show_notes(notes) is None


FEED = """<?xml version="1.0"?>
<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/">
<channel><title>Show</title>
<item><title>One</title><guid>g1</guid><enclosure url="https://x.test/1.mp3" type="audio/mpeg" length="1"/>
  <description>&lt;p&gt;Guest: &lt;a href="https://x.test/jd"&gt;Jane Doe&lt;/a&gt;&lt;/p&gt;&lt;p&gt;Topics &amp;amp; more&lt;/p&gt;</description>
</item>
<item><title>Two</title><guid>g2</guid><enclosure url="https://x.test/2.mp3" type="audio/mpeg" length="1"/>
  <content:encoded><![CDATA[<p>Our guest today is <b>John Roe</b>.</p>]]></content:encoded></item>
<item><title>Three</title><guid>g3</guid><enclosure url="https://x.test/3.mp3" type="audio/mpeg" length="1"/></item>
</channel></rss>""".encode()


def test_show_notes_are_kept_as_plain_text_one_paragraph_a_line():
    one, two, three = parse_feed(FEED).episodes
    assert one.description == "Guest: Jane Doe\nTopics & more"
    assert guest_from_show_notes(one.description) == "Jane Doe"       # not "Jane Doe Topics"
    assert two.description == "Our guest today is John Roe." and guest_from_show_notes(two.description) == "John Roe"
    assert three.description is None


def test_the_show_notes_guest_names_the_one_cluster_besides_the_host():
    cents = np.eye(3, 8, dtype=np.float32)
    host = [Person("Ada Host", "host")]
    opening = ["Welcome to the show.", "Glad to be here.", "Let us start."]
    names = name_speakers(cents[:2], [0, 1, 0], host, [], "Jane Doe", texts=opening)
    assert [(n.name, n.source) for n in names] == [("Ada Host", "opening"), ("Jane Doe", "one-left")]
    assert [e.source for e in names[1].evidence] == ["one-left", "show-notes"]
    # Nothing says who the host is: neither is named.
    assert [n.name for n in name_speakers(cents[:2], [0, 1, 0], host, [], "Jane Doe")] == ["Speaker 1", "Speaker 2"]
    # Two voices besides the host's, or the guest introduces herself.
    names = name_speakers(cents, [0, 1, 2], host, [], "Jane Doe", texts=opening)
    assert [n.name for n in names] == ["Ada Host", "Speaker 2", "Speaker 3"]
    names = name_speakers(cents, [0, 1, 2], host, [], "Jane Doe", texts=[opening[0], "I'm Jane Doe.", "Hi."])
    assert [n.name for n in names] == ["Ada Host", "Jane Doe", "Speaker 3"]


SHOW = """<?xml version="1.0"?>
<rss version="2.0" xmlns:podcast="https://podcastindex.org/namespace/1.0">
<channel><title>Garden Hour</title><podcast:person role="host">Ada Host</podcast:person>
<item><title>Soil</title><guid>gh-1</guid><description>All about soil, with guest Jane Doe.</description>
  <enclosure url="{base_url}/duo.mp3" type="audio/mpeg" length="1"/></item>
</channel></rss>"""


def test_the_speakers_step_names_the_show_notes_guest(settings, demo_cdn, voice_cache, tmp_path):
    """A host listed for the channel, the guest only in the show notes: two voices, both named."""
    # test_diarization's voice-print episode: its sentences are in the session's cache by now.
    ep = make_episode([FESTIVAL_VOICES[0], ESPEAK_VOICES[1]], 60, voice_cache, seed=11)
    demo_cdn.add_file("/garden.xml", SHOW.encode(), "application/rss+xml")
    services = build_services(Settings.from_env())
    result = discover(services, Catalog(feeds=[FeedSpec("garden-hour", demo_cdn.url("/garden.xml"), 1)]))
    [pk] = result.new_partition_keys
    ek = EpisodeKey.parse(pk)
    services.raw.put_file(layout.audio_key(ek), ep.write_mp3(tmp_path / "duo.mp3"))
    services.raw.put_json(layout.meta_key(ek), {"audio_key": layout.audio_key(ek)})
    # The transcript's segments are the generated sentences: what is under test is the naming, not ASR.
    segs = [Segment(s, e, text, -0.2, 0.01, 1.2) for s, e, _, text in ep.sentences]
    services.stage.put_json(layout.transcript_key(ek), Transcript(
        " ".join(s.text for s in segs), "en", 1.0, ep.duration, ep.duration, segs, "tiny.en", "cpu", "int8",
        1.0).to_dict())

    segs[0].text = "Welcome to the show. " + segs[0].text     # the host opens the show
    services.stage.put_json(layout.transcript_key(ek), Transcript(
        " ".join(s.text for s in segs), "en", 1.0, ep.duration, ep.duration, segs, "tiny.en", "cpu", "int8",
        1.0).to_dict())

    out = diarize_episode(services, pk)
    assert out["num_speakers"] == 2 and out["count_source"] == "estimated" and out["count_bound"] == 2
    assert out["show_notes_guest"] == "Jane Doe"
    assert {(s["name"], s["role"], s["source"]) for s in out["speakers"]} == {
        ("Ada Host", "host", "opening"), ("Jane Doe", "guest", "one-left")}
    who = {ep.sentences[0][2]: "Ada Host", 1 - ep.sentences[0][2]: "Jane Doe"}   # the host speaks first
    labelled = json.loads(services.stage.get_bytes(layout.transcript_key(ek)))["segments"]
    ref = [(s, e, who[k]) for s, e, k, _ in ep.sentences]
    hyp = [(seg["start"], seg["end"], seg["speaker"]) for seg in labelled]
    # Names compared as they are (no best matching): the error is that of the right name on each voice.
    assert sum(e - s for (s, e, r), (_, _, h) in zip(ref, hyp) if r != h) / sum(e - s for s, e, _ in ref) <= 0.10
    assert diarization_error(ref, hyp) <= 0.10
    # Both names are deductions (opening, one-left), not strong enough to teach the feed a voice print.
    assert "feed_voiceprints" not in out
