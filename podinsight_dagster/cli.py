"""``podrun``: the operator's command line (run-book §3.3, §4.2, §7), on Dagster.

podrun demo                                        the whole pipeline on bundled sample podcasts, offline
podrun fetch --limit N [--dry-run] [--manifest PATH_OR_S3] [--feeds FILE]
podrun transcribe --limit N [--manifest-s3 URI] [--model NAME]
podrun status [--json]                             counts per state, success and 429 rates, GB, cost today
podrun status --failed [--json]                    failed episodes: stage and reason
podrun freeze [--lift]                             the cost freeze (run-book's $40 alarm)
podrun feed inspect URL_OR_FILE [--json]           a feed as Pod-Insight reads it
podrun feeds import FILE.opml | add URL | inspect  the catalog's feeds (cli_feeds.py)
podrun publish FEED [--feed-copy] [--base-url URL] Podcasting 2.0 tags for a feed's publisher (cli_feeds.py)
podrun query "SQL" [--json | --csv]                SQL over the archive (views episodes, transcripts, segments, kpis)
podrun search "WORDS" [--feed SLUG] [--limit N] [--json] [--meaning]   search with deep links into the audio
podrun report [--out report.html]                  one self-contained HTML page with charts

Runs go to the local instance under PODINSIGHT_HOME (they show in ``make ui``),
or to a running Dagster deployment with ``--dagster-url`` (its GraphQL API).
``--limit`` caps episodes in both modes (run-book P-2).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from urllib.parse import urlsplit

import click

from podinsight_dagster.exits import (BadSettings, Refused, WorkFailed, require_data, require_folder,
                                      require_writable_home)
from podinsight_dagster.settings import Settings, SettingsError

VERBOSE_HELP = "Also print Dagster's console log of the runs (stack traces of failed steps included)."
DAGSTER_URL_HELP = ("Launch on a running Dagster deployment (e.g. http://127.0.0.1:3000) instead of in-process; "
                    "credentials from DAGSTER_CLOUD_API_TOKEN (Dagster+) or PODINSIGHT_DAGSTER_TOKEN (bearer).")


def _settings(**overrides) -> Settings:
    """The environment's settings, with the command's flags (those given) over them."""
    try:
        return Settings.from_env().replace(**overrides)
    except SettingsError as exc:
        raise BadSettings(str(exc))


def _check_model(settings: Settings) -> None:
    """An unknown model is a bad setting, found before a run starts (not once per episode inside it)."""
    from podinsight_dagster.transcribe.models import ModelNotFoundError, check_model

    try:
        check_model(settings.model, allow_download=settings.allow_model_download,
                    remote=settings.transcribe_via == "batch")
    except ModelNotFoundError as exc:
        raise BadSettings(f"--model / PODINSIGHT_MODEL: {exc}")


def _preflight(settings: Settings, phase: str) -> None:
    """Before any work: the deployment's buckets, table (and Batch queue) exist, else one sentence and exit 2."""
    from podinsight_dagster.services import preflight
    from podinsight_dagster.store.preflight import PreflightError

    try:
        preflight(settings, phase)
    except PreflightError as exc:
        raise BadSettings(str(exc))


def _services(settings: Settings):
    from podinsight_dagster.services import build_services

    return build_services(settings)


def _launcher(settings: Settings, dagster_url: str | None, checkpoints=None, verbose: bool = False):
    from podinsight_dagster.definitions import definitions_for
    from podinsight_dagster.instance import get_instance
    from podinsight_dagster.launch import Credentials, GraphQLLauncher, LocalLauncher

    if dagster_url:
        return GraphQLLauncher(dagster_url, say=click.echo, credentials=Credentials.from_settings(settings))
    return LocalLauncher(get_instance(settings), definitions_for(settings), say=click.echo, checkpoints=checkpoints,
                         verbose=verbose)


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
# fetch
# ---------------------------------------------------------------------------
_S3_ERRORS = {
    "NoSuchBucket": "bucket {bucket} does not exist",
    "NoSuchKey": "bucket {bucket} has no object {key}",
    "404": "bucket {bucket} has no object {key}",
    "AccessDenied": "access denied",
    "403": "access denied",
    "InvalidAccessKeyId": "the AWS access key is not valid",
    "SignatureDoesNotMatch": "the AWS secret key does not match",
}


