#!/usr/bin/env python3
"""Regenerate the bundled Pod-Insight demo podcast content.

For every reference text in ``podinsight_dagster/demo/content/texts/<feed>/<episode>.txt``
this script:

1. synthesizes English speech with espeak-ng (voice ``en-us``, ~150 wpm) into a
   temporary WAV file; an episode with a ``dialogue`` is instead spoken turn by turn
   by two voices (espeak-ng ``en-us`` for the host, festival's ``cmu_us_slt_arctic_hts``,
   built from recordings of a real speaker, for the guest), each turn trimmed of silence,
   brought to the same peak level and joined with short pauses; its true turns are
   written beside the text (``<episode>.turns.json``) for the diarization checks;
2. encodes it with ffmpeg/libmp3lame to MP3 (mono, 16 kHz, 32 kbit/s, metadata
   stripped, bit-exact flags) at ``.../content/audio/<feed>/<episode>.mp3``;

and then writes the RSS 2.0 feeds (``.../content/feeds/<feed>.xml``) and the
catalog (``.../content/catalog.yaml``).

All URLs in the feeds and the catalog use the literal placeholder ``{base_url}``,
which the demo server substitutes at serve time.

The item GUIDs deliberately cover awkward cases (URL, spaces/commas/brackets,
unicode, path traversal, very long, ``...``, UUID, and one item with no GUID at
all) so the ingestion code's episode-id handling gets exercised.

Standard library only.  Usage::

    python3 tools/generate_demo_audio.py            # audio + feeds + catalog
    python3 tools/generate_demo_audio.py --feeds-only  # reuse existing MP3s
    python3 tools/generate_demo_audio.py --only science-weekly/ep1  # one episode's audio, all feeds

Tool paths can be overridden with the ESPEAK_NG, TEXT2WAVE, FFMPEG and FFPROBE
environment variables.
"""

from __future__ import annotations

import argparse
import array
import datetime as dt
import email.utils
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import wave
import xml.etree.ElementTree as ET
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

REPO_ROOT = Path(__file__).resolve().parent.parent
CONTENT_DIR = REPO_ROOT / "podinsight_dagster" / "demo" / "content"
TEXTS_DIR = CONTENT_DIR / "texts"
AUDIO_DIR = CONTENT_DIR / "audio"
FEEDS_DIR = CONTENT_DIR / "feeds"
CATALOG_PATH = CONTENT_DIR / "catalog.yaml"

BASE_URL = "{base_url}"  # literal placeholder, replaced by the server at serve time

ESPEAK_VOICE = "en-us"
ESPEAK_SPEED_WPM = "150"

# The two-voice episode: (engine, voice) per role. Clearly different voices (a male espeak voice and
# a female festival voice from real recordings) so the demo shows diarization at work.
DIALOGUE_VOICES = {"host": ("espeak", ESPEAK_VOICE), "guest": ("festival", "cmu_us_slt_arctic_hts")}
DIALOGUE_RATE = 16000
DIALOGUE_PEAK = 0.7          # every turn at the same peak level: loudness must not give the speaker away
DIALOGUE_PAUSE_SEC = 0.7     # between turns

ITUNES_NS = "http://www.itunes.com/dtds/podcast-1.0.dtd"
PODCAST_NS = "https://podcastindex.org/namespace/1.0"

# A very long GUID (exactly 300 characters, checked below).
LONG_GUID = (
    "science-weekly:how-far-away-are-the-stars:"
    "light-travels-three-hundred-thousand-kilometers-every-second-"
    "the-nearest-star-beyond-our-sun-is-more-than-four-light-years-away-"
    "astronomers-measure-parallax-for-nearby-stars-and-use-standard-candles-"
    "for-faraway-galaxies-episode-two-of-three-a-long-id-example"
)
assert len(LONG_GUID) == 300

# Sentinel meaning "emit no <guid> element" (the enclosure URL is the fallback id).
NO_GUID = None

