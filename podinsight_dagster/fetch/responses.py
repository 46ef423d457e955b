"""What an HTTP fetch returns or raises (fetch/http.py): the errors, the results, per-host statistics, and
the checks on a response's first bytes (audio or not) and on Retry-After."""

from __future__ import annotations

import email.utils
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

class FetchError(Exception):
    """A fetch that failed; ``retryable`` says whether trying later may help."""

    retryable = False

    def __init__(self, message: str, *, url: str | None = None, status: int | None = None,
                 retry_after: float | None = None):
        super().__init__(message)
        self.url = url
        self.status = status
        self.retry_after = retry_after


class TransientFetchError(FetchError):
    retryable = True


class PermanentFetchError(FetchError):
    retryable = False


class ContentRejectedError(PermanentFetchError):
    """The server answered, but not with what we asked for (HTML, empty, too large)."""


# ---------------------------------------------------------------------------
# Statistics for the run-book metrics (PerHost429, GBTransferred, ...)
# ---------------------------------------------------------------------------
@dataclass
class HostStats:
    requests: int = 0
    status_429: int = 0
    errors: int = 0
    bytes: int = 0


class FetchStats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.hosts: dict[str, HostStats] = {}

    def record(self, host: str, *, status: int | None = None, nbytes: int = 0, error: bool = False) -> None:
        with self._lock:
            st = self.hosts.setdefault(host, HostStats())
            if status is not None or error:
                st.requests += 1
            if status == 429:
                st.status_429 += 1
            if error:
                st.errors += 1
            st.bytes += nbytes

    def snapshot(self) -> dict[str, HostStats]:
        with self._lock:
            return {h: HostStats(**vars(s)) for h, s in self.hosts.items()}


# ---------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------
@dataclass
class FetchedBytes:
    url: str
    final_url: str
    status: int
    content: bytes
    headers: Mapping[str, str]
    etag: str | None = None
    last_modified: str | None = None
    permanent_redirect: str | None = None  # where a 301/308 said the resource now lives

    @property
    def not_modified(self) -> bool:
        return self.status == 304


@dataclass
class Download:
    url: str
    final_url: str
    path: Path
    bytes: int
    sha256: str
    content_type: str | None
    audio_format: str
    etag: str | None = None
    last_modified: str | None = None
    attempts: int = 1
    resumed: int = 0
    restarts: int = 0
    resumed_from: int = 0  # bytes an earlier process left in the partial file, resumed


# ---------------------------------------------------------------------------
# Audio sniffing
# ---------------------------------------------------------------------------
def sniff_audio(head: bytes) -> str | None:
    """The audio container the first bytes show, or None if they are not audio."""
    if head.startswith(b"ID3"):
        return "mp3"
    if len(head) >= 2 and head[0] == 0xFF and (head[1] & 0xF6) == 0xF0:
        return "aac"  # ADTS
    if len(head) >= 2 and head[0] == 0xFF and (head[1] & 0xE0) == 0xE0:
        return "mp3"  # MPEG audio frame sync
    if head[4:8] == b"ftyp":
        return "m4a"
    if head.startswith(b"OggS"):
        return "ogg"
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return "wav"
    if head.startswith(b"fLaC"):
        return "flac"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "webm"
    return None


def _describe_non_audio(head: bytes) -> str:
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "an HTML page"
    if text.startswith(b"<"):
        return "an XML/HTML document"
    if text.startswith((b"{", b"[")):
        return "a JSON document"
    return f"unrecognised bytes {head[:8].hex()}"


def parse_retry_after(value: str | None, cap: float) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date), capped."""
    if not value:
        return None
    value = value.strip()
    try:
        secs = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when is None:
            return None
        secs = when.timestamp() - time.time()
    return max(0.0, min(secs, cap))


# ---------------------------------------------------------------------------
# The client
# ---------------------------------------------------------------------------
