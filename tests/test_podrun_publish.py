"""podrun publish: the Podcasting 2.0 item tags for a feed's publisher, and an enriched copy of the feed,
checked against the namespace's own examples and fetched from a loopback server serving the stage bucket."""

import json
import re
import urllib.request
from dataclasses import asdict
from xml.etree import ElementTree as ET

import pytest
from defusedxml import ElementTree as SafeET

from podinsight_dagster.chapters.steps import chapters_episode
from podinsight_dagster.services import build_services
from podinsight_dagster.store import layout
from podinsight_dagster.store.keys import EpisodeKey, guid_key
from podinsight_dagster.transcribe.options import Segment, Transcript
from podinsight_dagster.transcribe.steps import write_segments
from tests.chapters.synthetic import TOPICS

NS = "https://podcastindex.org/namespace/1.0"
# The namespace's examples (docs/1.0.md: transcript, chapters, soundbite), as a publisher pastes them.
SPEC_EXAMPLES = f"""<item xmlns:podcast="{NS}">
  <podcast:transcript url="https://example.com/episode1/transcript.json" type="application/json" language="es"
                      rel="captions" />
  <podcast:chapters url="https://example.com/episode1/chapters.json" type="application/json+chapters" />
  <podcast:soundbite startTime="73.0" duration="60.0" />
</item>"""


def _spec_attributes():
    return {el.tag: set(el.attrib) for el in ET.fromstring(SPEC_EXAMPLES)}


def _transcribed(services, pk):
    """A transcript with two speakers (as transcription and diarization leave it), then the stage steps."""
    ek = EpisodeKey.parse(pk)
    bread, t, segments = TOPICS["sourdough"], 0.0, []
    for i, sentence in enumerate(bread + TOPICS["telescopes"][:4]):
        segments.append(Segment(t, t + 6.0, sentence, -0.2, 0.01, 1.0, [], "Alex Morgan" if i < 8 else "Priya Raman"))
        t += 6.0
    doc = Transcript(text=" ".join(s.text for s in segments), language="en", language_probability=1.0,
                     duration=t, speech_duration=t, segments=segments, model="tiny.en", device="cpu",
                     compute_type="int8", wall_sec=1.0)
    services.stage.put_json(layout.transcript_key(ek), asdict(doc))
    write_segments(services, pk)
    chapters_episode(services, pk)
    services.stage.put_json(layout.kpis_key(ek), {"partition_key": pk, "language": "en"})


@pytest.fixture
def published(settings, demo_catalog, demo_cdn, podrun):
    demo_catalog(["tech-talk"])
    podrun("fetch", "--limit", "0")  # registers the feed's three episodes
    services = build_services(settings)
    keys = [r.partition_key for r in services.checkpoints.episodes(feed_slug="tech-talk")]
    for pk in keys[:2]:
        _transcribed(services, pk)
    services.close()
    demo_cdn.add_directory(settings.stage_root, prefix="/stage")  # the stage bucket, served publicly
    return keys


def _tags(text):
    body = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    return list(ET.fromstring(f'<item xmlns:podcast="{NS}">{body}</item>'))