def read_manifest_source(source: str, settings: Settings | None = None) -> bytes:
    """A manifest from a local path or s3://bucket/key (the settings' AWS region and endpoint).

    Anything that stops the read is one sentence naming the source (click.ClickException).
    """
    what = f"cannot read manifest {source}"
    if source.startswith("s3://"):
        from botocore.exceptions import BotoCoreError, ClientError

        from podinsight_dagster.services import aws_client

        parts = urlsplit(source)
        bucket, key = parts.netloc, parts.path.lstrip("/")
        if not bucket or not key:
            raise click.ClickException(f"{what}: an s3:// URI names a bucket and a key (s3://BUCKET/KEY)")
        settings = settings or _settings()
        try:
            return aws_client(settings, "s3").get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            reason = _S3_ERRORS.get(code, "{message}").format(
                bucket=bucket, key=key, message=f"{code or 'S3 error'}: {error.get('Message') or exc}")
            raise click.ClickException(f"{what}: {reason}")
        except BotoCoreError as exc:  # no credentials, endpoint unreachable, timeouts
            raise click.ClickException(f"{what}: {exc}")
    try:
        return Path(source).read_bytes()
    except FileNotFoundError:
        raise click.ClickException(f"{what}: no such file")
    except IsADirectoryError:
        raise click.ClickException(f"{what}: it is a folder, not a file")
    except OSError as exc:
        raise click.ClickException(f"{what}: {exc.strerror or exc}")


def _manifest_number(value: str | None, column: str, source: str, line: int, *, whole: bool):
    """A manifest cell as a number (None when empty); one sentence when it is not one."""
    import math

    value = (value or "").strip()
    if not value:
        return None
    try:
        n = int(value) if whole else float(value)
    except ValueError:
        n = None
    if n is None or not math.isfinite(n) or n < 0:
        kind = "a whole number of bytes" if whole else "a number of seconds"
        raise click.ClickException(f"{source} line {line}: {column} must be {kind}, not {value!r}")
    return n


def manifest_records(data: bytes, source: str):
    """The episodes of a manifest.csv (the columns discover writes); one sentence on bad input."""
    from podinsight_dagster.store.checkpoints import EpisodeRecord
    from podinsight_dagster.store.keys import EpisodeKey, InvalidKeyError

    try:
        text = data.decode("utf-8-sig")  # a manifest saved by a spreadsheet starts with a BOM
    except UnicodeDecodeError as exc:
        raise click.ClickException(
            f"{source}: not a UTF-8 text file (byte 0x{data[exc.start]:02x} at offset {exc.start})")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        columns = set(reader.fieldnames or [])
        if not columns:
            raise click.ClickException(f"{source}: empty manifest (no header line)")
        if "partition_key" not in columns and not {"feed_slug", "guid_key"} <= columns:
            raise click.ClickException(f"{source}: no partition_key column (nor feed_slug and guid_key)")
        records = []
        for row in reader:
            line = reader.line_num
            cell = {k: (row.get(k) or "").strip() for k in ("partition_key", "feed_slug", "guid_key")}
            try:
                ek = EpisodeKey.parse(cell["partition_key"] or f"{cell['feed_slug']}/{cell['guid_key']}")
            except InvalidKeyError as exc:
                raise click.ClickException(f"{source} line {line}: {exc}")
            records.append(EpisodeRecord(
                partition_key=ek.partition_key, feed_slug=ek.feed_slug, guid_key=ek.guid_key,
                guid=row.get("guid") or None, title=row.get("title") or None,
                enclosure_url=(row.get("enclosure_url") or "").strip() or None,
                enclosure_type=row.get("enclosure_type") or None,
                enclosure_length=_manifest_number(row.get("enclosure_length"), "enclosure_length", source, line,
                                                  whole=True),
                published=row.get("published") or None,
                duration_hint_sec=_manifest_number(row.get("duration_sec"), "duration_sec", source, line,
                                                   whole=False)))
    except csv.Error as exc:
        raise click.ClickException(f"{source} line {reader.line_num}: not valid CSV ({exc})")
    return records


