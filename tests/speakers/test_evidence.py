"""Who spoke, with evidence: counts from the audio (the feed's people a bound), names only where something says so.

Episodes are synthesised sentence by sentence (tests/support/voices.py), so each sentence's span and
words are known: the transcript written for the step is the script (what is under test is the
counting and naming, not ASR).
"""

import json

import numpy as np
import pytest

from podinsight_dagster.checks import speaker_count
from podinsight_dagster.fetch.catalog import Catalog, FeedSpec
from podinsight_dagster.fetch.discover import discover
from podinsight_dagster.services import build_services
from podinsight_dagster.settings import Settings
from podinsight_dagster.speakers.steps import diarize_episode
from podinsight_dagster.store import layout
from podinsight_dagster.store.keys import EpisodeKey
from podinsight_dagster.transcribe.options import Segment, Transcript
from tests.support.voices import ESPEAK_VOICES as E, FESTIVAL_VOICES as F, SR, Episode, sentences, synth

PANEL_VOICES = [E[2], E[3], F[1], F[2]]     # the four-voice set test_diarization estimates right
PANEL = [("Maya Lin", "host"), ("Tom Baker", "co-host"), ("Priya Raman", "guest"), ("Omar Haddad", "guest")]


def scripted(voices, script, cache) -> Episode:
    """An episode from (voice index, [sentences]) turns: 0.3 s between sentences, 0.6 s between turns."""
    ep = Episode(np.zeros(0, dtype=np.float32), voices)
    parts, t = [], 0.0
    for spk, lines in script:
        start = t
        for j, text in enumerate(lines):
            if j:
                parts.append(np.zeros(int(0.3 * SR), dtype=np.float32))
                t += 0.3
            audio = synth(*voices[spk], text, cache)
            parts.append(audio)
            ep.sentences.append((round(t, 3), round(t + len(audio) / SR, 3), spk, text))
            t += len(audio) / SR
        ep.turns.append((round(start, 3), round(t, 3), spk))
        parts.append(np.zeros(int(0.6 * SR), dtype=np.float32))
        t += 0.6
    ep.audio = np.concatenate(parts)
    return ep


def panel_script(introductions: bool) -> list:
    pool = sentences()[:14]
    f = iter(pool)
    intro = introductions
    return [
        (0, (["Hello everyone, I'm Maya Lin."] if intro else []) + [next(f), next(f)]),
        (1, (["And I'm Tom Baker, your co-host."] if intro else []) + [next(f)]),
        (0, [next(f)] + (["Welcome, Priya."] if intro else [])),
        (2, [next(f), next(f)]),
        (1, (["Thanks, Priya."] if intro else []) + [next(f)] + (["Omar, welcome."] if intro else [])),
        (3, [next(f), next(f)]),
        (0, [next(f)]),
        (2, [next(f)]),
        (3, [next(f), next(f)]),
    ]


def feed_xml(slug: str, persons) -> bytes:
    people = "".join(f'<podcast:person role="{role}">{name}</podcast:person>' for name, role in persons)
    return f"""<?xml version="1.0"?>
<rss version="2.0" xmlns:podcast="https://podcastindex.org/namespace/1.0">
<channel><title>{slug}</title>
<item><title>One</title><guid>{slug}-1</guid><enclosure url="https://x.test/{slug}.mp3" type="audio/mpeg" length="1"/>
  {people}</item>
</channel></rss>""".encode()


