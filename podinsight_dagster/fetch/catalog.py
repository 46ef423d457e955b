"""The feed catalog: ``feeds/tier*_feeds.yaml``, each a list of ``{slug, url, tier}`` under ``feeds:``.

An optional ``host_limits:`` mapping (hostname -> concurrent requests) overrides
the run-book's per-host defaults. Any other key is an error naming the closest known one: a
mistyped ``host_limts:`` silently ignored would mean no limit at all.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from podinsight_dagster.store.keys import InvalidKeyError, validate_feed_slug


class CatalogError(ValueError):
    pass


CATALOG_KEYS = ("feeds", "host_limits")
FEED_KEYS = ("slug", "url", "tier")


def _unknown_keys(where: str, given, known: tuple[str, ...]) -> None:
    """CatalogError for the first key not in ``known``, naming the closest known one."""
    for key in given:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}?" if close else f"the keys are {', '.join(known)}"
            raise CatalogError(f"{where}: unknown key {str(key)!r} ({hint})")


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
    _unknown_keys(str(path), doc, CATALOG_KEYS)
    feeds = []
    for i, item in enumerate(doc.get("feeds") or []):
        if not isinstance(item, dict) or "slug" not in item or "url" not in item:
            raise CatalogError(f"{path}: feeds[{i}] needs 'slug' and 'url'")
        try:
            slug = validate_feed_slug(str(item["slug"]))
        except InvalidKeyError as exc:
            raise CatalogError(f"{path}: feeds[{i}]: {exc}") from exc
        _unknown_keys(f"{path}: feeds[{i}] ({slug})", item, FEED_KEYS)
        url = str(item["url"]).strip()
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise CatalogError(f"{path}: feeds[{i}] ({slug}): url must be an http:// or https:// address, "
                               f"not {_yaml(item['url'])}")
        tier = _whole_number(item.get("tier"))
        if tier is False:
            raise CatalogError(f"{path}: feeds[{i}] ({slug}): tier must be a whole number, not {_yaml(item['tier'])}")
        feeds.append(FeedSpec(slug=slug, url=url, tier=tier))
    limits = doc.get("host_limits") or {}
    if not isinstance(limits, dict):
        raise CatalogError(f"{path}: host_limits must map hostnames to positive whole numbers")
    for host, value in limits.items():
        n = _whole_number(value)
        if n is False or n is None or n <= 0:
            raise CatalogError(f"{path}: host_limits: {host} must be a positive whole number, not {_yaml(value)}")
    return Catalog(feeds=feeds, host_limits={str(k).lower(): _whole_number(v) for k, v in limits.items()},
                   sources=[str(path)])


def _yaml(value) -> str:
    """A value as the catalog spells it (``true``, ``"one"``, ``1.5``)."""
    return json.dumps(value, default=str)


def _whole_number(value) -> int | None | bool:
    """``value`` as an int (YAML ints, or digits in a string); None when absent; False when not a number.

    YAML reads ``true`` and ``yes`` as booleans, which Python would take for 1: refused.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return False


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
