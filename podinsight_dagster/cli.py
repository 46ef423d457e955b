"""``podrun``: the operator's command line (run-book §3.3, §4.2, glossary).

podrun demo                                  the whole pipeline on bundled sample podcasts, offline
podrun fetch --feeds FILE --limit N          discover episodes and download the first N not yet downloaded
podrun transcribe --limit N --model NAME     transcribe N downloaded, untranscribed episodes
podrun feed inspect URL_OR_FILE [--json]     print a feed as Pod-Insight reads it
podrun status [--json]                       counts per state from the checkpoint store

Every command reads PODINSIGHT_HOME (default ./data) and runs the real Dagster
jobs on the local instance there, so its runs show in ``make ui``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from .domain.settings import Settings


def _settings(model: str | None = None) -> Settings:
    s = Settings.from_env()
    if model:
        os.environ["PODINSIGHT_MODEL"] = model
        s = Settings.from_env()
    return s


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Pod-Insight: podcast feeds to transcripts, segments, subtitles and KPIs."""


@main.command()
@click.option("--model", default=None, help="Whisper model (default: PODINSIGHT_MODEL or base).")
def demo(model: str | None) -> None:
    """Run the whole pipeline on the bundled sample podcasts (offline)."""
    from .demo.run import run_demo

    rows = run_demo(_settings(model))
    if any(r.status != "transcribed" for r in rows):
        sys.exit(1)


@main.command()
@click.option("--feeds", "feeds_file", type=click.Path(exists=True, dir_okay=True, path_type=Path), default=None,
              help="A tier*_feeds.yaml file or folder (default: $PODINSIGHT_HOME/feeds).")
@click.option("--limit", type=int, default=None, help="Download at most N episodes not yet downloaded.")
def fetch(feeds_file: Path | None, limit: int | None) -> None:
    """Phase 1: poll feeds, write the manifest, download episodes to pod-insights-raw."""
    from .demo.run import QUIET, run_partitions
    from .domain.checkpoints import DISCOVERED, FAILED
    from .domain.pipeline import Services
    from .instance import get_instance

    if feeds_file is not None:
        os.environ["PODINSIGHT_FEEDS_DIR"] = str(feeds_file.resolve())
    settings = _settings()
    instance = get_instance(settings)
    from .definitions import defs

    res = defs.resolve_job_def("ingest_catalog").execute_in_process(instance=instance, raise_on_error=False,
                                                                    run_config=QUIET)
    if not res.success:
        raise click.ClickException("ingest_catalog failed: see the run in the Dagster UI (make ui)")
    services = Services.local(settings)
    todo = [r.partition_key for r in services.checkpoints.episodes() if r.state in (DISCOVERED, FAILED)]
    todo = todo[:limit] if limit is not None else todo
    click.echo(f"downloading {len(todo)} episodes")
    results = run_partitions(instance, "fetch_episodes", todo)
    _echo_counts(services)
    if not all(r.success for r in results):
        sys.exit(1)


@main.command()
@click.option("--limit", type=int, default=None, help="Transcribe at most N episodes.")
@click.option("--model", default=None, help="Whisper model: base (default), tiny.en, or a model folder.")
def transcribe(limit: int | None, model: str | None) -> None:
    """Phase 2: transcribe downloaded episodes (transcript, segments, subtitles, KPIs)."""
    from .demo.run import run_partitions
    from .domain.checkpoints import DOWNLOADED
    from .domain.pipeline import Services
    from .instance import get_instance

    settings = _settings(model)
    instance = get_instance(settings)
    services = Services.local(settings)
    todo = [r.partition_key for r in services.checkpoints.episodes(state=DOWNLOADED)]
    todo = todo[:limit] if limit is not None else todo
    click.echo(f"transcribing {len(todo)} episodes with model {settings.model}")
    results = run_partitions(instance, "transcribe_episodes", todo)
    _echo_counts(services)
    if not all(r.success for r in results):
        sys.exit(1)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(as_json: bool) -> None:
    """Episode counts per state, from the checkpoint store."""
    from .domain.pipeline import Services, cost_today

    services = Services.local(_settings())
    counts = services.checkpoints.counts()
    doc = {"episodes": counts, "by_feed": services.checkpoints.counts_by_feed(),
           "cost_today_usd": round(cost_today(services), 4)}
    if as_json:
        click.echo(json.dumps(doc, indent=2))
    else:
        _echo_counts(services)
        click.echo(f"cost today: ${doc['cost_today_usd']:.4f}")


def _echo_counts(services) -> None:
    counts = services.checkpoints.counts()
    click.echo("  ".join(f"{k}: {v}" for k, v in counts.items()))


@main.group()
def feed() -> None:
    """Feed tools."""


@feed.command("inspect")
@click.argument("source")
@click.option("--json", "as_json", is_flag=True, help="Print the normalized feed as JSON.")
def feed_inspect(source: str, as_json: bool) -> None:
    """Fetch (or read) a feed and print it as Pod-Insight normalizes it."""
    from .domain.feeds import FeedParseError, parse_feed
    from .domain.http import FetchError, HttpClient
    from .domain.netpolicy import NetworkPolicy

    settings = _settings()
    try:
        if source.startswith(("http://", "https://")):
            client = HttpClient(policy=NetworkPolicy.parse(settings.allow_private_networks))
            content = client.fetch_bytes(source).content
        else:
            content = Path(source).read_bytes()
        parsed = parse_feed(content, source=source)
    except (FetchError, FeedParseError, OSError, ValueError) as exc:
        raise click.ClickException(f"{source}: {exc}".replace("\n", " "))
    if as_json:
        click.echo(json.dumps(parsed.to_dict(), indent=2, ensure_ascii=False))
        return
    click.echo(f"{parsed.title}  ({len(parsed.episodes)} episodes)")
    for ep in parsed.episodes:
        click.echo(f"  {ep.guid_key:<20} {ep.published or '-':<22} {ep.duration_sec or '-':>8}  {ep.title}")


if __name__ == "__main__":
    main()
