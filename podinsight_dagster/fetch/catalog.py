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


# ---------------------------------------------------------------------------
# adding feeds (podrun feeds add / feeds import)
# ---------------------------------------------------------------------------
DEFAULT_ADD_TIER = 3  # the demo catalog uses tiers 1 and 2; added feeds go beside them unless told


@dataclass(frozen=True)
class NewFeed:
    """A feed to add: its URL, and a title (a slug is derived from it) or an explicit slug."""

    url: str
    title: str | None = None
    slug: str | None = None


@dataclass
class AddResult:
    path: Path                                   # the catalog file written (or that would have been)
    added: list[FeedSpec] = field(default_factory=list)
    skipped: list[tuple[NewFeed, str]] = field(default_factory=list)  # (feed, why: already listed as SLUG)


def url_identity(url: str) -> str:
    """A feed URL as compared for duplicates: scheme and host are case-insensitive, a trailing '/' is not a
    different feed."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url.strip())
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path.rstrip("/") or "/",
                       parts.query, ""))


def _catalog_files(feeds_dir: Path) -> list[Path]:
    return [feeds_dir] if feeds_dir.is_file() else sorted(feeds_dir.glob("tier*_feeds.yaml"))


def add_feeds(feeds_dir: Path, new: list[NewFeed], *, tier: int = DEFAULT_ADD_TIER,
              dry_run: bool = False) -> AddResult:
    """Add ``new`` to the catalog: into ``tier<N>_feeds.yaml`` of the folder (or into the one file named).

    A URL already in the catalog (or earlier in ``new``) is skipped, and said why. Slugs derived from
    titles are made unique with ``-2``, ``-3``...; an explicit slug already taken is an error. The
    file is rewritten atomically under an exclusive lock, so two imports at once both land; the
    entries are appended to the file's text when that reads back the same, keeping its comments.
    """
    import fcntl

    from podinsight_dagster.store.keys import slugify
    from podinsight_dagster.store.objects import atomic_writer

    feeds_dir = Path(feeds_dir)
    target = feeds_dir if feeds_dir.is_file() else feeds_dir / f"tier{tier}_feeds.yaml"
    lock_path = target.parent / ".catalog.lock"
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        files = _catalog_files(feeds_dir)
        existing = load_catalog(files) if files else Catalog()
        slugs = {f.slug for f in existing.feeds}
        by_url = {url_identity(f.url): f.slug for f in existing.feeds}
        result = AddResult(path=target)
        for feed in new:
            ident = url_identity(feed.url)
            if ident in by_url:
                result.skipped.append((feed, f"already in the catalog as {by_url[ident]}"))
                continue
            if feed.slug:
                slug = validate_feed_slug(feed.slug)
                if slug in slugs:
                    raise CatalogError(f"feed slug {slug!r} is already in the catalog; choose another with --slug")
            else:
                stem = slugify(feed.title or _url_words(feed.url))
                slug, n = stem, 2
                while slug in slugs:
                    suffix = f"-{n}"
                    slug, n = stem[:48 - len(suffix)].rstrip("-") + suffix, n + 1
            slugs.add(slug)
            by_url[ident] = slug
            result.added.append(FeedSpec(slug=slug, url=feed.url.strip(), tier=tier))
        if result.added and not dry_run:
            _write_entries(target, result.added, atomic_writer)
    return result


def _url_words(url: str) -> str:
    """Words for a slug when a feed has no title: its host and path (``feeds.example.com/show`` -> ...)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    path = parts.path.rsplit(".", 1)[0] if parts.path.endswith((".xml", ".rss")) else parts.path
    return f"{parts.hostname or ''} {path}"


def _entry_line(row: dict, indent: str) -> str:
    return indent + "- " + yaml.safe_dump(row, default_flow_style=True, sort_keys=False, width=10_000).strip() + "\n"


def _write_entries(target: Path, entries: list[FeedSpec], atomic_writer) -> None:
    old_text = target.read_text(encoding="utf-8") if target.exists() else ""
    old_doc = (yaml.safe_load(old_text) or {}) if old_text.strip() else {}
    rows = [{"slug": e.slug, "url": e.url, "tier": e.tier} for e in entries]
    old_rows = list(old_doc.get("feeds") or [])
    want = {**old_doc, "feeds": old_rows + rows}
    text = None
    if old_rows:
        # Appending keeps comments and layout, when it reads back as the whole list (both list indents).
        for indent in ("  ", ""):
            appended = old_text.rstrip("\n") + "\n" + "".join(_entry_line(r, indent) for r in rows)
            try:
                if yaml.safe_load(appended) == want:
                    text = appended
                    break
            except yaml.YAMLError:
                continue
    if text is None and set(old_doc) <= {"feeds"}:  # one entry a line, as the README writes a catalog
        text = "feeds:\n" + "".join(_entry_line(r, "  ") for r in old_rows + rows)
    if text is None:  # the file's shape allows neither (feeds not last, flow style): written again
        text = yaml.safe_dump(want, sort_keys=False, width=10_000)
    with atomic_writer(target, "w") as fh:
        fh.write(text)


def set_feed_url(feeds_dir: Path, slug: str, url: str) -> Path:
    """Point catalog entry ``slug`` at ``url`` (a show that moved keeps its slug, so its episodes); returns the file.

    The old URL's text is replaced in place when that reads back right (comments kept); else the file is
    written again. Under the same lock as :func:`add_feeds`.
    """
    import fcntl

    from podinsight_dagster.store.objects import atomic_writer

    feeds_dir = Path(feeds_dir)
    lock_dir = feeds_dir.parent if feeds_dir.is_file() else feeds_dir
    with open(lock_dir / ".catalog.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for path in _catalog_files(feeds_dir):
            doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            rows = doc.get("feeds") or []
            hits = [i for i, row in enumerate(rows) if isinstance(row, dict) and str(row.get("slug")) == slug]
            if not hits:
                continue
            old = str(rows[hits[0]]["url"])
            rows[hits[0]] = {**rows[hits[0]], "url": url}
            want = {**doc, "feeds": rows}
            text = path.read_text(encoding="utf-8")
            replaced = text.replace(old, url) if text.count(old) == 1 else None
            try:
                ok = replaced is not None and yaml.safe_load(replaced) == want
            except yaml.YAMLError:
                ok = False
            with atomic_writer(path, "w") as fh:
                fh.write(replaced if ok else yaml.safe_dump(want, sort_keys=False, width=10_000))
            return path
    raise CatalogError(f"no feed {slug!r} in the catalog")
