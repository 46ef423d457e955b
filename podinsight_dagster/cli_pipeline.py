"""``podrun fetch`` and ``podrun transcribe``: the run-book's two phases, launched as Dagster runs.

Registered on ``podrun``'s main group by cli.py; which episodes a phase takes is in store/selection.py,
a --manifest file is read by fetch/manifest.py.
"""

from __future__ import annotations

from pathlib import Path

import click

from podinsight_dagster.cli_common import (DAGSTER_URL_HELP, VERBOSE_HELP, _check_model, _echo_counts,
                                           _freeze_heap_at_exit, _launcher, _preflight, _services, _settings)
from podinsight_dagster.exits import BadSettings, Refused, WorkFailed, require_folder, require_writable_home
from podinsight_dagster.settings import Settings


def _manifest_records(source: str, settings: Settings):
    """The episodes of the manifest at ``source`` (a path or s3://); one sentence when it cannot be used."""
    from podinsight_dagster.fetch.manifest import ManifestError, manifest_records, read_manifest_source
    from podinsight_dagster.services import aws_client

    try:
        return manifest_records(read_manifest_source(source, lambda: aws_client(settings, "s3")), source)
    except ManifestError as exc:
        raise click.ClickException(str(exc))


@click.command()
@click.option("--limit", type=click.IntRange(min=0), default=None,
              help="Download at most N episodes not yet downloaded.")
@click.option("--per-feed", type=click.IntRange(min=0), default=None,
              help="Only the newest N episodes of each feed (those already downloaded count); --limit caps the total.")
@click.option("--dry-run", is_flag=True, help="Print the plan (episodes, hosts, sizes, time, cost); download nothing.")
@click.option("--manifest", "manifest", default=None, help="Fetch the episodes of this manifest.csv (path or s3://).")
@click.option("--feeds", "feeds_file", type=click.Path(exists=True, path_type=Path), default=None,
              help="A tier*_feeds.yaml file or folder (default: PODINSIGHT_FEEDS_DIR, else $PODINSIGHT_HOME/feeds).")
@click.option("--dagster-url", default=None, help=DAGSTER_URL_HELP)
@click.option("--verbose", is_flag=True, help=VERBOSE_HELP)
def fetch(limit: int | None, per_feed: int | None, dry_run: bool, manifest: str | None, feeds_file: Path | None,
          dagster_url: str | None, verbose: bool) -> None:
    """Phase 1: build the manifest, register episodes, download the first N not yet downloaded."""
    from podinsight_dagster.fetch.discover import discover
    from podinsight_dagster.fetch.plan import fetch_plan_lines
    from podinsight_dagster.fetch.progress import FetchProgress
    from podinsight_dagster.store.checkpoints import DISCOVERED, FAILED
    from podinsight_dagster.store.summary import Failure, failure_sentence, failures

    _freeze_heap_at_exit()
    settings = _settings(feeds_dir=feeds_file.resolve() if feeds_file else None)
    _preflight(settings, "fetch")  # on AWS: the buckets and the table exist, before anything is fetched
    fresh = dry_run and settings.deployment == "local" and not settings.checkpoint_db.exists()
    if fresh:
        require_folder(settings.home)
    elif not dry_run or settings.deployment == "local":  # a dry run opens the checkpoint store, writing nothing
        require_writable_home(settings.home)
    catalog = None if manifest else _catalog(settings)  # settings are checked before anything runs
    services = _dry_run_services(settings, fresh) if dry_run else _services(settings)
    click.get_current_context().call_on_close(services.close)  # its database handles closed before exit
    failed_feeds, total_feeds = [], 0
    if manifest:
        records = _manifest_records(manifest, settings)
        if not dry_run:
            services.checkpoints.register_episodes(records)
        wanted, unregistered = [r.partition_key for r in records], records
        click.echo(f"manifest {manifest}: {len(wanted)} episodes")
    else:
        result = discover(services, catalog, dry_run=dry_run)
        failed_feeds, total_feeds = [f for f in result.feeds if f.status in ("failed", "partial")], len(result.feeds)
        for f in result.feeds:
            if f.status == "failed":
                click.echo(f"feed {f.slug} failed: {f.error}", err=True)
            elif f.error:  # "partial": a later page of a paged feed failed; the earlier pages count
                click.echo(f"feed {f.slug}: {f.error}", err=True)
        if result.manifest_key:
            click.echo(f"manifest: {services.manifests.uri(result.manifest_key)} ({len(result.manifest_rows)} episodes,"
                       f" {len(result.new_partition_keys)} new)")
        wanted, unregistered = [r["partition_key"] for r in result.manifest_rows], result.unregistered
    known = {r.partition_key: r for r in services.checkpoints.episodes()}
    planned = {r.partition_key: r for r in unregistered if r.partition_key not in known}  # a dry run's new ones
    todo = [k for k in wanted if k in planned or (k in known and known[k].state in (DISCOVERED, FAILED))]
    if per_feed is not None:
        from podinsight_dagster.fetch.discover import newest_per_feed

        listed = {**known, **planned}
        newest = newest_per_feed([(k, listed[k].feed_slug, listed[k].published) for k in wanted if k in listed],
                                 per_feed)
        todo = [k for k in todo if k in newest]
    todo = todo[:limit] if limit is not None else todo
    problems = [failure_sentence([Failure(f.slug, "poll", f.error, None) for f in failed_feeds], total_feeds,
                                 "poll", what="feeds")] if failed_feeds else []
    if dry_run:
        for line in fetch_plan_lines(services, [known.get(k) or planned[k] for k in todo]):
            click.echo(line)
    elif not todo:
        click.echo("nothing to download")
    else:
        click.echo(f"downloading {len(todo)} episodes")
        launcher = _launcher(settings, dagster_url, services.checkpoints, verbose)
        click.get_current_context().call_on_close(launcher.close)  # the instance's storage closed before exit
        with FetchProgress(services.checkpoints, todo):
            outcome = launcher.run_partitions("fetch_episodes", todo)
        _echo_counts(services)
        failed = failures(services.checkpoints, todo)
        if failed:
            problems.append(failure_sentence(failed, len(todo), "download"))
        elif not outcome.success:
            problems.append("the fetch_episodes run failed (details: make ui)")
    if problems:
        raise WorkFailed("; ".join(problems) + "; podrun status shows what failed, and podrun fetch retries it "
                         "(fix or remove a failing feed in the catalog)")


