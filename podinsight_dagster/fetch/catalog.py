"""The feed catalog: ``feeds/tier*_feeds.yaml``, each a list of ``{slug, url, tier}`` under ``feeds:``.

An optional ``host_limits:`` mapping (hostname -> concurrent requests) overrides
the run-book's per-host defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from podinsight_dagster.store.keys import InvalidKeyError, validate_feed_slug


class CatalogError(ValueError):
    pass


@dataclass(frozen=True)
class FeedSpec:
    slug: str
    url: str
    tier: int | None = None


@dataclass
class Catalog:
    feeds: list[FeedSpec] = field(default_factory=list)
    host_limits: dict[str, int] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)

    def by_slug(self) -> dict[str, FeedSpec]:
        return {f.slug: f for f in self.feeds}


def load_catalog_file(path: Path) -> Catalog:
    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise CatalogError(f"{path}: cannot read catalog: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("feeds", []), list):
        raise CatalogError(f"{path}: expected a mapping with a 'feeds:' list")
    feeds = []
    for i, item in enumerate(doc.get("feeds") or []):
        if not isinstance(item, dict) or "slug" not in item or "url" not in item:
            raise CatalogError(f"{path}: feeds[{i}] needs 'slug' and 'url'")
        try:
            slug = validate_feed_slug(str(item["slug"]))
        except InvalidKeyError as exc:
            raise CatalogError(f"{path}: feeds[{i}]: {exc}") from exc
        tier = item.get("tier")
        feeds.append(FeedSpec(slug=slug, url=str(item["url"]).strip(), tier=int(tier) if tier is not None else None))
    limits = doc.get("host_limits") or {}
    if not isinstance(limits, dict) or not all(isinstance(v, int) and v > 0 for v in limits.values()):
        raise CatalogError(f"{path}: host_limits must map hostnames to positive integers")
    return Catalog(feeds=feeds, host_limits={str(k).lower(): v for k, v in limits.items()}, sources=[str(path)])


def load_catalog(paths: list[Path] | Path) -> Catalog:
    """Load one catalog file, or every ``tier*_feeds.yaml`` in a folder; slugs must be unique."""
    if isinstance(paths, Path) and paths.is_dir():
        files = sorted(paths.glob("tier*_feeds.yaml"))
        if not files:
            raise CatalogError(f"{paths}: no tier*_feeds.yaml files")
    else:
        files = [paths] if isinstance(paths, Path) else list(paths)
    merged = Catalog()
    for f in files:
        cat = load_catalog_file(f)
        for feed in cat.feeds:
            if feed.slug in merged.by_slug():
                raise CatalogError(f"{f}: feed slug {feed.slug!r} is listed twice")
            merged.feeds.append(feed)
        merged.host_limits.update(cat.host_limits)
        merged.sources.extend(cat.sources)
    return merged