@main.command()
@click.option("--limit", type=click.IntRange(min=0), default=None,
              help="Download at most N episodes not yet downloaded.")
@click.option("--per-feed", type=click.IntRange(min=0), default=None,
              help="Only the newest N episodes of each feed (those already downloaded count); --limit caps the total.")
@click.option("--dry-run", is_flag=True, help="Print the plan (episodes, hosts, sizes, time, cost); download nothing.")
@click.option("--manifest", "manifest", default=None, help="Fetch the episodes of this manifest.csv (path or s3://).")
@click.option("--feeds", "feeds_file", type=click.Path(exists=True, path_type=Path), default=None,
              help="A tier*_feeds.yaml file or folder (default: $PODINSIGHT_HOME/feeds).")
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

    settings = _settings(feeds_dir=feeds_file.resolve() if feeds_file else None)
    _preflight(settings, "fetch")  # on AWS: the buckets and the table exist, before anything is fetched
    fresh = dry_run and settings.deployment == "local" and not settings.checkpoint_db.exists()
    if fresh:
        require_folder(settings.home)
    elif not dry_run or settings.deployment == "local":  # a dry run opens the checkpoint store, writing nothing
        require_writable_home(settings.home)
    catalog = None if manifest else _catalog(settings)  # settings are checked before anything runs
    services = _dry_run_services(settings, fresh) if dry_run else _services(settings)
    failed_feeds, total_feeds = [], 0
    if manifest:
        records = manifest_records(read_manifest_source(manifest, settings), manifest)
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


# ---------------------------------------------------------------------------
# transcribe
# ---------------------------------------------------------------------------
@main.command()
@click.option("--limit", type=click.IntRange(min=0), default=None, help="Transcribe at most N episodes.")
@click.option("--manifest-s3", "manifest", default=None,
              help="Transcribe the episodes listed in this manifest (s3:// URI or local path).")
@click.option("--model", default=None, help="Whisper model: base (default), tiny.en, or a model folder.")
@click.option("--speakers", type=click.IntRange(min=1, max=8), default=None,
              help="Speakers per episode for diarization (default: estimated from the audio, at most the hosts and "
                   "guests the feed lists).")
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
    from podinsight_dagster.store.summary import failure_sentence, failures
    from podinsight_dagster.transcribe.options import transcript_code_version

    settings = _settings(model=model, speakers=speakers)
    _check_model(settings)
    _preflight(settings, "transcribe")  # on AWS (or through Batch): what the run uses exists
    require_writable_home(settings.home)
    services = _services(settings)
    launcher = _launcher(settings, dagster_url, services.checkpoints, verbose)  # reaps dead runs, releasing claims
    todo = select_for_transcription(services.checkpoints, transcript_code_version(transcribe_options(settings)),
                                    retry_failed=retry_failed, stale=stale)
    if manifest:
        listed = {r.partition_key for r in manifest_records(read_manifest_source(manifest, settings), manifest)}
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


