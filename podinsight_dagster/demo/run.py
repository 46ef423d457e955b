"""``podrun demo``: the whole pipeline, offline, on the bundled sample podcasts.

Starts the bundled feeds and audio on a loopback server (demo/server.py), writes a
catalog that points at it, then runs the real Dagster jobs on the local instance
under PODINSIGHT_HOME: ingest_catalog (feeds, episode_manifest) and
episode_pipeline (raw_audio, transcript, speakers, chapters, segments, kpis) over
the new episode partitions. The summary shows, per episode, its word error rate against
the script it was synthesised from and the speakers found (count and names). ``make ui`` afterwards shows the same instance.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

import yaml

from podinsight_dagster.store import layout
from podinsight_dagster.store.keys import EpisodeKey
from podinsight_dagster.settings import Settings
from podinsight_dagster.transcribe.text import wer
from podinsight_dagster.demo.server import DemoServer

CONTENT = Path(__file__).parent / "content"
DEMO_NETWORKS = "127.0.0.1/32"
# Runs print only warnings and errors to the terminal; the full event log is in the UI.
# A fixed port when free keeps the demo's enclosure URLs, and so the key of its one GUID-less
# episode (derived from the URL), the same from one demo run to the next.
DEMO_PORT = 47800
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass
class EpisodeRow:
    partition_key: str
    title: str
    duration_sec: float | None
    words: int | None
    wer: float | None
    realtime_factor: float | None
    status: str
    speakers: list[str] | None = None   # names of the speakers found, in order of first speech


def write_demo_catalog(feeds_dir: Path, base_url: str, slugs: list[str] | None = None) -> list[Path]:
    """Write tier<N>_feeds.yaml files for the bundled feeds, pointing at ``base_url``."""
    doc = yaml.safe_load((CONTENT / "catalog.yaml").read_text())
    by_tier: dict[int, list[dict]] = {}
    for feed in doc["feeds"]:
        if slugs and feed["slug"] not in slugs:
            continue
        by_tier.setdefault(int(feed["tier"]), []).append(
            {**feed, "url": feed["url"].replace("{base_url}", base_url)})
    feeds_dir.mkdir(parents=True, exist_ok=True)
    for old in feeds_dir.glob("tier*_feeds.yaml"):
        old.unlink()
    paths = []
    for tier, feeds in sorted(by_tier.items()):
        path = feeds_dir / f"tier{tier}_feeds.yaml"
        path.write_text("# Bundled demo feeds, served by `podrun demo` on loopback.\n"
                        + yaml.safe_dump({"feeds": feeds}, sort_keys=False))
        paths.append(path)
    return paths


def reference_text(enclosure_url: str | None) -> str | None:
    """The script an episode was synthesised from: /audio/<feed>/<ep>.mp3 -> texts/<feed>/<ep>.txt."""
    if not enclosure_url:
        return None
    parts = urlsplit(enclosure_url).path.strip("/").split("/")
    if len(parts) != 3 or parts[0] != "audio":
        return None
    ref = CONTENT / "texts" / parts[1] / (Path(parts[2]).stem + ".txt")
    return ref.read_text(encoding="utf-8") if ref.is_file() else None


def run_demo(settings: Settings, say: Callable[[str], None] = print, slugs: list[str] | None = None) -> list[EpisodeRow]:
    from podinsight_dagster.definitions import definitions_for
    from podinsight_dagster.instance import get_instance
    from podinsight_dagster.launch import LocalLauncher
    from podinsight_dagster.services import build_services

    started = time.perf_counter()
    # The demo server is on loopback: open exactly 127.0.0.1 and nothing else.
    settings = settings.replace(allow_private_networks=DEMO_NETWORKS)
    settings.ensure_dirs()
    instance = get_instance(settings)
    with _demo_server() as cdn:
        cdn.add_directory(CONTENT / "feeds", prefix="/feeds")
        cdn.add_directory(CONTENT / "audio", prefix="/audio")
        write_demo_catalog(settings.feeds_dir, cdn.base_url, slugs)
        say(f"demo feeds served at {cdn.base_url}; data root {settings.home}; model {settings.model}")
        launcher = LocalLauncher(instance, definitions_for(settings), say=say)
        if not launcher.run_job("ingest_catalog").success:
            raise RuntimeError("ingest_catalog failed; see the run in the Dagster UI (make ui)")
        services = build_services(settings)
        keys = [r.partition_key for slug in _catalog_slugs(settings) for r in services.checkpoints.episodes(feed_slug=slug)]
        say(f"{len(keys)} episodes registered as partitions; downloading and transcribing ...")
        outcome = launcher.run_partitions("episode_pipeline", keys)
    rows = summarize(services, keys)
    say(format_table(rows))
    say(f"\nfinished in {time.perf_counter() - started:.0f} s"
        + ("" if outcome.success else "; some episodes failed (see the runs in the UI)"))
    say(f"outputs:     {settings.stage_root}/<feed_slug>/<guid_key>/"
        f"{{transcripts,speakers,chapters,segments,kpis}}/\nraw audio:   {settings.raw_root}\n"
        f"manifest:    {settings.home / 'manifest.csv'}\nnext:        make ui   "
        "(Dagster UI on http://127.0.0.1:3000, same instance)")
    return rows


def _demo_server() -> DemoServer:
    import socket

    try:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", DEMO_PORT))
        port = DEMO_PORT
    except OSError:
        port = 0  # taken: any free port
    return DemoServer(port=port)


def _catalog_slugs(settings: Settings) -> list[str]:
    from podinsight_dagster.fetch.catalog import load_catalog

    return [f.slug for f in load_catalog(settings.feeds_dir).feeds]


def summarize(services, keys: list[str]) -> list[EpisodeRow]:
    rows = []
    for pk in keys:
        rec = services.checkpoints.get(pk)
        ek = EpisodeKey.parse(pk)
        row = EpisodeRow(pk, (rec.title if rec else "") or "", None, None, None, None, rec.state if rec else "?")
        if services.stage.exists(layout.kpis_key(ek)):
            k = services.stage.get_json(layout.kpis_key(ek))
            row.duration_sec, row.words, row.realtime_factor = k["duration_sec"], k["words"], k["realtime_factor"]
            ref = reference_text(rec.enclosure_url if rec else None)
            if ref is not None:
                text = services.stage.get_json(layout.transcript_key(ek))["text"]
                row.wer = wer(ref, text)
        if services.stage.exists(layout.speakers_key(ek)):
            row.speakers = [s["name"] for s in services.stage.get_json(layout.speakers_key(ek)).get("speakers", [])]
        rows.append(row)
    return rows


def format_table(rows: list[EpisodeRow]) -> str:
    head = f"{'episode':<40} {'duration':>8} {'words':>6} {'WER':>6} {'RTF':>6}  {'state':<11}  speakers"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.partition_key[:40]:<40} {_fmt(r.duration_sec, '{:.1f}s'):>8} {_fmt(r.words, '{}'):>6} "
            f"{_fmt(r.wer, '{:.3f}'):>6} {_fmt(r.realtime_factor, '{:.1f}x'):>6}  {r.status:<11}  "
            f"{_speakers(r.speakers)}")
    scored = [r.wer for r in rows if r.wer is not None]
    if scored:
        lines.append(f"mean WER {sum(scored) / len(scored):.3f} over {len(scored)} episodes "
                     "(case, punctuation and numbers normalised); RTF = audio seconds per wall second")
    return "\n".join(lines)


def _speakers(names: list[str] | None) -> str:
    """``2: Alex Morgan, Priya Raman``: how many voices diarization found, and who they are."""
    return "-" if names is None else f"{len(names)}: {', '.join(names)}" if names else "0"


def _fmt(value, pattern: str) -> str:
    return "-" if value is None else pattern.format(value)
