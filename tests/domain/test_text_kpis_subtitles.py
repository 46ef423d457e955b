import srt
import webvtt

from podinsight_dagster.costs.kpis import compute_kpis, has_repetition_loop
from podinsight_dagster.transcribe.subtitles import MAX_LINE, build_cues, to_srt, to_vtt
from podinsight_dagster.transcribe.text import normalize_text, number_to_words, wer
from podinsight_dagster.transcribe.options import Segment, Transcript, Word


def test_normalize_case_punctuation_and_numbers():
    assert normalize_text("In 1969, 42% of THE crew's 1,000 mice ran!") == \
        "in nineteen sixty nine forty two percent of the crews one thousand mice ran"
    assert number_to_words(2005) == "two thousand five"
    assert wer("Forty two apples.", "42 apples") == 0.0
    assert wer("one two three four", "one two four five") == 0.5


def _transcript(segments, duration=20.0, device="cpu", wall=2.0):
    return Transcript(text=" ".join(s.text for s in segments), language="en", language_probability=0.99,
                      duration=duration, speech_duration=sum(s.end - s.start for s in segments), segments=segments,
                      model="tiny.en", device=device, compute_type="int8", wall_sec=wall)


def _seg(start, end, text, logprob=-0.2, cr=1.4):
    words, t = [], start
    step = (end - start) / max(1, len(text.split()))
    for w in text.split():
        words.append(Word(round(t, 3), round(t + step, 3), " " + w, 0.9))
        t += step
    return Segment(start, end, text, logprob, 0.05, cr, words)


def test_kpis_figures():
    t = _transcript([_seg(0, 6, "one two three four five six"), _seg(8, 14, "seven eight nine ten", logprob=-1.5)])
    k = compute_kpis(t)
    assert k["words"] == 10 and k["segments"] == 2
    assert k["speech_sec"] == 12 and k["speech_ratio"] == 0.6
    assert k["words_per_minute"] == 50.0
    assert k["low_confidence_share"] == 0.5
    assert k["suspected_hallucination"] is False and k["source"] == "asr"
    assert k["realtime_factor"] == 10.0
    assert k["cost_usd"] > 0
    gpu = compute_kpis(_transcript([_seg(0, 6, "a b")], device="cuda", wall=3600))
    assert gpu["cost_usd"] == 0.30  # run-book: $0.30 per g5.xlarge Spot hour


def test_hallucination_flags():
    assert has_repetition_loop("thank you thank you thank you thank you thank you thank you")
    assert not has_repetition_loop("the cat sat on the mat and the dog sat on the log")
    k = compute_kpis(_transcript([_seg(0, 5, "so so so so so so so so", cr=3.1)]))
    assert k["suspected_hallucination"] is True and k["max_compression_ratio"] == 3.1


def test_subtitles_parse_back_and_respect_line_length(tmp_path):
    long_text = " ".join(f"word{i}" for i in range(60))
    segs = [_seg(0.0, 3.0, "Hello there, welcome to the show."), _seg(3.5, 30.0, long_text)]
    cues = build_cues(segs)
    assert all(len(line) <= MAX_LINE for c in cues for line in c.lines)
    assert all(len(c.lines) <= 2 for c in cues)
    starts = [c.start for c in cues]
    assert starts == sorted(starts) and all(c.end > c.start for c in cues)
    vtt_path = tmp_path / "t.vtt"
    vtt_path.write_text(to_vtt(cues))
    parsed = webvtt.read(str(vtt_path))
    assert len(parsed) == len(cues) and parsed[0].text.startswith("Hello there")
    subs = list(srt.parse(to_srt(cues)))
    assert len(subs) == len(cues) and subs[-1].content.split()[-1] == "word59"
    words = " ".join(s.content.replace("\n", " ") for s in subs).split()
    assert words == " ".join(s.text for s in segs).split()  # nothing lost or repeated
