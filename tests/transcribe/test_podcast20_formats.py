"""The Podcasting 2.0 transcript formats (podcast-namespace transcripts/transcripts.md), checked against the
spec's own examples."""

import json

import srt

from podinsight_dagster.transcribe.options import Segment, Word
from podinsight_dagster.transcribe.podcast20 import to_podcast_srt, to_transcript_json

# The spec's JSON example (transcripts.md, "JSON"), as a publisher's player expects it.
SPEC_JSON_EXAMPLE = {
    "version": "1.0.0",
    "segments": [
        {"speaker": "Darth Vader", "startTime": 0.5, "endTime": 0.75, "body": "I"},
        {"speaker": "Darth Vader", "startTime": 1, "endTime": 1.25, "body": "am"},
        {"speaker": "Darth Vader", "startTime": 1.5, "endTime": 2.0, "body": "your"},
        {"speaker": "Darth Vader", "startTime": 2.25, "endTime": 2.50, "body": "father.\n"},
        {"speaker": "Luke", "startTime": 2.75, "endTime": 3.0, "body": "Nooooo"},
    ],
}
# The spec's SRT example (transcripts.md, "SRT"): 2 lines of at most 32 characters, "Name:" at a change.
SPEC_SRT_EXAMPLE = """1
00:00:00,000 --> 00:00:02,760
Sarah: In today's episode,
you'll learn whether or not you

2
00:00:02,760 --> 00:00:06,090
should have a podcast trailer.
And if so, what should you

3
00:00:19,080 --> 00:00:21,450
Gillian: Hi Buzzsprout, Gillian
here from breaking through
"""


def _shape(doc):
    """The types of a transcript document, key by key (what the spec's example fixes)."""
    return {"version": type(doc["version"]), "segment_keys": [sorted(s) for s in doc["segments"]],
            "times": {type(s[k]) in (int, float) for s in doc["segments"] for k in ("startTime", "endTime")}}


def _segment(start, end, text, speaker, with_words=True):
    words, t = [], start
    step = (end - start) / max(len(text.split()), 1)
    for w in text.split():
        words.append(Word(t, t + step, " " + w, 0.9, speaker))
        t += step
    return Segment(start, end, text, -0.2, 0.01, 1.2, words if with_words else [], speaker)


SEGMENTS = [
    _segment(0.0, 6.0, "In today's episode you'll learn whether or not you should have a podcast trailer.", "Sarah"),
    _segment(6.0, 11.0, "And if so, what should you include in one? Welcome to Podcasting Q and A.", "Sarah"),
    _segment(11.0, 20.0, "Hi Buzzsprout, Gillian here from breaking through careers podcast. My question is, "
                         "do we need a podcast trailer?", "Gillian Featherstonehaugh-Worthington", with_words=False),
    _segment(20.0, 24.0, "Great question.", "Sarah"),
    _segment(24.0, 26.0, "Unattributed words.", None),
]


def test_the_json_has_the_spec_examples_shape():
    doc = to_transcript_json(SEGMENTS)
    assert _shape({**doc, "segments": doc["segments"][:4]}) == _shape({**SPEC_JSON_EXAMPLE,
                                                                       "segments": SPEC_JSON_EXAMPLE["segments"][:4]})
    assert doc["version"] == SPEC_JSON_EXAMPLE["version"]
    assert [s.get("speaker") for s in doc["segments"]] == ["Sarah", "Sarah", SEGMENTS[2].speaker, "Sarah", None]
    assert "speaker" not in doc["segments"][-1]  # nobody named: left out, as the spec's optional field
    assert all(s["startTime"] <= s["endTime"] for s in doc["segments"])
    assert json.loads(json.dumps(doc)) == doc


def test_the_srt_follows_the_spec_rules_as_its_example_does():
    for text in (SPEC_SRT_EXAMPLE, to_podcast_srt(SEGMENTS)):
        cards = list(srt.parse(text))
        assert cards and all(len(c.content.split("\n")) <= 2 for c in cards)
        assert all(len(line) <= 32 for c in cards for line in c.content.split("\n")), text
        assert all(a.end <= b.start for a, b in zip(cards, cards[1:]))
    cards = list(srt.parse(to_podcast_srt(SEGMENTS)))
    # the name at each change of speaker, and only there (a long name wraps within the limits)
    assert cards[0].content.startswith("Sarah: ")
    assert sum(c.content.startswith("Sarah: ") for c in cards) == 2
    [guest] = [c for c in cards if c.content.startswith("Gillian")]
    assert " ".join(guest.content.split()).startswith("Gillian Featherstonehaugh-Worthington:")
    words = " ".join(" ".join(c.content.split()) for c in cards)
    assert "trailer? Sarah: Great question. Unattributed words." in words
