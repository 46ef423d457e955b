"""``podrun``: the operator's command line (run-book §3.3, §4.2, §7), on Dagster.

podrun demo                                        the whole pipeline on bundled sample podcasts, offline
podrun fetch --limit N [--dry-run] [--manifest PATH_OR_S3] [--feeds FILE]   (cli_pipeline.py)
podrun transcribe --limit N [--manifest-s3 URI] [--model NAME]
podrun status [--json]                             counts per state, success and 429 rates, GB, cost today
podrun status --failed [--json]                    failed episodes: stage and reason
podrun freeze [--lift]                             the cost freeze (run-book's $40 alarm)
podrun feed inspect URL_OR_FILE [--json]           a feed as Pod-Insight reads it
podrun feeds import FILE.opml | add URL | inspect  the catalog's feeds (cli_feeds.py)
podrun publish FEED [--feed-copy] [--base-url URL] Podcasting 2.0 tags for a feed's publisher (cli_feeds.py)
podrun query "SQL" [--json | --csv]                SQL over the archive (views episodes, transcripts, segments, kpis)
podrun search "WORDS" [--feed SLUG] [--limit N] [--json] [--meaning]   search with deep links into the audio
podrun report [--out report.html]                  one self-contained HTML page with charts (query, search, report: cli_archive.py)

Runs go to the local instance under PODINSIGHT_HOME (they show in ``make ui``),
or to a running Dagster deployment with ``--dagster-url`` (its GraphQL API).
``--limit`` caps episodes in both modes (run-book P-2).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from podinsight_dagster.cli_common import _check_model, _require_data, _services, _settings
from podinsight_dagster.cli_common import _launcher  # noqa: F401 - re-exported: tests build podrun's launcher
from podinsight_dagster.exits import WorkFailed, require_writable_home
from podinsight_dagster.settings import Settings, SettingsError


class PodrunGroup(click.Group):
    """Turns errors of the AWS deployment's services, of a --dagster-url deployment, or of an unusable data root
    into one sentence."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.ClickException:
            raise
        except Exception as exc:
            from podinsight_dagster.exits import storage_error_sentence
            from podinsight_dagster.launch import GraphQLError

            message = str(exc) if isinstance(exc, GraphQLError) else aws_error_sentence(exc)
            if message is not None:
                raise click.ClickException(message) from None
            try:  # a read-only data root, a file in the way: one sentence, never a traceback
                home = Settings.from_env().home
            except SettingsError:
                home = None
            error = storage_error_sentence(exc, home)
            if error is None:
                raise
            raise error from None


def aws_error_sentence(exc: BaseException) -> str | None:
    """One sentence for a boto3 error (no credentials, endpoint unreachable, missing bucket or table)."""
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:  # pragma: no cover - boto3 is a dependency
        return None
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        return (f"AWS {exc.operation_name} failed: {err.get('Code', '?')}: {err.get('Message', '')}".rstrip(": ")
                + " (PODINSIGHT_DEPLOYMENT=aws; check the buckets, the status table and the credentials)")
    if isinstance(exc, BotoCoreError):
        return f"AWS: {exc} (PODINSIGHT_DEPLOYMENT=aws; check AWS_REGION, AWS_ENDPOINT_URL and the credentials)"
    return None


