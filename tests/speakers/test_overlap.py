"""Overlapped speech: two voices talking over each other are marked (segments.json, VTT) and both keep their words.

The episodes are synthesised (tests/support/voices.py): the same eight lines by two voices, once with two
stretches talked over (1.5-2 s, the voices summed) and once taking turns; tiny.en transcribes them, as the
transcript step would, and the speakers step and the segments step run on the stack.
"""

import json

import pytest

from podinsight_dagster.fetch.catalog import Catalog, FeedSpec
from podinsight_dagster.fetch.discover import discover
from podinsight_dagster.services import build_services
from podinsight_dagster.settings import Settings
from podinsight_dagster.speakers.steps import RECOVERED_MIN_PROBABILITY, diarize_episode
from podinsight_dagster.store import layout
from podinsight_dagster.store.keys import EpisodeKey
from podinsight_dagster.transcribe.steps import write_segments
from tests.speakers.test_evidence import feed_xml
from tests.support.voices import ESPEAK_VOICES as E, FESTIVAL_VOICES as F, make_overlap_episode, overlapped_spans, \
    sentences

VOICES = [F[1], E[3]]


def _script(overlap: bool):
    lines = sentences()[30:38]
    talk_over = {3: 2.0, 6: 1.5} if overlap else {}
    return [(i % 2, text, talk_over.get(i, 0.0)) for i, text in enumerate(lines)]


@pytest.fixture
def services(settings):
    return build_services(Settings.from_env())


def _on_stack(services, cdn, slug, ep, tmp_path) -> str:
    """A one-episode feed whose audio is ``ep``, transcribed by the pipeline's transcriber (tiny.en)."""
    cdn.add_file(f"/{slug}.xml", feed_xml(slug, []), "application/rss+xml")
    [pk] = discover(services, Catalog(feeds=[FeedSpec(slug, cdn.url(f"/{slug}.xml"), 1)])).new_partition_keys
    ek = EpisodeKey.parse(pk)
    mp3 = ep.write_mp3(tmp_path / f"{slug}.mp3")
    [(_, transcript)] = list(services.transcriber.transcribe([mp3]))
    assert not isinstance(transcript, Exception), transcript
    services.raw.put_file(layout.audio_key(ek), mp3)
    services.raw.put_json(layout.meta_key(ek), {"audio_key": layout.audio_key(ek)})
    services.stage.put_json(layout.transcript_key(ek), transcript.to_dict())
    return pk


def _outputs(services, pk):
    ek = EpisodeKey.parse(pk)
    rows = [json.loads(line) for line in services.stage.get_bytes(layout.segments_key(ek)).decode().splitlines()]
    return rows, services.stage.get_bytes(layout.vtt_key(ek)).decode(), services.stage.get_json(
        layout.transcript_key(ek))


def _cue_spans(vtt: str):
    """(start, end, text) of every cue."""
    def sec(ts):
        h, m, s = ts.split(":")
        return int(h) * 3600 + int(m) * 60 + float(s)
    out = []
    for block in vtt.split("\n\n")[1:]:
        lines = block.strip().splitlines()
        if len(lines) >= 3 and "-->" in lines[1]:
            a, b = lines[1].split(" --> ")
            out.append((sec(a), sec(b), "\n".join(lines[2:])))
    return out


def _meets(a, b, c, d, slack=0.0):
    return a < d + slack and c < b + slack