# guid: (text, is_permalink) or NO_GUID.  duration_format: "hms" | "ms" | "s".
FEEDS = [
    {
        "slug": "tech-talk",
        "tier": 1,
        "title": "Tech Talk",
        "author": "Pod-Insight Demo",
        "description": "Short conversations about software and data engineering.",
        "episodes": [
            {
                "id": "ep1",
                "title": "Why Data Pipelines Break",
                "description": "Small scripts grow into fragile pipelines. "
                "We talk about tasks, retries & keeping records.",
                "pub": dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.timezone.utc),
                "guid": ("tt-0001", False),
                "duration_format": "hms",
            },
            {
                "id": "ep2",
                "title": "Tests <That> Protect You",
                "description": "Fast, repeatable tests; edge cases; and why flaky "
                "tests are a real problem, not \"bad luck\".",
                "pub": dt.datetime(2026, 1, 12, 9, 0, tzinfo=dt.timezone.utc),
                "guid": ("https://example.com/episodes/2?id=7&x=y", True),
                "duration_format": "ms",
            },
            {
                "id": "ep3",
                "title": "How Speech Recognition Works",
                "description": "Spectrograms, neural networks and the word error rate.",
                "pub": dt.datetime(2026, 1, 19, 9, 0, tzinfo=dt.timezone.utc),
                "guid": ("6f1c2a9e-3b7d-4e8a-9c51-2d0f7e4b8a13", False),
                "duration_format": "s",
            },
        ],
    },
    {
        "slug": "history-hour",
        "tier": 1,
        "title": "History Hour",
        "author": "Pod-Insight Demo",
        "description": "Stories from the past, told in a few minutes.",
        "episodes": [
            {
                "id": "ep1",
                "title": "The Roads of Rome",
                "description": "From seven hills to a vast empire: roads, bridges and aqueducts.",
                "pub": dt.datetime(2026, 2, 2, 14, 30, tzinfo=dt.timezone.utc),
                "guid": ("History Hour, Episode 1 [remastered]", False),
                "duration_format": "ms",
            },
            {
                "id": "ep2",
                "title": "The Age of Sail",
                "description": "Spices, storms, citrus fruit and the clock that fixed navigation.",
                "pub": dt.datetime(2026, 2, 16, 14, 30, tzinfo=dt.timezone.utc),
                "guid": ("../../etc/passwd", False),
                "duration_format": "s",
            },
            {
                "id": "ep3",
                "title": "The Printing Press",
                "description": "How movable metal type changed what ordinary people could read.",
                "pub": dt.datetime(2026, 3, 2, 14, 30, tzinfo=dt.timezone.utc),
                "guid": NO_GUID,
                "duration_format": "hms",
            },
        ],
    },
    {
        "slug": "science-weekly",
        "tier": 2,
        "title": "Science Weekly",
        "author": "Pod-Insight Demo",
        "description": "A weekly look at the science of everyday life and the universe.",
        "episodes": [
            {
                "id": "ep1",
                "title": "Why We Sleep",
                "description": "Sleep stages, dreaming and memory, with guest Priya Raman.",
                "pub": dt.datetime(2026, 3, 10, 6, 0, tzinfo=dt.timezone.utc),
                "guid": ("épisode-données-三", False),
                "duration_format": "s",
                # A conversation: (role, number of the text's sentences spoken in that turn), in order.
                "dialogue": [("host", 2), ("guest", 1), ("host", 1), ("guest", 2), ("host", 1), ("guest", 1)],
                "persons": [("Alex Morgan", "host"), ("Priya Raman", "guest")],
            },
            {
                "id": "ep2",
                "title": "How Far Away Are the Stars?",
                "description": "The speed of light, parallax and exploding stars as lamps of known power.",
                "pub": dt.datetime(2026, 3, 17, 6, 0, tzinfo=dt.timezone.utc),
                "guid": (LONG_GUID, False),
                "duration_format": "hms",
            },
            {
                "id": "ep3",
                "title": "The Tiny World of Bacteria",
                "description": "Helpful microbes, medicines and antibiotic resistance.",
                "pub": dt.datetime(2026, 3, 24, 6, 0, tzinfo=dt.timezone.utc),
                "guid": ("sw-0003...bacteria...final cut...", False),
                "duration_format": "ms",
            },
        ],
    },
]


