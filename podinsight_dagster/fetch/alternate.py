"""Downloading a ``podcast:alternateEnclosure`` instead of the enclosure (fetch/feeds.py chooses it).

A smaller rendition (lower bitrate) gives the same words for less transfer. When the feed gives a
``podcast:integrity`` SRI value (``sha256-<base64>``, or sha384/sha512; several may be listed), the
downloaded bytes must match one of them. If the alternate cannot be downloaded or does not match,
the enclosure itself is downloaded in the same attempt, and why is recorded (meta.json
``alternate_error``): the episode never fails for want of its alternate.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from pathlib import Path

from podinsight_dagster.fetch.http import Download, FetchError

SRI_ALGORITHMS = ("sha256", "sha384", "sha512")


class IntegrityError(ValueError):
    pass


def check_integrity(path: Path, sha256_hex: str, sri: str | None) -> None:
    """Raise IntegrityError unless the file matches one of the SRI hashes (no usable hash: nothing to check)."""
    wanted = []
    for token in (sri or "").split():
        algo, _, value = token.partition("-")
        algo = algo.lower()
        if algo in SRI_ALGORITHMS and value:
            try:
                wanted.append((algo, base64.b64decode(value.split("?")[0], validate=True)))
            except (binascii.Error, ValueError):
                continue
    if not wanted:
        return
    digests = {"sha256": bytes.fromhex(sha256_hex)}
    for algo, digest in wanted:
        if algo not in digests:
            h = hashlib.new(algo)
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
            digests[algo] = h.digest()
        if digests[algo] == digest:
            return
    got = base64.b64encode(digests[wanted[0][0]]).decode()
    raise IntegrityError(f"podcast:integrity mismatch: the feed says {sri}, the file is {wanted[0][0]}-{got}")


def download_preferred(http, rec, dest: Path, state_for=None) -> tuple[Download, str | None]:
    """Download the episode's alternate when it has one (checked), else or on failure its enclosure.

    ``state_for(url)``: what an earlier try left in ``dest`` for that URL (fetch/partial.py), to resume.
    Returns the download and, when the alternate was given up, why.
    """
    def get(url: str) -> Download:
        return http.download(url, dest, state=state_for(url) if state_for else None)

    if rec.download_url and rec.download_url != rec.enclosure_url:
        try:
            dl = get(rec.download_url)
            check_integrity(dest, dl.sha256, rec.download_integrity)
            return dl, None
        except (FetchError, IntegrityError) as exc:
            why = f"alternate enclosure {rec.download_url}: {exc}".replace("\n", " ")
        return get(rec.enclosure_url), why
    return get(rec.enclosure_url), None