@click.group(cls=PodrunGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Pod-Insight: podcast feeds to transcripts, segments, subtitles and KPIs."""


@main.command()
@click.option("--model", default=None, help="Whisper model (default: PODINSIGHT_MODEL or base).")
def demo(model: str | None) -> None:
    """Run the whole pipeline on the bundled sample podcasts (offline)."""
    from podinsight_dagster.demo.run import run_demo

    settings = _settings(model=model)
    _check_model(settings)
    require_writable_home(settings.home)
    rows = run_demo(settings)
    failed = [r for r in rows if r.status != "transcribed"]
    if failed:
        raise WorkFailed(f"{len(failed)} of {len(rows)} demo episodes were not transcribed; podrun status and "
                         "make ui show why")


# ---------------------------------------------------------------------------
# status, freeze
# ---------------------------------------------------------------------------
@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--failed", "failed_only", is_flag=True, help="List the failed episodes: stage and reason.")
def status(as_json: bool, failed_only: bool) -> None:
    """Episodes per state (agreeing with the stages), failed feeds, success rate, 429 rate, GB and cost today."""
    from podinsight_dagster.store.summary import status_lines, status_report

    settings = _settings()
    _require_data(settings)
    if failed_only:
        echo_failed_episodes(_services(settings), as_json)
        return
    doc = status_report(_services(settings))
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    for line in status_lines(doc):
        click.echo(line)


def echo_failed_episodes(services, as_json: bool) -> None:
    """``podrun status --failed``: one line per failed stage of an episode (the query: store/failures.py)."""
    from podinsight_dagster.store.failures import failed_episodes

    rows = failed_episodes(services.checkpoints)
    if as_json:
        click.echo(json.dumps({"failed_episodes": [f.to_json() for f in rows]}, indent=2))
        return
    if not rows:
        click.echo("no failed episodes")
        return
    click.echo(f"{len(rows)} failed episode{'s' if len(rows) != 1 else ''} (stage, retryable or permanent, reason):")
    for f in rows:
        reason = " ".join(f.reason.split())
        reason = reason if len(reason) <= 200 else reason[:197] + "..."
        kind = "retryable" if f.retryable else "permanent"
        click.echo(f"  {f.partition_key}  {f.stage}  {kind}: {reason}")


@main.command()
@click.option("--lift", is_flag=True, help="Lift the freeze so transcription may run again.")
@click.option("--reason", default="frozen by hand", help="Why (when freezing).")
def freeze(lift: bool, reason: str) -> None:
    """Freeze transcription spend (as the $40 alarm does), or lift the freeze."""
    settings = _settings()
    if settings.deployment == "local":
        require_writable_home(settings.home)
    budget = _services(settings).budget
    if lift:
        budget.lift()
        click.echo("freeze lifted: transcription may run")
    else:
        budget.freeze(reason)
        click.echo(f"frozen: {reason}")


# ---------------------------------------------------------------------------
# feed inspect
# ---------------------------------------------------------------------------
@main.group()
def feed() -> None:
    """Feed tools."""


@feed.command("inspect")
@click.argument("source")
@click.option("--json", "as_json", is_flag=True, help="Print the normalized feed as JSON.")
def feed_inspect(source: str, as_json: bool) -> None:
    """Fetch (or read) a feed and print it as Pod-Insight normalizes it."""
    from podinsight_dagster.fetch.feeds import FeedParseError, parse_feed
    from podinsight_dagster.fetch.http import FetchError
    from podinsight_dagster.services import build_http

    settings = _settings()
    try:
        if source.startswith(("http://", "https://")):  # one request: host limits within this process suffice
            got = build_http(settings, shared_limits=False).fetch_bytes(source)
            content, base_url = got.content, got.final_url or source
        else:
            content, base_url = Path(source).read_bytes(), source
        parsed = parse_feed(content, source=source, base_url=base_url)
    except (FetchError, FeedParseError, OSError, ValueError) as exc:
        raise click.ClickException(f"{source}: {exc}".replace("\n", " "))
    if as_json:
        click.echo(json.dumps(parsed.to_dict(), indent=2, ensure_ascii=False))
        return
    kind = f", {parsed.itunes_type}" if parsed.itunes_type else ""
    click.echo(f"{parsed.title}  ({len(parsed.episodes)} episodes{kind})")
    for ep in parsed.episodes:
        click.echo(f"  {ep.guid_key:<20} {ep.published or '-':<22} {ep.duration_sec or '-':>8}  {ep.title}")
    for item in parsed.skipped_items:
        click.echo(f"  skipped {item}")


# The other commands live in modules by subject: fetch and transcribe (cli_pipeline.py), query, search and report
# (cli_archive.py), `podrun feeds` (import, add, inspect) and `podrun publish` (cli_feeds.py); `feed inspect` stays.
from podinsight_dagster.cli_archive import query, report, search  # noqa: E402
from podinsight_dagster.cli_pipeline import fetch, transcribe  # noqa: E402

for _command in (fetch, transcribe, query, search, report):
    main.add_command(_command)

# `podrun feeds` (import, add, inspect) and `podrun publish` live in their own modules; `feed inspect` stays.
from podinsight_dagster.cli_feeds import feeds as _feeds_group, publish as _publish  # noqa: E402

_feeds_group.add_command(feed_inspect, "inspect")
main.add_command(_feeds_group)
main.add_command(_publish)

if __name__ == "__main__":
    main()