def _tool(env_var: str, name: str) -> str:
    path = os.environ.get(env_var) or shutil.which(name)
    if not path:
        sys.exit(f"error: {name} not found (install it or set {env_var})")
    return path


def audio_path(slug: str, episode_id: str) -> Path:
    return AUDIO_DIR / slug / f"{episode_id}.mp3"


def audio_url(slug: str, episode_id: str) -> str:
    return f"{BASE_URL}/audio/{slug}/{episode_id}.mp3"


def _encode_mp3(wav: Path, out_mp3: Path, ffmpeg: str) -> None:
    subprocess.run(
        [
            ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
            "-i", str(wav),
            "-map_metadata", "-1",
            "-fflags", "+bitexact",
            "-flags:a", "+bitexact",
            "-ac", "1",
            "-ar", "16000",
            "-c:a", "libmp3lame",
            "-b:a", "32k",
            str(out_mp3),
        ],
        check=True,
    )


def synthesize(text_file: Path, out_mp3: Path, espeak: str, ffmpeg: str) -> None:
    out_mp3.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="podinsight-demo-") as tmp:
        wav = Path(tmp) / "speech.wav"
        subprocess.run(
            [espeak, "-v", ESPEAK_VOICE, "-s", ESPEAK_SPEED_WPM, "-w", str(wav), "-f", str(text_file)],
            check=True,
        )
        _encode_mp3(wav, out_mp3, ffmpeg)


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s.strip()]


def dialogue_turns(text: str, dialogue: list[tuple[str, int]]) -> list[tuple[str, str]]:
    """(role, text) per turn: the text's sentences handed out in order, every sentence spoken once."""
    sentences = split_sentences(text)
    if sum(n for _, n in dialogue) != len(sentences):
        sys.exit(f"error: the dialogue hands out {sum(n for _, n in dialogue)} sentences, the text has {len(sentences)}")
    turns, k = [], 0
    for role, n in dialogue:
        turns.append((role, " ".join(sentences[k:k + n])))
        k += n
    return turns


def _turn_pcm(role: str, text: str, tmp: Path, tools: dict[str, str]) -> array.array:
    """One turn as 16 kHz mono int16 samples, leading and trailing silence trimmed, at DIALOGUE_PEAK."""
    engine, voice = DIALOGUE_VOICES[role]
    raw, wav = tmp / "turn.raw.wav", tmp / "turn.wav"
    if engine == "espeak":
        subprocess.run([tools["espeak"], "-v", voice, "-s", ESPEAK_SPEED_WPM, "-w", str(raw), text], check=True)
    else:
        txt = tmp / "turn.txt"
        txt.write_text(text, encoding="utf-8")
        subprocess.run([tools["text2wave"], "-eval", f"(voice_{voice})", str(txt), "-o", str(raw)], check=True,
                       capture_output=True)
    subprocess.run([tools["ffmpeg"], "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i", str(raw),
                    "-ac", "1", "-ar", str(DIALOGUE_RATE), "-c:a", "pcm_s16le",
                    "-af", "silenceremove=start_periods=1:start_threshold=-45dB,areverse,"
                           "silenceremove=start_periods=1:start_threshold=-45dB,areverse",
                    str(wav)], check=True)
    with wave.open(str(wav)) as w:
        pcm = array.array("h", w.readframes(w.getnframes()))
    if sys.byteorder == "big":
        pcm.byteswap()
    gain = DIALOGUE_PEAK * 32767 / (max(abs(x) for x in pcm) or 1)
    return array.array("h", (max(-32768, min(32767, round(x * gain))) for x in pcm))


