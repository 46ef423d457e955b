"""Soundbite candidates: 15-60 s, one speaker, complete thoughts, the most central passages of the episode."""

from podinsight_dagster.chapters.soundbites import soundbites
from podinsight_dagster.transcribe.options import Segment
from tests.chapters.synthetic import TOPICS


def _turns(*turns, sec=6.0):
    """Segments of one sentence each, ``sec`` seconds long, for (speaker, sentences) turns in order."""
    out, t = [], 0.0
    for speaker, sentences in turns:
        for s in sentences:
            out.append(Segment(t, t + sec, s, None, None, 1.0, [], speaker))
            t += sec
    return out


class _NoEncoder:
    def encode(self, texts):
        raise AssertionError("the encoder was loaded for 3 candidates or fewer")


def test_three_central_passages_that_stand_alone():
    bread, loans = TOPICS["sourdough"], TOPICS["mortgages"]
    segments = _turns(("Host", bread[:4]), ("Guest", bread[4:]), ("Host", loans[:4]), ("Guest", bread[:4]),
                      ("Host", ["And that is a short reply.", "But it leans on the question."]))
    bites = soundbites(segments)
    assert 1 <= len(bites) <= 3 and len(bites) == 3
    by_time = {s.start: s for s in segments}
    for b in bites:
        assert 15.0 <= b["duration"] <= 60.0 and b["text"].endswith((".", "!", "?"))
        covered = [s for s in segments if b["startTime"] <= s.start < b["startTime"] + b["duration"]]
        assert {s.speaker for s in covered} == {b["speaker"]}  # one speaker
        assert by_time[b["startTime"]].text.split()[0] not in ("And", "But", "So")
        assert not any(w in b["text"] for w in ("loan", "mortgage", "rate")), b  # the aside is least central
        assert b["title"] and len(b["title"]) <= 80
    starts = sorted((b["startTime"], b["startTime"] + b["duration"]) for b in bites)
    assert all(a[1] <= b[0] for a, b in zip(starts, starts[1:]))  # never overlapping
    assert [b["centrality"] for b in bites] == sorted((b["centrality"] for b in bites), reverse=True)


def test_few_candidates_need_no_encoder_and_short_turns_give_none():
    bread = TOPICS["sourdough"]
    one = soundbites(_turns(("Host", bread[:3])), encoder=_NoEncoder())  # 18 s: exactly one passage
    assert len(one) == 1 and one[0]["startTime"] == 0.0 and one[0]["duration"] == 18.0
    assert soundbites(_turns(("Host", bread[:2]), ("Guest", bread[2:4])), encoder=_NoEncoder()) == []  # 12-s turns
    assert soundbites(_turns(("Host", bread[:12]), sec=70.0), encoder=_NoEncoder()) == []  # each sentence too long