def test_publish_prints_the_tags_as_the_spec_examples_and_every_link_works(published, demo_cdn, podrun,
                                                                           monkeypatch):
    result = podrun("publish", "tech-talk", "--base-url", demo_cdn.url("/stage"))
    assert "tags for 2 of 3 episodes of tech-talk" in result.output
    tags, spec = _tags(result.stdout), _spec_attributes()
    assert result.stdout.count("<!-- item guid ") == 2
    assert {t.tag for t in tags} == set(spec)
    for t in tags:
        required = {"url", "type"} if "soundbite" not in t.tag else {"startTime", "duration"}
        assert required <= set(t.attrib) <= spec[t.tag], t.attrib
    transcripts = [t for t in tags if t.tag.endswith("transcript")]
    assert sorted(t.get("type") for t in transcripts) == sorted(["application/json", "application/x-subrip",
                                                                 "text/vtt"] * 2)
    assert all(t.get("rel") == "captions" for t in transcripts if t.get("type") != "application/json")
    assert all(t.get("language") == "en" for t in transcripts)
    bites = [t for t in tags if t.tag.endswith("soundbite")]
    assert 2 <= len(bites) <= 6 and all(15.0 <= float(b.get("duration")) <= 60.0 and b.text for b in bites)
    for t in tags:
        if t.get("url"):
            with urllib.request.urlopen(t.get("url")) as resp:  # noqa: S310 - loopback
                body = resp.read()
            if t.get("type") == "application/json":
                doc = json.loads(body)
                assert doc["version"] == "1.0.0" and {"speaker", "startTime", "endTime", "body"} <= set(
                    doc["segments"][0])
            elif "chapters" in t.get("type"):
                assert json.loads(body)["chapters"]
            else:
                assert b"Alex Morgan" in body
    monkeypatch.setenv("PODINSIGHT_PUBLISH_BASE_URL", demo_cdn.url("/stage"))
    assert podrun("publish", "tech-talk").stdout == result.stdout  # the setting, as the flag


def test_publish_feed_copy_inserts_the_tags_in_the_matching_items(published, demo_cdn, podrun):
    original = SafeET.fromstring(urllib.request.urlopen(demo_cdn.url("/feeds/tech-talk.xml")).read())  # noqa: S310
    result = podrun("publish", "tech-talk", "--feed-copy", "--base-url", "https://cdn.example/stage")
    assert "tags inserted in 2 items" in result.output
    copy = SafeET.fromstring(result.stdout.encode())
    items, before = copy.findall("channel/item"), original.findall("channel/item")
    assert [i.findtext("title") for i in items] == [i.findtext("title") for i in before]
    assert [i.findtext("guid") for i in items] == [i.findtext("guid") for i in before]
    tagged = {EpisodeKey.parse(pk).guid_key for pk in published[:2]}
    for item in items:
        transcripts = item.findall(f"{{{NS}}}transcript")
        want = 3 if guid_key(item.findtext("guid").strip()) in tagged else 0
        assert len(transcripts) == want, item.findtext("guid")
        assert all(t.get("url").startswith("https://cdn.example/stage/tech-talk/") for t in transcripts)
        assert len(item.findall(f"{{{NS}}}chapters")) == (1 if want else 0)
    assert sum(bool(i.findall(f"{{{NS}}}transcript")) for i in items) == 2


def test_publish_refuses_without_a_base_url_or_an_unknown_feed(published, podrun):
    missing = podrun("publish", "tech-talk", ok=False)
    assert missing.exit_code == 1 and "PODINSIGHT_PUBLISH_BASE_URL" in missing.output
    assert len(missing.output.strip().splitlines()) == 1
    unknown = podrun("publish", "nope", "--base-url", "https://cdn.example/s", ok=False)
    assert unknown.exit_code == 1 and "no feed 'nope' in the catalog" in unknown.output


def test_a_locked_feed_gets_the_tags_but_no_copy(published, demo_cdn, podrun):
    from podinsight_dagster.demo.run import CONTENT

    feed = (CONTENT / "feeds" / "tech-talk.xml").read_bytes().replace(
        b"<channel>", b'<channel><podcast:locked owner="owner@example.com">yes</podcast:locked>', 1)
    demo_cdn.add_file("/feeds/tech-talk.xml", feed, "application/rss+xml")
    refused = podrun("publish", "tech-talk", "--feed-copy", "--base-url", "https://cdn.example/stage", ok=False)
    assert refused.exit_code == 1 and "podcast:locked (owner owner@example.com)" in refused.output
    assert "<rss" not in refused.output
    assert "<podcast:transcript" in podrun("publish", "tech-talk", "--base-url", "https://cdn.example/stage").stdout
    doc = json.loads(podrun("feed", "inspect", demo_cdn.url("/feeds/tech-talk.xml"), "--json").stdout)
    assert doc["feed"]["locked"] is True and doc["feed"]["locked_owner"] == "owner@example.com"
