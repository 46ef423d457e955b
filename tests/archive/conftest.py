"""Stage files for the archive tests, written by the pipeline's own steps (write_segments, write_kpis)."""

from __future__ import annotations

import hashlib

import pytest

from podinsight_dagster.services import build_services
from podinsight_dagster.store import layout
from podinsight_dagster.store.checkpoints import EpisodeRecord
from podinsight_dagster.store.keys import EpisodeKey
from podinsight_dagster.transcribe.options import Segment, Transcript
from podinsight_dagster.transcribe.steps import write_kpis, write_segments

EPISODES = {
    "tech-talk/tt-0001": ("Rust in production", [
        (0.0, 4.0, "Welcome to tech talk."),
        (4.0, 9.5, "Today we talk about memory safety in Rust."),
        (9.5, 15.0, "The borrow checker keeps us honest.")]),
    "tech-talk/tt-0002": ("Databases", [
        (0.0, 5.0, "Columnar databases read only the columns a query needs."),
        (5.0, 12.0, "DuckDB runs inside the process.")]),
    "garden-hour/gh-0001": ("Tomatoes", [
        (0.0, 6.0, "Tomatoes want sun and water."),
        (6.0, 40.0, "Memory of last summer: the borrow of a neighbour's ladder.")]),
}


def stage_episode(services, pk: str, title: str, segs: list[tuple[float, float, str]], published: str,
                  wall_sec: float = 2.0) -> None:
    """Raw meta.json, transcript.json, then segments.json and kpis.json through the real steps."""
    ek = EpisodeKey.parse(pk)
    url = f"https://cdn.example/{pk}.mp3"
    services.checkpoints.register_episodes([EpisodeRecord(partition_key=pk, feed_slug=ek.feed_slug,
                                                          guid_key=ek.guid_key, title=title, enclosure_url=url,
                                                          published=published)])
    audio = layout.audio_key(ek)
    services.raw.put_bytes(audio, b"ID3fake")
    services.checkpoints.mark_downloaded(pk, bytes=7, sha256=hashlib.sha256(b"ID3fake").hexdigest())
    services.raw.put_json(layout.meta_key(ek), {
        "partition_key": pk, "feed_slug": ek.feed_slug, "guid": ek.guid_key, "guid_key": ek.guid_key,
        "title": title, "published": published, "enclosure_url": url, "audio_key": audio, "bytes": 7,
        "duration_sec": segs[-1][1], "transcript_key": None})
    segments = [Segment(s, e, text, -0.3, 0.02, 1.3) for s, e, text in segs]
    t = Transcript(text=" ".join(s.text for s in segments), language="en", language_probability=0.98,
                   duration=segs[-1][1], speech_duration=sum(e - s for s, e, _ in segs), segments=segments,
                   model="tiny.en", device="cpu", compute_type="int8", wall_sec=wall_sec)
    services.stage.put_json(layout.transcript_key(ek), {
        "partition_key": pk, "feed_slug": ek.feed_slug, "guid": ek.guid_key, "guid_key": ek.guid_key,
        "title": title, "audio_key": audio, **t.to_dict()})
    write_segments(services, pk)
    write_kpis(services, pk)


@pytest.fixture
def staged(settings):
    """Three transcribed episodes of two feeds in the local stage layout; yields the services."""
    services = build_services(settings)
    for n, (pk, (title, segs)) in enumerate(EPISODES.items()):
        stage_episode(services, pk, title, segs, published=f"2026-0{n + 1}-15T08:00:00Z")
    try:
        yield services
    finally:
        services.close()