def on_stack(services, cdn, slug, persons, ep, tmp_path, publisher_speaker=None) -> str:
    """Discover a one-episode feed listing ``persons``, store ``ep``'s audio and its script as the transcript."""
    cdn.add_file(f"/{slug}.xml", feed_xml(slug, persons), "application/rss+xml")
    [pk] = discover(services, Catalog(feeds=[FeedSpec(slug, cdn.url(f"/{slug}.xml"), 1)])).new_partition_keys
    ek = EpisodeKey.parse(pk)
    services.raw.put_file(layout.audio_key(ek), ep.write_mp3(tmp_path / f"{slug}.mp3"))
    services.raw.put_json(layout.meta_key(ek), {"audio_key": layout.audio_key(ek)})
    segs = [Segment(s, e, text, None if publisher_speaker else -0.2, None if publisher_speaker else 0.01, 1.2,
                    speaker=publisher_speaker) for s, e, _, text in ep.sentences]
    t = Transcript(" ".join(s.text for s in segs), "en", 1.0, ep.duration, ep.duration, segs, "tiny.en", "cpu",
                   "int8", 1.0, source="publisher" if publisher_speaker else "asr")
    services.stage.put_json(layout.transcript_key(ek), t.to_dict())
    return pk


def who_is_who(services, pk, ep) -> dict[int, str]:
    """The name most of each true voice's speech got."""
    segs = services.stage.get_json(layout.transcript_key(EpisodeKey.parse(pk)))["segments"]
    talk: dict[int, dict[str, float]] = {}
    for (s, e, k, _), seg in zip(ep.sentences, segs):
        talk.setdefault(k, {}).setdefault(seg["speaker"], 0.0)
        talk[k][seg["speaker"]] += e - s
    return {k: max(v, key=v.get) for k, v in talk.items()}


@pytest.fixture
def services(settings):
    return build_services(Settings.from_env())


def test_a_panel_with_introductions_names_every_host_and_guest(services, demo_cdn, voice_cache, tmp_path):
    ep = scripted(PANEL_VOICES, panel_script(True), voice_cache)
    pk = on_stack(services, demo_cdn, "panel-talk", PANEL, ep, tmp_path)
    out = diarize_episode(services, pk)
    assert out["num_speakers"] == 4 and out["count_source"] == "estimated" and out["count_bound"] == 4
    assert who_is_who(services, pk, ep) == {i: name for i, (name, _) in enumerate(PANEL)}
    evidence = {s["name"]: {e["source"] for e in s["evidence"]} for s in out["speakers"]}
    assert evidence == {"Maya Lin": {"self-introduction"}, "Tom Baker": {"self-introduction"},
                        "Priya Raman": {"welcomed", "thanked"}, "Omar Haddad": {"welcomed"}}
    said = {s["name"]: [e["detail"] for e in s["evidence"]] for s in out["speakers"]}
    assert said["Maya Lin"] == ["Hello everyone, I'm Maya Lin."]
    prints = services.stage.get_json(layout.voiceprints_key("panel-talk"))["prints"]
    assert {p["name"] for p in prints} == {name for name, _ in PANEL}


def test_a_panel_without_introductions_stays_numbered(services, demo_cdn, voice_cache, tmp_path):
    ep = scripted(PANEL_VOICES, panel_script(False), voice_cache)
    pk = on_stack(services, demo_cdn, "quiet-panel", PANEL, ep, tmp_path)
    out = diarize_episode(services, pk)
    assert out["num_speakers"] == 4
    assert all(s["name"].startswith("Speaker ") and s["evidence"] == [] for s in out["speakers"])
    assert "feed_voiceprints" not in out
    with pytest.raises(FileNotFoundError):
        services.stage.get_json(layout.voiceprints_key("quiet-panel"))


@pytest.mark.parametrize("says_who", [False, True])
def test_one_voice_and_two_listed_people_is_one_speaker(services, demo_cdn, voice_cache, tmp_path, says_who):
    lines = ["Hello world."] + (["I'm Jane Host."] if says_who else []) + sentences()[20:23]
    ep = scripted([F[0]], [(0, lines)], voice_cache)
    slug = f"solo-{int(says_who)}"
    pk = on_stack(services, demo_cdn, slug, [("Jane Host", "host"), ("Bob Guest", "guest")], ep, tmp_path)
    out = diarize_episode(services, pk)
    assert out["num_speakers"] == 1 and out["count_bound"] == 2
    [only] = out["speakers"]
    if says_who:
        assert only["name"] == "Jane Host" and only["source"] == "self-introduction"
        prints = services.stage.get_json(layout.voiceprints_key(slug))["prints"]
        assert [p["name"] for p in prints] == ["Jane Host"]        # never Bob Guest's
    else:
        assert only["name"] == "Speaker 1" and "feed_voiceprints" not in out
    assert services.checkpoints.get(pk).speaker_issue == "diarization found one speaker but the feed lists 2"


