"""Diarization on generated multi-speaker episodes: error within bounds, speaker count, names across episodes."""

import numpy as np
import pytest

from podinsight_dagster.speakers.cluster import cluster_speakers
from podinsight_dagster.speakers.metrics import diarization_error
from podinsight_dagster.speakers.names import Person, name_speakers, update_prints
from tests.support.voices import ESPEAK_VOICES, FESTIVAL_VOICES, make_episode

MAX_ERROR_2 = 0.10   # the target on two-speaker episodes
MAX_ERROR_N = 0.15


def _diarize(encoder, ep, num_speakers=None):
    spans = [(s, e) for s, e, _, _ in ep.sentences]
    emb = encoder.embed_spans(ep.audio, spans)
    result = cluster_speakers(emb, np.array([e - s for s, e in spans]), num_speakers=num_speakers)
    hyp = [(s, e, int(lab)) for (s, e), lab in zip(spans, result.labels)]
    ref = [(s, e, k) for s, e, k, _ in ep.sentences]
    return result, diarization_error(ref, hyp)


@pytest.mark.parametrize("voices,seed", [
    ([ESPEAK_VOICES[0], ESPEAK_VOICES[1]], 1),          # espeak's two closest voices
    ([ESPEAK_VOICES[2], FESTIVAL_VOICES[0]], 2),
    ([FESTIVAL_VOICES[0], FESTIVAL_VOICES[2]], 3),       # two male diphone voices from recordings
    ([FESTIVAL_VOICES[1], ESPEAK_VOICES[3]], 4),
])
def test_two_speakers_found_and_error_within_bound(encoder, voice_cache, voices, seed):
    ep = make_episode(voices, 75, voice_cache, seed=seed)
    result, error = _diarize(encoder, ep)
    assert result.labels.max() + 1 == 2
    assert error <= MAX_ERROR_2


@pytest.mark.parametrize("voices", [
    [ESPEAK_VOICES[0], FESTIVAL_VOICES[1], FESTIVAL_VOICES[0]],
    [ESPEAK_VOICES[2], ESPEAK_VOICES[3], FESTIVAL_VOICES[1], FESTIVAL_VOICES[2]],
])
def test_three_and_four_speakers_with_the_count_given_or_estimated(encoder, voice_cache, voices):
    ep = make_episode(voices, 100, voice_cache, seed=len(voices))
    given, error = _diarize(encoder, ep, num_speakers=len(voices))
    assert given.labels.max() + 1 == len(voices) and error <= MAX_ERROR_N
    estimated, error = _diarize(encoder, ep)
    assert estimated.labels.max() + 1 == len(voices) and error <= MAX_ERROR_N


@pytest.mark.parametrize("voice", [ESPEAK_VOICES[0], FESTIVAL_VOICES[1]])
def test_one_voice_is_one_speaker(encoder, voice_cache, voice):
    ep = make_episode([voice], 60, voice_cache, seed=5)
    result, error = _diarize(encoder, ep)
    assert result.labels.max() == 0 and error == 0.0


def test_error_metric_matches_labels_whatever_their_names():
    ref = [(0, 10, "a"), (10, 20, "b")]
    assert diarization_error(ref, [(0, 10, 7), (10, 20, 3)]) == 0.0
    assert diarization_error(ref, [(0, 20, 1)]) == pytest.approx(0.5, abs=0.01)
    assert diarization_error(ref, [(0, 5, 1), (5, 20, 2)]) == pytest.approx(0.25, abs=0.01)
    assert diarization_error(ref, []) == 1.0


def test_host_recognised_in_a_later_episode_by_voice_print(encoder, voice_cache):
    persons = [Person("Ada Host", "host"), Person("Bo Guest", "guest")]
    first = make_episode([FESTIVAL_VOICES[0], ESPEAK_VOICES[1]], 60, voice_cache, seed=11)
    res, _ = _diarize(encoder, first)
    # The words, as the transcript would have them: the first voice introduces itself.
    texts = ["Hello, I'm Ada Host."] + [t for _, _, _, t in first.sentences[1:]]
    names = name_speakers(res.centroids, [int(x) for x in res.labels], persons, [], texts=texts)
    intro_voice = first.voices[first.sentences[0][2]]          # the host speaks the intro
    guest_voice = next(v for v in first.voices if v != intro_voice)
    assert names[int(res.labels[0])].name == "Ada Host" and names[int(res.labels[0])].source == "self-introduction"
    assert {(n.name, n.source) for n in names} == {("Ada Host", "self-introduction"), ("Bo Guest", "one-left")}
    talk = [float(sum(e - s for (s, e, _, _), lab in zip(first.sentences, res.labels) if lab == c)) for c in range(2)]
    prints = update_prints([], res.centroids, names, talk)
    assert {p.name for p in prints} == {"Ada Host"}     # the one-left deduction teaches no print

    # Next episode: no podcast:person, a new voice beside the host's; the feed's prints name the host.
    new_voice = FESTIVAL_VOICES[1]
    second = make_episode([new_voice, intro_voice], 60, voice_cache, seed=12)
    res2, _ = _diarize(encoder, second)
    names2 = name_speakers(res2.centroids, [int(x) for x in res2.labels], [], prints)
    label_of = {second.voices[k]: int(lab) for (_, _, k, _), lab in zip(second.sentences, res2.labels)}
    assert names2[label_of[intro_voice]].name == "Ada Host"
    assert names2[label_of[intro_voice]].source == "voiceprint"
    assert names2[label_of[new_voice]].name.startswith("Speaker ")
    assert guest_voice not in second.voices


def test_names_fall_back_to_numbered_speakers_without_evidence():
    cents = np.eye(3, 8, dtype=np.float32)
    duo = [Person("Host A", "host"), Person("Guest B", "guest")]
    # Who speaks first is no evidence: two voices, two people, nothing said: numbered.
    assert [n.name for n in name_speakers(cents[:2], [0, 1, 0], duo, [])] == ["Speaker 1", "Speaker 2"]
    assert [n.name for n in name_speakers(cents[:2], [0, 1], [], [])] == ["Speaker 1", "Speaker 2"]
    # The host opens the show: named; the one voice left is the one person left.
    names = name_speakers(cents[:2], [1, 0, 1], duo, [], texts=["Welcome to the show.", "Hi.", "So."])
    assert [(n.name, n.source) for n in names] == [("Guest B", "one-left"), ("Host A", "opening")]
    # Three voices, one of them the host: the other two stay numbered.
    names = name_speakers(cents, [1, 0, 2], duo, [], texts=["Welcome to the show.", "Hi.", "Hello."])
    assert [n.name for n in names] == ["Speaker 1", "Host A", "Speaker 3"]