def synthesize_dialogue(text_file: Path, out_mp3: Path, dialogue: list[tuple[str, int]],
                        tools: dict[str, str]) -> list[dict]:
    """Speak the text as a conversation; returns the true turns (start, end in seconds, role, voice)."""
    out_mp3.parent.mkdir(parents=True, exist_ok=True)
    pause = array.array("h", bytes(2 * int(DIALOGUE_PAUSE_SEC * DIALOGUE_RATE)))
    pcm, truth = array.array("h", bytes(2 * int(0.3 * DIALOGUE_RATE))), []
    with tempfile.TemporaryDirectory(prefix="podinsight-demo-") as tmp:
        for i, (role, text) in enumerate(dialogue_turns(text_file.read_text(encoding="utf-8"), dialogue)):
            if i:
                pcm.extend(pause)
            start = len(pcm) / DIALOGUE_RATE
            pcm.extend(_turn_pcm(role, text, Path(tmp), tools))
            truth.append({"start": round(start, 3), "end": round(len(pcm) / DIALOGUE_RATE, 3), "role": role,
                          "voice": "/".join(DIALOGUE_VOICES[role]), "text": text})
        pcm.extend(array.array("h", bytes(2 * int(0.5 * DIALOGUE_RATE))))
        if sys.byteorder == "big":
            pcm.byteswap()
        wav = Path(tmp) / "speech.wav"
        with wave.open(str(wav), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(DIALOGUE_RATE)
            w.writeframes(pcm.tobytes())
        _encode_mp3(wav, out_mp3, tools["ffmpeg"])
    return truth


def probe_duration(mp3: Path, ffprobe: str) -> float:
    result = subprocess.run(
        [ffprobe, "-v", "error", "-show_entries", "format=duration",
         "-of", "default=noprint_wrappers=1:nokey=1", str(mp3)],
        check=True, capture_output=True, text=True,
    )
    return float(result.stdout.strip())


def format_duration(seconds: float, style: str) -> str:
    total = int(round(seconds))
    h, rem = divmod(total, 3600)
    m, s = divmod(rem, 60)
    if style == "hms":
        return f"{h:02d}:{m:02d}:{s:02d}"
    if style == "ms":
        return f"{h * 60 + m:02d}:{s:02d}"
    if style == "s":
        return str(total)
    raise ValueError(f"unknown duration style {style!r}")


def _el(tag: str, text: str, indent: str, attrs: str = "") -> str:
    return f"{indent}<{tag}{attrs}>{escape(text)}</{tag}>\n"


def build_feed(feed: dict, ffprobe: str) -> str:
    slug = feed["slug"]
    out = ['<?xml version="1.0" encoding="UTF-8"?>\n']
    out.append(
        f'<rss version="2.0" xmlns:itunes={quoteattr(ITUNES_NS)} '
        f"xmlns:podcast={quoteattr(PODCAST_NS)}>\n"
    )
    out.append("  <channel>\n")
    out.append(_el("title", feed["title"], "    "))
    out.append(_el("link", f"{BASE_URL}/feeds/{slug}.xml", "    "))
    out.append(_el("description", feed["description"], "    "))
    out.append(_el("language", "en", "    "))
    out.append(_el("itunes:author", feed["author"], "    "))
    out.append(_el("itunes:explicit", "false", "    "))
    for ep in feed["episodes"]:
        mp3 = audio_path(slug, ep["id"])
        size = mp3.stat().st_size
        duration = probe_duration(mp3, ffprobe)
        out.append("    <item>\n")
        out.append(_el("title", ep["title"], "      "))
        out.append(_el("description", ep["description"], "      "))
        out.append(_el("pubDate", email.utils.format_datetime(ep["pub"]), "      "))
        out.append(
            f"      <enclosure url={quoteattr(audio_url(slug, ep['id']))} "
            f'type="audio/mpeg" length="{size}"/>\n'
        )
        out.append(_el("itunes:duration", format_duration(duration, ep["duration_format"]), "      "))
        for name, role in ep.get("persons", []):
            out.append(_el("podcast:person", name, "      ", f" role={quoteattr(role)}"))
        if ep["guid"] is not NO_GUID:
            guid, permalink = ep["guid"]
            # RSS 2.0: isPermaLink defaults to true, so non-URL GUIDs must say false.
            attr = f' isPermaLink="{"true" if permalink else "false"}"'
            out.append(_el("guid", guid, "      ", attr))
        out.append("    </item>\n")
    out.append("  </channel>\n")
    out.append("</rss>\n")
    xml = "".join(out)
    ET.fromstring(xml.encode("utf-8"))  # sanity check: well-formed
    return xml


def build_catalog() -> str:
    lines = ["feeds:"]
    for feed in FEEDS:
        lines.append(f"  - slug: {feed['slug']}")
        lines.append(f'    url: "{BASE_URL}/feeds/{feed["slug"]}.xml"')
        lines.append(f"    tier: {feed['tier']}")
    return "\n".join(lines) + "\n"


def check_texts() -> None:
    expected = {(f["slug"], e["id"]) for f in FEEDS for e in f["episodes"]}
    found = {(p.parent.name, p.stem) for p in TEXTS_DIR.glob("*/*.txt")}
    if expected != found:
        sys.exit(
            "error: texts and episode metadata disagree; "
            f"missing texts: {sorted(expected - found)}, "
            f"texts without metadata: {sorted(found - expected)}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--feeds-only", action="store_true",
                        help="do not re-synthesize audio; rebuild feeds and catalog from existing MP3s")
    parser.add_argument("--only", action="append", metavar="FEED/EPISODE",
                        help="re-synthesize only this episode (repeatable), e.g. science-weekly/ep1")
    args = parser.parse_args(argv)

    check_texts()
    ffprobe = _tool("FFPROBE", "ffprobe")
    if not args.feeds_only:
        espeak = _tool("ESPEAK_NG", "espeak-ng")
        ffmpeg = _tool("FFMPEG", "ffmpeg")
        for feed in FEEDS:
            for ep in feed["episodes"]:
                if args.only and f"{feed['slug']}/{ep['id']}" not in args.only:
                    continue
                text_file = TEXTS_DIR / feed["slug"] / f"{ep['id']}.txt"
                mp3 = audio_path(feed["slug"], ep["id"])
                if ep.get("dialogue"):
                    tools = {"espeak": espeak, "ffmpeg": ffmpeg, "text2wave": _tool("TEXT2WAVE", "text2wave")}
                    truth = synthesize_dialogue(text_file, mp3, ep["dialogue"], tools)
                    turns_file = text_file.with_suffix(".turns.json")
                    turns_file.write_text(json.dumps({"persons": {role: name for name, role in ep["persons"]},
                                                      "turns": truth}, indent=1, ensure_ascii=False) + "\n",
                                          encoding="utf-8")
                else:
                    synthesize(text_file, mp3, espeak, ffmpeg)
                print(f"audio  {mp3.relative_to(REPO_ROOT)}  "
                      f"{probe_duration(mp3, ffprobe):6.2f}s  {mp3.stat().st_size} bytes")

    FEEDS_DIR.mkdir(parents=True, exist_ok=True)
    for feed in FEEDS:
        path = FEEDS_DIR / f"{feed['slug']}.xml"
        path.write_text(build_feed(feed, ffprobe), encoding="utf-8")
        print(f"feed   {path.relative_to(REPO_ROOT)}")
    CATALOG_PATH.write_text(build_catalog(), encoding="utf-8")
    print(f"catalog {CATALOG_PATH.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