def test_speaker_count_fails_when_the_audio_disagrees_with_the_publisher_transcript(services, demo_cdn, voice_cache,
                                                                                    tmp_path):
    from tests.test_checks_and_budget import _run

    assert _run(speaker_count).passed
    ep = scripted([F[0], E[1]], [(0, sentences()[30:32]), (1, sentences()[32:34]), (0, sentences()[34:35]),
                                 (1, sentences()[35:37])], voice_cache)
    pk = on_stack(services, demo_cdn, "pub-duo", [], ep, tmp_path, publisher_speaker="Ada Host")
    out = diarize_episode(services, pk)
    assert out["method"] == "publisher" and out["num_speakers"] == 1 and out["audio_num_speakers"] == 2
    assert json.loads(json.dumps(out["speakers"]))[0]["name"] == "Ada Host"     # the publisher's names stand
    result = _run(speaker_count)
    assert not result.passed and list(result.metadata["episodes"].value) == [pk]


def test_names_heard_misspelt_and_first_names_shared():
    from podinsight_dagster.speakers.names import Person, name_speakers

    cents = np.eye(3, 8, dtype=np.float32)
    people = [Person("Priya Raman", "host"), Person("Priya Shah", "guest"), Person("Omar Haddad", "guest")]
    # ASR's spelling of names it does not know; "Priya" alone names nobody (two candidates share it), a last
    # name does; the voice left is the person left.
    texts = ["Hello, I'm Pria Ramen.", "Thanks, Priya.", "Welcome, Hadad.", "Good to be here."]
    names = name_speakers(cents, [0, 1, 1, 2], people, [], texts=texts)
    assert [(n.name, n.source) for n in names] == [("Priya Raman", "self-introduction"), ("Priya Shah", "one-left"),
                                                   ("Omar Haddad", "welcomed")]
    three = people + [Person("Ann Poe", "guest")]
    assert name_speakers(cents, [0, 1, 1, 2], three, [], texts=texts)[1].name == "Speaker 2"
    assert names[0].evidence[0].detail == "Hello, I'm Pria Ramen." and names[2].evidence[0].segment == 2


def test_a_publisher_transcript_without_readable_audio_keeps_its_names(services, demo_cdn, tmp_path):
    demo_cdn.add_file("/pub-solo.xml", feed_xml("pub-solo", []), "application/rss+xml")
    [pk] = discover(services, Catalog(feeds=[FeedSpec("pub-solo", demo_cdn.url("/pub-solo.xml"), 1)])).new_partition_keys
    ek = EpisodeKey.parse(pk)
    services.raw.put_bytes(layout.audio_key(ek), b"not audio at all", "audio/mpeg")
    services.raw.put_json(layout.meta_key(ek), {"audio_key": layout.audio_key(ek)})
    segs = [Segment(0.0, 2.0, "Hello.", None, None, 1.0, speaker="Ada Host"),
            Segment(2.0, 4.0, "Hi.", None, None, 1.0, speaker="Bo Guest")]
    services.stage.put_json(layout.transcript_key(ek), Transcript(
        "Hello. Hi.", "en", 1.0, 4.0, 4.0, segs, "tiny.en", "cpu", "int8", 1.0, source="publisher").to_dict())
    out = diarize_episode(services, pk)
    assert [s["name"] for s in out["speakers"]] == ["Ada Host", "Bo Guest"] and "audio_num_speakers" not in out
    assert "cannot decode audio" in out["audio_unread"] and services.checkpoints.get(pk).speaker_issue is None