def select_for_transcription(checkpoints, code_version: str, *, retry_failed: bool = False, stale: bool = False):
    """Episodes to transcribe: downloaded ones whose transcribe stage is pending, or failed and retryable
    (any failure with ``retry_failed``); with ``stale``, those done at another code version. Never one that
    someone holds (a live lease)."""
    from podinsight_dagster.store.checkpoints import DONE, DOWNLOADED, FAILED, PENDING, TRANSCRIBED

    stages = checkpoints.stages("transcribe")
    out = []
    for rec in checkpoints.episodes():
        if rec.state not in (DOWNLOADED, TRANSCRIBED):
            continue
        st = stages.get(rec.partition_key)
        if st is not None and st.held():
            continue
        if stale:
            if st is not None and st.status == DONE and st.code_version != code_version:
                out.append(rec)
            continue
        status = st.status if st is not None else (DONE if rec.state == TRANSCRIBED else PENDING)
        if rec.state == TRANSCRIBED and status == DONE:
            continue
        if status in (PENDING, "running") or (status == FAILED and (st.retryable or retry_failed)):
            out.append(rec)
        elif status == DONE and rec.state == DOWNLOADED:
            out.append(rec)  # transcribed, but its segments or KPIs are not written yet
    return out


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


def _require_data(settings: Settings, *also: Path) -> None:
    """Commands that only read refuse a local data root with no data (a mistyped PODINSIGHT_HOME), creating nothing."""
    if settings.deployment == "local":
        require_data(settings.home, *also)


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


def _echo_counts(services) -> None:
    counts = services.checkpoints.counts()
    click.echo("  ".join(f"{k}: {v}" for k, v in counts.items()))


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


# ---------------------------------------------------------------------------
# the archive: query, search, report
# ---------------------------------------------------------------------------
def _archive_sql(settings: Settings, read_only: bool = False):
    """DuckDB with the views over the deployment's stage layout; one sentence when it cannot be read.

    ``read_only``: then locked to reading the stage layout (podrun query runs a user's SQL).
    """
    import duckdb

    from podinsight_dagster.archive.views import create_views, lock_to_reading
    from podinsight_dagster.services import build_duckdb, stage_uri

    try:
        con = build_duckdb(settings)
        create_views(con, stage_uri(settings))
        if read_only:
            lock_to_reading(con, stage_uri(settings))
    except (duckdb.Error, FileNotFoundError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise click.ClickException(f"cannot read the stage layout at {stage_uri(settings)}: {first}")
    return con


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    text = str(value).replace("\n", " ")
    return text if len(text) <= 60 else text[:59] + "…"


@main.command()
@click.argument("sql")
@click.option("--json", "as_json", is_flag=True, help="Rows as a JSON list of objects.")
@click.option("--csv", "as_csv", is_flag=True, help="Rows as CSV with a header line.")
def query(sql: str, as_json: bool, as_csv: bool) -> None:
    """SQL (DuckDB) over the archive: views episodes, transcripts, segments (the Athena table's shape), kpis."""
    from podinsight_dagster.archive.views import QueryError, run_query

    if as_json and as_csv:
        raise click.ClickException("choose one of --json and --csv")
    if not sql.strip():
        raise click.UsageError('no SQL given: podrun query "SELECT * FROM episodes LIMIT 5"')
    settings = _settings()
    _require_data(settings)
    con = _archive_sql(settings, read_only=True)
    try:
        result = run_query(con, sql)
    except QueryError as exc:
        raise click.ClickException(str(exc))
    if as_json:
        click.echo(json.dumps([dict(zip(result.columns, row)) for row in result.rows], indent=2, default=str,
                              ensure_ascii=False))
    elif as_csv:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(result.columns)
        writer.writerows(result.rows)
        click.echo(out.getvalue(), nl=False)
    else:
        cells = [[_cell(v) for v in row] for row in result.rows]
        widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(result.columns)]
        click.echo("  ".join(c.ljust(w) for c, w in zip(result.columns, widths)).rstrip())
        click.echo("  ".join("-" * w for w in widths))
        for row in cells:
            click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
        click.echo(f"({len(result.rows)} row{'s' if len(result.rows) != 1 else ''})")


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"


