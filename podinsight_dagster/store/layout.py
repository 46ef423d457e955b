"""The run-book's object layout (§2), in one place.

raw:   <feed_slug>/<guid_key>/audio/episode.mp3, meta/meta.json
stage: <feed_slug>/<guid_key>/transcripts/transcript.json (+ .vtt, .srt),
       transcripts/podcast-transcript.json, podcast-transcript.srt (Podcasting 2.0 formats),
       segments/segments.json, kpis/kpis.json, speakers/speakers.json, chapters/chapters.json,
       chapters/soundbites.json (podcast:soundbite candidates)
       <feed_slug>/_speakers/voiceprints.json (the feed's known voices)
"""

from __future__ import annotations

from podinsight_dagster.store.keys import EpisodeKey


def audio_key(ek: EpisodeKey, ext: str = "mp3") -> str:
    return f"{ek}/audio/episode.{ext}"


def meta_key(ek: EpisodeKey) -> str:
    return f"{ek}/meta/meta.json"


def transcript_key(ek: EpisodeKey) -> str:
    return f"{ek}/transcripts/transcript.json"


def vtt_key(ek: EpisodeKey) -> str:
    return f"{ek}/transcripts/transcript.vtt"


def srt_key(ek: EpisodeKey) -> str:
    return f"{ek}/transcripts/transcript.srt"


def podcast_json_key(ek: EpisodeKey) -> str:
    """The transcript in the podcast:transcript JSON format."""
    return f"{ek}/transcripts/podcast-transcript.json"


def podcast_srt_key(ek: EpisodeKey) -> str:
    """The transcript as SRT by the podcast:transcript rules (2 lines of 32 characters, names at changes)."""
    return f"{ek}/transcripts/podcast-transcript.srt"


def segments_key(ek: EpisodeKey) -> str:
    return f"{ek}/segments/segments.json"


def kpis_key(ek: EpisodeKey) -> str:
    return f"{ek}/kpis/kpis.json"


def speakers_key(ek: EpisodeKey) -> str:
    return f"{ek}/speakers/speakers.json"


def chapters_key(ek: EpisodeKey) -> str:
    return f"{ek}/chapters/chapters.json"


def soundbites_key(ek: EpisodeKey) -> str:
    """Up to 3 podcast:soundbite candidates (chapters asset)."""
    return f"{ek}/chapters/soundbites.json"


def voiceprints_key(feed_slug: str) -> str:
    return f"{feed_slug}/_speakers/voiceprints.json"