def _dry_run_services(settings: Settings, fresh: bool):
    """A dry run's services: host limits within this process (no lock files, no leases); on a data root with no
    checkpoint store yet, a scratch one (nothing is known either way, so the plan is the same), creating nothing."""
    import tempfile

    from podinsight_dagster.services import build_http

    store_settings = settings
    if fresh:
        scratch = tempfile.TemporaryDirectory(prefix="podrun-dry-run-")
        click.get_current_context().call_on_close(scratch.cleanup)
        store_settings = settings.replace(home=Path(scratch.name))
    services = _services(store_settings)
    services.http.close()
    services.http = build_http(settings, shared_limits=False)
    return services


def _catalog(settings: Settings):
    """The feed catalog, or BadSettings naming what is wrong in it."""
    from podinsight_dagster.fetch.catalog import CatalogError, load_catalog

    try:
        return load_catalog(settings.feeds_dir)
    except CatalogError as exc:
        raise BadSettings(str(exc))


@click.command()
@click.option("--limit", type=click.IntRange(min=0), default=None, help="Transcribe at most N episodes.")
@click.option("--manifest-s3", "manifest", default=None,
              help="Transcribe the episodes listed in this manifest (s3:// URI or local path).")
@click.option("--model", default=None,
              help="Whisper model: base, tiny.en, or a model folder (default: PODINSIGHT_MODEL, else base).")
@click.option("--speakers", type=click.IntRange(min=1, max=8), default=None,
              help="Speakers per episode for diarization (default: PODINSIGHT_SPEAKERS, else estimated from the audio, "
                   "at most the hosts and guests the feed lists).")
@click.option("--dagster-url", default=None, help=DAGSTER_URL_HELP)
@click.option("--retry-failed", is_flag=True, help="Also retry transcriptions that failed for good (bad audio).")
@click.option("--stale", is_flag=True,
              help="Only re-transcribe episodes transcribed with another model or settings (code version).")
@click.option("--dry-run", is_flag=True,
              help="Print the plan (episodes, audio hours, speed, projected cost); launch nothing.")
@click.option("--verbose", is_flag=True, help=VERBOSE_HELP)
def transcribe(limit: int | None, manifest: str | None, model: str | None, speakers: int | None,
               dagster_url: str | None, retry_failed: bool, stale: bool, dry_run: bool, verbose: bool) -> None:
    """Phase 2: transcribe downloaded episodes (transcript, speakers, segments, subtitles, KPIs)."""
    from podinsight_dagster.costs.budget import BudgetExceeded
    from podinsight_dagster.costs.projection import check_projection, project
    from podinsight_dagster.services import transcribe_options
    from podinsight_dagster.store.checkpoints import DOWNLOAD
    from podinsight_dagster.store.selection import select_for_transcription
    from podinsight_dagster.store.summary import failure_sentence, failures
    from podinsight_dagster.transcribe.options import transcript_code_version

    _freeze_heap_at_exit()
    settings = _settings(model=model, speakers=speakers)
    _check_model(settings)
    _preflight(settings, "transcribe")  # on AWS (or through Batch): what the run uses exists
    require_writable_home(settings.home)
    services = _services(settings)
    click.get_current_context().call_on_close(services.close)  # its database handles closed before exit
    launcher = _launcher(settings, dagster_url, services.checkpoints, verbose)  # reaps dead runs, releasing claims
    click.get_current_context().call_on_close(launcher.close)  # the instance's storage closed before exit
    todo = select_for_transcription(services.checkpoints, transcript_code_version(transcribe_options(settings)),
                                    retry_failed=retry_failed, stale=stale)
    if manifest:
        listed = {r.partition_key for r in _manifest_records(manifest, settings)}
        todo = [r for r in todo if r.partition_key in listed]
    todo = todo[:limit] if limit is not None else todo
    projection = project(services.budget, services.raw, todo, settings.model)
    try:
        # Advisory (counts running reservations); the transcript step reserves atomically when it starts.
        today = check_projection(services.budget, projection)
    except BudgetExceeded as exc:
        raise Refused(f"refusing to transcribe: {exc}")
    if not todo:
        click.echo("nothing to transcribe (no " + ("stale transcripts" if stale else
                                                   "downloaded, untranscribed episodes") + ")")
        return
    click.echo(f"{'dry run, nothing launched: would transcribe' if dry_run else 'transcribing'} "
               f"{projection.describe()}; cost today ${today:.2f} of ${services.budget.ceiling_usd:.2f}")
    if dry_run:
        return
    keys = [r.partition_key for r in todo]
    outcome = launcher.run_partitions("transcribe_episodes", keys)
    _echo_counts(services)
    failed = [f for f in failures(services.checkpoints, keys) if f.stage != DOWNLOAD]
    if failed:
        raise WorkFailed(failure_sentence(failed, len(keys), "transcribe") + "; podrun status shows what failed; "
                         "podrun transcribe retries those that may pass, --retry-failed the others")
    if not outcome.success:
        raise WorkFailed("the transcribe_episodes run failed (details: make ui); podrun transcribe retries it")