def test_talking_over_is_marked_and_both_voices_keep_their_words(services, demo_cdn, voice_cache, tmp_path):
    ep = make_overlap_episode(VOICES, _script(True), voice_cache)
    truth = overlapped_spans(ep)
    pk = _on_stack(services, demo_cdn, "crosstalk", ep, tmp_path)
    out = diarize_episode(services, pk)
    write_segments(services, pk)
    rows, vtt, doc = _outputs(services, pk)
    assert out["num_speakers"] == 2
    names = {s["name"] for s in out["speakers"]}
    report = out["overlap"]
    print(json.dumps(report, indent=1), truth)
    # Marked: regions in speakers.json, most of whose time is truly overlapped; marked segments with both voices.
    assert report["regions"] and report["overlap_sec"] > 0
    true_marked = sum(max(0.0, min(r["end"], e) - max(r["start"], s)) for r in report["regions"] for s, e in truth)
    assert true_marked >= 0.5 * report["overlap_sec"]
    marked = [r for r in rows if r.get("overlap")]
    assert marked and all(set(r["speakers"]) == names for r in marked)
    assert any(_meets(r["start_sec"], r["end_sec"], s, e) for r in marked for s, e in truth)
    # The VTT names both voices at a truly overlapped time (two cues at once, or a cue's [crosstalk] line).
    voices = {f"<v {n}>" for n in names}
    for s, e in truth:
        at = " ".join(text for a, b, text in _cue_spans(vtt) if _meets(a, b, s, e))
        if all(v in at for v in voices):
            break
    else:
        pytest.fail(f"no overlapped stretch {truth} names both voices in the VTT:\n{vtt}")
    # The region was heard again and words the first pass lacks were found there: kept when the model was sure
    # of them (RECOVERED_MIN_PROBABILITY; tiny.en on these synthetic voices mostly is not), given to a voice of
    # the region, without repeating the first pass's; unsure runs are counted, not kept.
    assert report["recovered_words"] > 0 or report.get("unsure_runs", 0) > 0
    recovered = [seg for seg in doc["segments"] if seg.get("recovered")]
    assert bool(recovered) == (report["recovered_words"] > 0)
    assert all(seg["overlap"] and seg["speaker"] in names for seg in recovered)
    assert all(sum(w["probability"] for w in seg["words"]) / len(seg["words"]) >= RECOVERED_MIN_PROBABILITY
               for seg in recovered)
    near = {w["speaker"] for seg in doc["segments"] for w in seg["words"]
            for s, e in truth if _meets(w["start"], w["end"], s, e, slack=2.0)}
    assert near == names
    first = [(w["start"], w["word"].strip().lower()) for seg in doc["segments"] if not seg.get("recovered")
             for w in seg["words"]]
    again = [(w["start"], w["word"].strip().lower()) for seg in recovered for w in seg["words"]]
    assert not [w for w in again if any(abs(w[0] - f[0]) < 0.5 and w[1] == f[1] for f in first)]


def test_turn_taking_marks_no_overlap(services, demo_cdn, voice_cache, tmp_path):
    ep = make_overlap_episode(VOICES, _script(False), voice_cache)
    assert overlapped_spans(ep) == []
    pk = _on_stack(services, demo_cdn, "turns", ep, tmp_path)
    out = diarize_episode(services, pk)
    write_segments(services, pk)
    rows, vtt, _ = _outputs(services, pk)
    assert out["num_speakers"] == 2
    print(json.dumps(out["overlap"], indent=1))
    assert out["overlap"]["overlap_sec"] <= 1.0 and out["overlap"]["recovered_words"] == 0
    assert sum(r["end_sec"] - r["start_sec"] for r in rows if r.get("overlap")) <= 0.1 * ep.duration

    # The voices made while a podrun run's transcript step goes on (transcribe/ahead.py) are the step's own:
    # diarized again from them, the episode gets the same speakers.json.
    import threading

    from podinsight_dagster.speakers.steps import prepare_episode
    from podinsight_dagster.transcribe.ahead import AHEAD
    from podinsight_dagster.transcribe.audio import decode
    from podinsight_dagster.transcribe.steps import decoded_key

    ek = EpisodeKey.parse(pk)
    doc = services.stage.get_json(layout.transcript_key(ek))
    audio_key = layout.audio_key(ek)
    started = threading.Event()

    def audio():
        started.set()
        with services.raw.local_copy(audio_key) as path:
            return decode(path)

    AHEAD.submit_voices(decoded_key(services, audio_key, services.raw.size(audio_key)),
                        [(s["start"], s["end"]) for s in doc["segments"]], audio)
    started.wait(30)
    prepared = prepare_episode(services, pk)
    assert prepared.ahead
    again = diarize_episode(services, pk, prepared)
    assert (again["num_speakers"], again["segment_speakers"]) == (out["num_speakers"], out["segment_speakers"])
    assert {k: v for k, v in again["overlap"].items() if k != "wall_sec"} == \
        {k: v for k, v in out["overlap"].items() if k != "wall_sec"}


def test_a_second_hearing_adds_only_words_the_first_pass_lacks():
    from podinsight_dagster.speakers.overlap import Overlap, clip_span, new_word_runs

    region = Overlap(10.8, 12.5, (0, 1))
    first = [(10.0, 10.4, " Light"), (10.5, 10.9, " travels"), (11.0, 11.5, " faster."), (14.0, 14.3, " When"), (14.4, 14.8, " you")]
    heard = [(10.05, 10.4, " light"), (10.5, 10.9, " travels"), (11.0, 11.3, " fast"),     # heard again, near spelling
             (11.4, 11.8, " Even"), (11.9, 12.2, " so."),                                 # lost under the first voice
             (12.3, 12.6, " the"),                                                        # a lone word: not kept
             (13.9, 14.4, " Wen"), (14.5, 14.9, " you"),   # outside the region, at the first pass's time: re-heard
             (15.5, 15.9, " four"), (16.0, 16.4, " years")]                               # the lost line goes on alone
    assert new_word_runs(first, heard, region) == [[3, 4], [8, 9]]
    start, end = clip_span(region, [(9.9, 11.6), (13.9, 20.0), (30.0, 35.0)])
    assert (start, end) == (9.9, 16.5)         # the segment it touches, and 4 s past the region
