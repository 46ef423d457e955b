"""Speaker labels in every output (segments.json, VTT, SRT, KPIs) and podcast:person from feeds."""

import json

from podinsight_dagster.costs.kpis import compute_kpis
from podinsight_dagster.fetch.feeds import parse_feed
from podinsight_dagster.speakers.names import persons_from_json, speakers_listed
from podinsight_dagster.transcribe.options import Segment, Transcript, Word
from podinsight_dagster.transcribe.steps import segments_rows
from podinsight_dagster.transcribe.subtitles import build_cues, to_srt, to_vtt


def _transcript() -> Transcript:
    segs = []
    for i, (who, text) in enumerate([("Ada <Host>", "Welcome to the show."), ("Speaker 2", "Thanks for having me."),
                                     ("Ada <Host>", "Let us begin.")]):
        words = [Word(i * 3 + j * 0.5, i * 3 + j * 0.5 + 0.4, " " + w, 0.9, who) for j, w in enumerate(text.split())]
        segs.append(Segment(i * 3.0, i * 3.0 + 2.5, text, -0.2, 0.01, 1.1, words, who))
    return Transcript(" ".join(s.text for s in segs), "en", 1.0, 9.0, 7.5, segs, "tiny.en", "cpu", "int8", 1.0)


def test_every_format_carries_the_speaker():
    t = _transcript()
    rows = segments_rows(t)
    assert [r["speaker"] for r in rows] == [0, 1, 0]
    assert [r["speaker_name"] for r in rows] == ["Ada <Host>", "Speaker 2", "Ada <Host>"]
    cues = build_cues(t.segments)
    vtt, srt = to_vtt(cues), to_srt(cues)
    assert "<v Ada Host>Welcome to the show." in vtt and "<v Speaker 2>Thanks for having me." in vtt
    assert "[Ada <Host>] Welcome to the show." in srt and "[Speaker 2] Thanks for having me." in srt
    back = Transcript.from_dict(json.loads(json.dumps(t.to_dict())))
    assert [w.speaker for w in back.segments[1].words] == ["Speaker 2"] * 4
    kpis = compute_kpis(t)
    assert kpis["speakers"] == 2 and kpis["talk_sec_per_speaker"] == {"Ada <Host>": 5.0, "Speaker 2": 2.5}


def test_unlabelled_transcripts_keep_their_old_shape():
    t = _transcript()
    for s in t.segments:
        s.speaker = None
        for w in s.words:
            w.speaker = None
    assert "<v " not in to_vtt(build_cues(t.segments)) and "[" not in to_srt(build_cues(t.segments))
    assert compute_kpis(t)["speakers"] is None and segments_rows(t)[0]["speaker"] == 0


FEED = b"""<?xml version="1.0"?>
<rss version="2.0" xmlns:podcast="https://podcastindex.org/namespace/1.0">
<channel><title>Show</title>
<podcast:person role="host">Ada Lovelace</podcast:person>
<item><title>One</title><guid>g1</guid><enclosure url="https://x.test/1.mp3" type="audio/mpeg" length="1"/>
  <podcast:person role="guest" href="https://x.test/bo">Bo  Guest</podcast:person>
  <podcast:person>Ada Lovelace</podcast:person>
  <podcast:person role="Producer">Cy Producer</podcast:person>
  <podcast:chapters url="https://x.test/1.json" type="application/json+chapters"/></item>
<item><title>Two</title><guid>g2</guid><enclosure url="https://x.test/2.mp3" type="audio/mpeg" length="1"/></item>
</channel></rss>"""


def test_podcast_person_from_the_item_else_the_channel():
    feed = parse_feed(FEED)
    one, two = feed.episodes
    assert [(p.name, p.role) for p in one.persons] == [("Bo Guest", "guest"), ("Ada Lovelace", "host"),
                                                       ("Cy Producer", "producer")]
    assert one.persons[0].href == "https://x.test/bo" and one.chapters_url == "https://x.test/1.json"
    assert [(p.name, p.role) for p in two.persons] == [("Ada Lovelace", "host")]
    persons = persons_from_json(json.dumps([vars(p) for p in one.persons]))
    assert speakers_listed(persons) == 2     # the producer does not speak


def test_overlapped_segments_name_both_voices_in_every_format():
    t = _transcript()
    host, guest = t.segments[0], t.segments[1]
    host.overlap, host.speakers = True, ["Ada <Host>", "Speaker 2"]
    # The guest's words heard again under the host's, as the speakers step adds them: their own cue at that time.
    heard = Segment(1.0, 2.0, "Me too.", -0.3, 0.02, 1.0,
                    [Word(1.0, 1.4, " Me", 0.8, "Speaker 2"), Word(1.5, 2.0, " too.", 0.8, "Speaker 2")],
                    "Speaker 2", overlap=True, speakers=["Speaker 2", "Ada <Host>"], recovered=True)
    guest.overlap, guest.speakers = True, ["Speaker 2", "Ada <Host>"]
    t.segments.insert(1, heard)
    rows = segments_rows(t)
    assert [(r.get("overlap"), r.get("speakers"), r.get("recovered")) for r in rows] == [
        (True, ["Ada <Host>", "Speaker 2"], None), (True, ["Speaker 2", "Ada <Host>"], True),
        (True, ["Speaker 2", "Ada <Host>"], None), (None, None, None)]
    cues = build_cues(t.segments)
    vtt, srt = to_vtt(cues), to_srt(cues)
    assert "<v Ada Host>Welcome to the show." in vtt and "<v Speaker 2>Me too." in vtt
    together = [c for c in cues if c.start < 2.0 and c.end > 1.0]
    assert {c.speaker for c in together} == {"Ada <Host>", "Speaker 2"}     # two cues at once, no [crosstalk]
    assert "[crosstalk]" not in vtt.split("Me too.")[0]
    # The guest's own turn has no words of the host's: it says the host is talked over.
    assert "<v Speaker 2>Thanks for having me.\n<v Ada Host>[crosstalk]" in vtt
    assert "[Ada <Host>] [crosstalk]" in srt
    back = Transcript.from_dict(json.loads(json.dumps(t.to_dict())))
    assert back.segments[1].recovered and back.segments[0].speakers == ["Ada <Host>", "Speaker 2"]
    assert "overlap" not in t.to_dict()["segments"][3]      # unmarked segments keep their old shape
