"""``podrun feeds``: the catalog's feeds (import an OPML file, add one URL, inspect one feed).

podrun feeds import FILE.opml [--tier N] [--dry-run]   the feeds of a podcast app's export
podrun feeds add URL [--slug S] [--tier N]              one feed (its slug from its title unless given)
podrun feeds inspect URL_OR_FILE [--json]               = podrun feed inspect

Registered on ``podrun``'s main group by cli.py; the domain logic is in fetch/opml.py and
fetch/catalog.py.
"""

from __future__ import annotations

from pathlib import Path

import click

from podinsight_dagster.fetch.catalog import DEFAULT_ADD_TIER

TIER_HELP = f"Catalog tier: the entries go to tier<N>_feeds.yaml (default {DEFAULT_ADD_TIER})."


@click.group()
def feeds() -> None:
    """The feed catalog: import an OPML file, add a feed, inspect a feed."""


def _settings():
    from podinsight_dagster.cli import _settings as settings_with_flags

    return settings_with_flags()


def _say_added(result, dry_run: bool) -> None:
    where = result.path
    if result.added:
        verb = "would add" if dry_run else "added"
        click.echo(f"{verb} {len(result.added)} feed{'s' if len(result.added) != 1 else ''} to {where}:")
        width = max(len(f.slug) for f in result.added)
        for f in result.added:
            click.echo(f"  {f.slug:<{width}}  {f.url}")
    else:
        click.echo(f"nothing to add to {where}")
    for feed, why in result.skipped:
        click.echo(f"  skipped {feed.url}: {why}")


@feeds.command("import")
@click.argument("opml_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--tier", type=click.IntRange(min=0), default=DEFAULT_ADD_TIER, show_default=True, help=TIER_HELP)
@click.option("--dry-run", is_flag=True, help="Print what would be added; write nothing.")
def feeds_import(opml_file: Path, tier: int, dry_run: bool) -> None:
    """Add the feeds of an OPML file (a podcast app's export) to the catalog, skipping those already in it."""
    from podinsight_dagster.fetch.catalog import CatalogError, NewFeed, add_feeds
    from podinsight_dagster.fetch.opml import OPMLError, parse_opml

    settings = _settings()
    try:
        content = opml_file.read_bytes()
    except OSError as exc:
        raise click.ClickException(f"cannot read {opml_file}: {exc.strerror or exc}")
    try:
        subs = parse_opml(content, source=str(opml_file))
        result = add_feeds(settings.feeds_dir, [NewFeed(url=s.url, title=s.title) for s in subs],
                           tier=tier, dry_run=dry_run)
    except (OPMLError, CatalogError) as exc:
        raise click.ClickException(str(exc))
    _say_added(result, dry_run)


@feeds.command("add")
@click.argument("url")
@click.option("--slug", default=None, help="The feed's slug (default: derived from the feed's title, fetched once).")
@click.option("--tier", type=click.IntRange(min=0), default=DEFAULT_ADD_TIER, show_default=True, help=TIER_HELP)
def feeds_add(url: str, slug: str | None, tier: int) -> None:
    """Add one feed to the catalog (nothing happens when its URL is already there)."""
    from podinsight_dagster.fetch.catalog import CatalogError, NewFeed, add_feeds
    from podinsight_dagster.store.keys import InvalidKeyError, validate_feed_slug

    settings = _settings()
    if not url.lower().startswith(("http://", "https://")):
        raise click.ClickException(f"{url!r} is not an http(s) URL")
    title = None
    try:
        if slug:
            validate_feed_slug(slug)
        else:
            title = _feed_title(settings, url)
        result = add_feeds(settings.feeds_dir, [NewFeed(url=url, title=title, slug=slug)], tier=tier)
    except (CatalogError, InvalidKeyError) as exc:
        raise click.ClickException(str(exc))
    _say_added(result, dry_run=False)


def _feed_title(settings, url: str) -> str | None:
    """The feed's title, read once from the feed itself (which also proves it is a feed)."""
    from podinsight_dagster.fetch.discover import FEED_ACCEPT
    from podinsight_dagster.fetch.feeds import FeedParseError, parse_feed
    from podinsight_dagster.fetch.http import FetchError
    from podinsight_dagster.services import build_http

    try:
        got = build_http(settings).fetch_bytes(url, accept=FEED_ACCEPT)
        return parse_feed(got.content, source=url, base_url=got.final_url or url).title
    except (FetchError, FeedParseError, ValueError) as exc:
        raise click.ClickException(f"{url}: {exc} (give --slug to add it without reading it)".replace("\n", " "))
