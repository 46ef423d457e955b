"""``podrun query``, ``podrun search`` and ``podrun report``: the archive (DuckDB views, the search index).

Registered on ``podrun``'s main group by cli.py; the domain logic is in archive/.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import click

from podinsight_dagster.cli_common import _require_data, _services, _settings
from podinsight_dagster.settings import Settings


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


@click.command()
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


@click.command()
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


@click.command()
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