@main.command()
@click.argument("phrase")
@click.option("--feed", default=None, help="Only this feed (its slug).")
@click.option("--limit", type=click.IntRange(min=1, max=1000), default=10, show_default=True, help="Hits to show.")
@click.option("--json", "as_json", is_flag=True, help="Hits as JSON.")
@click.option("--meaning", is_flag=True,
              help="Search by meaning: PHRASE is a question; passages ranked by embedding similarity, "
                   "fused with BM25 over its words.")
@click.option("--no-hybrid", is_flag=True, help="With --meaning: embedding similarity only, no BM25.")
def search(phrase: str, feed: str | None, limit: int, as_json: bool, meaning: bool, no_hybrid: bool) -> None:
    """Full-text search over every transcript (BM25), or by meaning: feed, episode, start time, snippet, deep link.

    Words: passages holding every word (stemmed; common words left out), best first; "quoted words"
    match as a phrase. --meaning: passages close in meaning, each with its similarity (0-1); those
    below the relevance floor are left out.
    """
    import shlex

    from podinsight_dagster.archive.index import MEANING_FLOOR, SearchError
    from podinsight_dagster.services import build_transcript_index

    if no_hybrid and not meaning:
        raise click.UsageError("--no-hybrid goes with --meaning")
    settings = _settings()
    _require_data(settings, settings.index_db)
    try:
        index = build_transcript_index(settings, create=False)
        if meaning:
            hits = index.search_meaning(phrase, feed=feed, limit=limit, hybrid=not no_hybrid)
        else:
            hits = index.search(phrase, feed=feed, limit=limit)
    except SearchError as exc:
        raise click.ClickException(str(exc))
    if as_json:
        click.echo(json.dumps([h.to_dict() for h in hits], indent=2, ensure_ascii=False))
        return
    if not hits and meaning:
        click.echo(f"nothing close enough in meaning to {phrase!r} (every passage's similarity is below "
                   f"{MEANING_FLOOR:.2f})")
        return
    if not hits:
        # Every word must be in one passage (BM25 terms): a question rarely is, search by meaning often helps.
        click.echo(f"no matches for {phrase!r}: no passage holds every word; try podrun search --meaning "
                   f"{shlex.quote(phrase)}")
        return
    for n, hit in enumerate(hits, 1):
        score = f" · similarity {hit.similarity:.2f}" if hit.similarity is not None else ""
        click.echo(f"{n}. {hit.feed_slug} · {hit.title or hit.partition_key} · {_clock(hit.start_sec)}{score}")
        click.echo(f"   {hit.snippet}")
        for link in (hit.link, hit.audio):
            if link:
                click.echo(f"   {link}")


@main.command()
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("report.html"),
              show_default=True, help="Where to write the HTML page.")
def report(out: Path) -> None:
    """One self-contained HTML page with charts: success rates, hours, cost, hosts, 429s, search terms."""
    from podinsight_dagster.archive.index import SearchError
    from podinsight_dagster.archive.report import episode_durations, gather, render
    from podinsight_dagster.services import build_transcript_index

    if not out.parent.is_dir():
        raise click.ClickException(f"cannot write {out}: folder {out.parent} does not exist")
    settings = _settings()
    _require_data(settings)
    services = _services(settings)
    con = _archive_sql(settings)
    try:
        index = build_transcript_index(settings, create=False)
    except SearchError:
        index = None
    page = render(gather(services, episode_durations(con), index))
    try:
        out.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise click.ClickException(f"cannot write {out}: {exc.strerror or exc}")
    click.echo(f"wrote {out} ({len(page) / 1024:.0f} KiB)")


# `podrun feeds` (import, add, inspect) and `podrun publish` live in their own modules; `feed inspect` stays.
from podinsight_dagster.cli_feeds import feeds as _feeds_group, publish as _publish  # noqa: E402

_feeds_group.add_command(feed_inspect, "inspect")
main.add_command(_feeds_group)
main.add_command(_publish)

if __name__ == "__main__":
    main()
