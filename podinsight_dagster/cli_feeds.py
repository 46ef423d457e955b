"""``podrun feeds``: the catalog's feeds (import an OPML file, add one URL, inspect one feed).

podrun feeds import FILE.opml [--tier N] [--dry-run]   the feeds of a podcast app's export
podrun feeds add URL [--slug S] [--tier N]              one feed (its slug from its title unless given)
podrun feeds inspect URL_OR_FILE [--json]               = podrun feed inspect
podrun publish FEED [--feed-copy] [--base-url URL]      Podcasting 2.0 tags for the publisher

Registered on ``podrun``'s main group by cli.py; the domain logic is in fetch/opml.py and
fetch/catalog.py.
"""

from __future__ import annotations

from pathlib import Path

import click

from podinsight_dagster.fetch.catalog import DEFAULT_ADD_TIER, CatalogError

TIER_HELP = f"Catalog tier: the entries go to tier<N>_feeds.yaml (default {DEFAULT_ADD_TIER})."


@click.group()
def feeds() -> None:
    """The feed catalog: import an OPML file, add a feed, inspect a feed."""


def _settings():
    from podinsight_dagster.cli_common import _settings as settings_with_flags

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
    from podinsight_dagster.fetch.catalog import NewFeed, add_feeds, set_feed_url
    from podinsight_dagster.store.keys import InvalidKeyError, validate_feed_slug

    settings = _settings()
    if not url.lower().startswith(("http://", "https://")):
        raise click.ClickException(f"{url!r} is not an http(s) URL")
    title = podcast_guid = None
    try:
        if slug:
            validate_feed_slug(slug)
        else:
            title, podcast_guid = _feed_title(settings, url)
            moved_from = _known_show(settings, podcast_guid, url)
            if moved_from:  # the same show at a new address: its entry follows it, its episodes stay
                path = set_feed_url(settings.feeds_dir, moved_from, url)
                click.echo(f"{moved_from} moved to {url} (the same podcast:guid {podcast_guid}): updated {path}; "
                           "its episodes stay")
                return
        result = add_feeds(settings.feeds_dir, [NewFeed(url=url, title=title, slug=slug)], tier=tier)
    except (CatalogError, InvalidKeyError) as exc:
        raise click.ClickException(str(exc))
    _say_added(result, dry_run=False)


def _known_show(settings, podcast_guid: str | None, url: str) -> str | None:
    """The catalog slug already polled as the show with this podcast:guid at another URL, if any."""
    from podinsight_dagster.cli_common import _services
    from podinsight_dagster.fetch.catalog import load_catalog, url_identity

    if not podcast_guid:
        return None
    try:
        slugs = {f.slug: f.url for f in load_catalog(settings.feeds_dir).feeds}
    except CatalogError:
        return None
    services = _services(settings)
    try:
        return next((f.slug for f in services.checkpoints.feeds() if f.podcast_guid == podcast_guid
                     and f.slug in slugs and url_identity(slugs[f.slug]) != url_identity(url)), None)
    finally:
        services.close()


def _feed_title(settings, url: str) -> tuple[str | None, str | None]:
    """The feed's title and podcast:guid, read once from the feed itself (which also proves it is a feed)."""
    from podinsight_dagster.fetch.discover import FEED_ACCEPT
    from podinsight_dagster.fetch.feeds import FeedParseError, parse_feed
    from podinsight_dagster.fetch.http import FetchError
    from podinsight_dagster.services import build_http

    try:
        got = build_http(settings).fetch_bytes(url, accept=FEED_ACCEPT)
        feed = parse_feed(got.content, source=url, base_url=got.final_url or url)
        return feed.title, feed.podcast_guid
    except (FetchError, FeedParseError, ValueError) as exc:
        raise click.ClickException(f"{url}: {exc} (give --slug to add it without reading it)".replace("\n", " "))


@click.command("publish")
@click.argument("feed_slug")
@click.option("--feed-copy", is_flag=True,
              help="Print an enriched copy of the feed (fetched now) with the tags in its items, not the tags alone.")
@click.option("--base-url", default=None,
              help="Public http(s) address of the stage bucket (default: PODINSIGHT_PUBLISH_BASE_URL).")
def publish(feed_slug: str, feed_copy: bool, base_url: str | None) -> None:
    """The Podcasting 2.0 tags of a feed's episodes (transcripts, chapters, soundbites), for its publisher."""
    from podinsight_dagster.cli_common import _services, _settings as settings_with_flags
    from podinsight_dagster.fetch.catalog import CatalogError, load_catalog
    from podinsight_dagster.publish.tags import PublishError, feed_tags, tags_text

    settings = settings_with_flags(publish_base_url=base_url)
    try:
        spec = load_catalog(settings.feeds_dir).by_slug().get(feed_slug)
    except CatalogError as exc:
        raise click.ClickException(str(exc))
    if spec is None:
        raise click.ClickException(f"no feed {feed_slug!r} in the catalog ({settings.feeds_dir})")
    services = _services(settings)
    try:
        episodes = feed_tags(services, feed_slug, settings.publish_base_url)
    except PublishError as exc:
        raise click.ClickException(str(exc))
    tagged = sum(1 for e in episodes if e.tags)
    if not feed_copy:
        click.echo(tags_text(episodes), nl=False)
        click.echo(f"tags for {tagged} of {len(episodes)} episodes of {feed_slug} (the others are not transcribed "
                   "yet)" if tagged < len(episodes) else f"tags for {tagged} episodes of {feed_slug}", err=True)
        return
    click.echo(_enriched_copy(services, spec, episodes), nl=False)


def _enriched_copy(services, spec, episodes) -> str:
    from podinsight_dagster.fetch.discover import FEED_ACCEPT
    from podinsight_dagster.fetch.feeds import FeedParseError
    from podinsight_dagster.fetch.http import FetchError
    from podinsight_dagster.publish.tags import PublishError, enrich_feed

    known = services.checkpoints.get_feed(spec.slug)
    url = (known.effective_url if known and known.url == spec.url else None) or spec.url
    try:
        got = services.http.fetch_bytes(url, accept=FEED_ACCEPT)
        doc, enriched = enrich_feed(got.content, episodes, feed_slug=spec.slug, base_url=got.final_url or url,
                                    source=f"feed {spec.slug} ({url})")
    except (FetchError, FeedParseError, PublishError) as exc:
        raise click.ClickException(str(exc).replace("\n", " "))
    tagged = sum(1 for e in episodes if e.tags)
    click.echo(f"{spec.slug}: tags inserted in {enriched} items ({tagged} episodes have tags)", err=True)
    if enriched < tagged:
        click.echo(f"{spec.slug}: {tagged - enriched} tagged episodes are no longer in the feed", err=True)
    return doc.decode("utf-8")
