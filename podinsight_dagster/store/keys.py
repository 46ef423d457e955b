"""Safe, stable keys for feeds and episodes.

Every stage addresses an episode as ``<feed_slug>/<guid_key>`` (run-book §2): the
same string is the Dagster partition key, the storage prefix in the raw and stage
buckets and the checkpoint row id. Publishers put anything in ``<guid>``: URLs,
spaces, unicode, ``../../etc/passwd`` or kilobytes of text. Commas, brackets,
``...``, spaces and a leading ``/`` break the Dagster UI, backfills or IO managers,
and path separators would escape the storage root, so a GUID is used verbatim only
when it is short and made of boring characters; anything else is hashed.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

FEED_SLUG_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,47}")
SAFE_GUID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# 16 hex digits = 64 bits of sha256: collisions need ~4 billion episodes in one feed.
HASH_HEX_DIGITS = 16
HASH_PREFIX = "h-"


class InvalidKeyError(ValueError):
    """A feed slug, GUID or partition key that cannot be used."""


def validate_feed_slug(slug: str) -> str:
    """Return ``slug`` if it is a valid feed slug, else raise InvalidKeyError."""
    if not isinstance(slug, str) or not FEED_SLUG_RE.fullmatch(slug):
        raise InvalidKeyError(
            f"invalid feed slug {slug!r}: use 1-48 characters of a-z, 0-9 and '-', "
            "starting with a letter or digit"
        )
    return slug


def slugify(text: str) -> str:
    """Derive a feed slug from free text (a title or a host name)."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:48].strip("-")
    return slug or "feed"


def guid_key(guid: str | None, enclosure_url: str | None = None) -> str:
    """The storage- and partition-safe key of an episode GUID.

    The GUID itself when it matches ``[A-Za-z0-9][A-Za-z0-9._-]{0,63}`` (and holds no
    ``..``, which would read as a parent folder or an ellipsis), otherwise
    ``h-`` + 64 bits of its sha256 in hex. A missing or blank GUID falls back to the
    enclosure URL, which identifies the file the publisher serves.
    """
    source = guid.strip() if isinstance(guid, str) else ""
    if not source:
        source = (enclosure_url or "").strip()
        if not source:
            raise InvalidKeyError("episode has neither a GUID nor an enclosure URL")
        return _hashed(source)
    if SAFE_GUID_RE.fullmatch(source) and ".." not in source:
        return source
    return _hashed(source)


def _hashed(text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return HASH_PREFIX + digest[:HASH_HEX_DIGITS]


def partition_key(feed_slug: str, guid_key_: str) -> str:
    """``<feed_slug>/<guid_key>``: the Dagster partition and storage prefix of an episode."""
    validate_feed_slug(feed_slug)
    if not SAFE_GUID_RE.fullmatch(guid_key_) or ".." in guid_key_:
        raise InvalidKeyError(f"invalid guid key {guid_key_!r}")
    return f"{feed_slug}/{guid_key_}"


@dataclass(frozen=True)
class EpisodeKey:
    feed_slug: str
    guid_key: str

    @property
    def partition_key(self) -> str:
        return partition_key(self.feed_slug, self.guid_key)

    @classmethod
    def parse(cls, key: str) -> "EpisodeKey":
        """Split and validate a partition key; raises InvalidKeyError for anything unsafe."""
        slug, sep, gkey = key.partition("/")
        if not sep:
            raise InvalidKeyError(f"episode key {key!r} is not of the form <feed_slug>/<guid_key>")
        partition_key(slug, gkey)
        return cls(slug, gkey)

    def __str__(self) -> str:
        return self.partition_key
