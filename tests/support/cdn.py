"""A small, real HTTP/1.1 "podcast CDN" on loopback, with injectable faults.

Test tooling (not part of the installed package; ``podrun demo`` has its own
small static server, podinsight_dagster/demo/server.py). The test-suite and
bench/ use it to serve feeds and audio without touching the network, and to
prove that the downloader survives the ways real CDNs misbehave: slow
answers, throttled or trickling bodies, rate limiting with ``Retry-After``,
connections reset or closed mid-body, lying ``Content-Length`` headers,
ignored ``Range`` requests, files that change between a download and its
resume, HTML error pages served with ``200 OK``, redirect chains and loops.

It is deliberately a *real* server (sockets, threads, HTTP/1.1 keep-alive)
rather than a mock of ``requests``: the failure modes we care about live in
the transport (partial reads, resets, pooled connections), and only a real
socket reproduces them faithfully.

Small files are served from memory. Big ones can be streamed from disk a
slice at a time (``add_file(path, Path(...))``, or ``add_directory`` for
non-text files over ``STREAM_THRESHOLD``), with an ETag made of size and
mtime, so a benchmark can serve many 300 MB files without holding them.

Standard library only, and it must never import dagster: the tests and the
benchmarks start it in processes where dagster may not be importable or wanted.

Typical use::

    with PodcastCDN() as cdn:
        cdn.add_file("/feed.xml", b"<rss>... {base_url}/ep1.mp3 ...</rss>")
        cdn.add_file("/ep1.mp3", audio_bytes)
        cdn.set_fault("/ep1.mp3", Fault(status=503, retry_after="1", times=2))
        download(cdn.base_url + "/feed.xml")
        assert cdn.request_count("/ep1.mp3") == 3

Command line (serves a directory until Ctrl-C)::

    python -m tests.support.cdn --root feeds --port 8000
"""

from __future__ import annotations

import argparse
import dataclasses
import email.utils
import hashlib
import http
import mimetypes
import os
import re
import signal
import socket
import socketserver
import struct
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator
from urllib.parse import unquote, urlsplit

__all__ = ["Fault", "PodcastCDN", "RequestRecord", "guess_content_type"]

# The placeholder that text resources may contain; replaced with the server's
# base URL at serve time so bundled feeds work on whatever port we were given.
BASE_URL_PLACEHOLDER = b"{base_url}"

# Extensions we know better than ``mimetypes`` (whose answers depend on the
# host's /etc/mime.types and are wrong or missing for several podcast types).
_CONTENT_TYPES = {
    ".mp3": "audio/mpeg",
    ".m4a": "audio/mp4",
    ".aac": "audio/aac",
    ".ogg": "audio/ogg",
    ".opus": "audio/ogg",
    ".wav": "audio/wav",
    ".flac": "audio/flac",
    ".xml": "application/rss+xml",
    ".rss": "application/rss+xml",
    ".atom": "application/atom+xml",
    ".vtt": "text/vtt",
    ".srt": "application/x-subrip",
    ".json": "application/json",
    ".yaml": "application/yaml",
    ".yml": "application/yaml",
    ".txt": "text/plain",
    ".html": "text/html",
    ".htm": "text/html",
}

# Files with these extensions get ``{base_url}`` substitution even when their
# content type does not look textual (e.g. application/x-subrip).
_TEXT_EXTENSIONS = frozenset(
    {".xml", ".rss", ".atom", ".yaml", ".yml", ".json", ".vtt", ".srt", ".txt", ".html", ".htm"}
)

# Unthrottled bodies are written in chunks of this size: big enough to be
# fast, small enough that stop() never waits behind one huge sendall().
_CHUNK = 64 * 1024

# Idle keep-alive connections (and writes to a client that stopped reading)
# are dropped after this long, so a forgotten client cannot pin a thread.
_CONNECTION_TIMEOUT_S = 30.0

# How long stop() waits for in-flight handler threads; they are woken up
# explicitly, so this is only a safety net against a wedged thread.
_STOP_JOIN_TIMEOUT_S = 5.0

# The largest request body we are willing to read and discard to keep a
# keep-alive connection in sync; anything bigger just closes the connection.
_MAX_DRAINED_BODY = 1024 * 1024

# add_directory() streams non-text files at least this big from disk instead of
# caching them in memory (a benchmark serves many 300 MB files).
STREAM_THRESHOLD = 16 * 1024 * 1024


def guess_content_type(path: str) -> str:
    """The Content-Type we serve for ``path``, based on its extension."""
    suffix = Path(urlsplit(path).path).suffix.lower()
    if suffix in _CONTENT_TYPES:
        return _CONTENT_TYPES[suffix]
    guessed, _ = mimetypes.guess_type(path, strict=False)
    return guessed or "application/octet-stream"


def _is_text(path: str, content_type: str) -> bool:
    """Whether ``{base_url}`` substitution applies to this resource."""
    if Path(path).suffix.lower() in _TEXT_EXTENSIONS:
        return True
    media_type = content_type.split(";", 1)[0].strip().lower()
    return (
        media_type.startswith("text/")
        or media_type.endswith("/xml")
        or media_type.endswith("+xml")
        or media_type.endswith("/json")
        or media_type.endswith("+json")
    )


def _normalize_path(path: str) -> str:
    """The lookup key for a URL path: percent-decoded, with a leading slash.

    Requests arrive percent-encoded while callers register plain paths, so both
    sides are decoded to compare them.  The query string is not part of the
    key: CDNs serve the same object for ``/ep.mp3?cache-buster``.
    """
    path = unquote(urlsplit(path).path)
    return path if path.startswith("/") else "/" + path


def _etag(body: bytes) -> str:
    """Strong ETag: the quoted SHA-1 of exactly the bytes served."""
    return '"' + hashlib.sha1(body).hexdigest() + '"'


def _utc_seconds(moment: datetime) -> datetime:
    """``moment`` as aware UTC truncated to whole seconds (HTTP date resolution).

    Naive datetimes are taken to be UTC, which is what callers mean in practice.
    Truncating matters: If-Modified-Since echoes our second-resolution header
    back, and comparing it with a microsecond-precise time would never match.
    """
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).replace(microsecond=0)


def _http_date(moment: datetime) -> str:
    return email.utils.format_datetime(moment, usegmt=True)


def _parse_http_date(value: str) -> datetime | None:
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed is None:
        return None
    return _utc_seconds(parsed)


def _shift_table(revision: int) -> bytes:
    shift = (revision - 1) % 255 + 1
    return bytes((i + shift) & 0xFF for i in range(256))


def _mutate(body: bytes, revision: int) -> bytes:
    """A different body of the same length for the ``change_etag`` fault.

    Same length on purpose: a downloader that resumes by size alone (instead of
    checking ETag/If-Range) will happily stitch two versions together, and this
    is exactly the bug the fault exists to expose.  Every byte is shifted by a
    revision-dependent amount (never 0 mod 256), so no byte equals the original;
    ``bytes.translate`` keeps this fast even for large audio files.
    """
    return body.translate(_shift_table(revision))


class _DiskBody:
    """A file served straight from disk, a slice at a time: never whole in memory.

    Its ETag is derived from size and mtime (hashing 300 MB on every request
    would dominate a benchmark); ``mutated`` gives the ``change_etag`` version,
    shifted byte by byte exactly like :func:`_mutate`.
    """

    def __init__(self, file: Path, size: int, table: bytes | None = None) -> None:
        self.file, self.size, self.table = file, size, table

    def __len__(self) -> int:
        return self.size

    def mutated(self, revision: int) -> _DiskBody:
        return _DiskBody(self.file, self.size, _shift_table(revision))

    @contextmanager
    def window(self, start: int, end: int) -> Iterator[_FileWindow]:
        fd = os.open(self.file, os.O_RDONLY)
        try:
            yield _FileWindow(fd, start, end - start, self.table)
        finally:
            os.close(fd)


class _FileWindow:
    """``[start, start + length)`` of an open file, sliceable like the memoryview it stands in for."""

    def __init__(self, fd: int, start: int, length: int, table: bytes | None) -> None:
        self.fd, self.start, self.length, self.table = fd, start, length, table

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, item: slice) -> bytes:
        first, stop, _ = item.indices(self.length)
        data = os.pread(self.fd, max(0, stop - first), self.start + first)
        return data.translate(self.table) if self.table else data


@contextmanager
def _body_window(body: bytes | _DiskBody, start: int, end: int) -> Iterator[memoryview | _FileWindow]:
    if isinstance(body, _DiskBody):
        with body.window(start, end) as window:
            yield window
    else:
        yield memoryview(body)[start:end]


@dataclass
class Fault:
    """How a path should misbehave.  Several fields may be combined.

    They are applied in this order: ``times`` decides whether the fault applies
    to this request at all; then ``latency_s``; then the fields that replace
    the response entirely, for any path (``redirect_to``, then ``status``, then
    ``html_200``); then unknown paths get 404; then ``empty_body``; otherwise
    the file is served, altered by ``change_etag``, ``ignore_range`` and
    ``wrong_content_length``, with the body paced by ``trickle`` or
    ``bandwidth_bps`` and cut off by ``reset_after_bytes`` or
    ``truncate_after_bytes``.  A HEAD request has no body, so body faults do
    nothing for it (but it still counts towards ``times``).
    """

    latency_s: float = 0.0
    """Sleep this long before answering (interrupted by ``stop()``)."""
    bandwidth_bps: int | None = None
    """Throttle the body to this many bytes per second, sent in small chunks."""
    status: int | None = None
    """Answer this status (e.g. 429, 503, 404, 500) with a short text body."""
    retry_after: str | None = None
    """``Retry-After`` header value, sent with ``status``."""
    times: int | None = None
    """Apply the fault only to the first N requests for the path (counted from
    ``set_fault``), then serve normally.  ``None`` means always."""
    for_s: float | None = None
    """Apply the fault only for this many seconds, counted from the first
    request it applies to, then serve normally: an outage of that length
    wherever the client's first request falls.  ``outage_end(path)`` says when
    it ended (a ``time.monotonic()`` value, like ``RequestRecord.started``)."""
    reset_after_bytes: int | None = None
    """Send headers and this many body bytes, then abort the TCP connection
    with an RST (SO_LINGER 0) so the client sees "connection reset"."""
    truncate_after_bytes: int | None = None
    """Send this many body bytes and close cleanly (FIN), although
    Content-Length promised the full size."""
    ignore_range: bool = False
    """Ignore Range/If-Range: always answer 200 with the full body, while still
    advertising ``Accept-Ranges: bytes`` like the broken CDNs this emulates."""
    change_etag: bool = False
    """Serve a different body (same length) and ETag/Last-Modified on every
    request, as if the file changed between a download and its resume."""
    html_200: bool = False
    """Answer ``200 text/html`` with an HTML error page instead of the file."""
    wrong_content_length: int | None = None
    """Send this Content-Length value with the real body, then close."""
    trickle: bool = False
    """Send the body one byte per second."""
    redirect_to: str | None = None
    """Answer ``redirect_status`` with ``Location: redirect_to``.  Relative
    references are sent as-is (clients resolve them), ``{base_url}`` is
    substituted, and several redirects may form a loop."""
    redirect_status: int = 302
    empty_body: bool = False
    """Answer 200 with a zero-length body (Range and validators ignored).
    Unlike the other replacing faults, it needs the path to exist."""

    def __post_init__(self) -> None:
        # Fail at configuration time rather than with a confusing half-sent
        # response inside a server thread.
        if self.latency_s < 0:
            raise ValueError("latency_s must be >= 0")
        if self.for_s is not None and self.for_s <= 0:
            raise ValueError("for_s must be > 0 (or None)")
        for name in ("bandwidth_bps", "times"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 (or None)")
        for name in ("reset_after_bytes", "truncate_after_bytes", "wrong_content_length"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0 (or None)")
        if self.status is not None and not 200 <= self.status <= 599:
            raise ValueError("status must be a final status code (200-599)")
        if not 300 <= self.redirect_status <= 399:
            raise ValueError("redirect_status must be a 3xx status code")


@dataclass
class RequestRecord:
    """One request as the server saw it.

    ``started``/``finished`` are ``time.monotonic()`` values, so durations and
    overlaps can be compared across records (not wall-clock times).
    ``started`` is taken once the request head is parsed and ``finished`` just
    before the last byte of the response is written (see ``_Handler._complete``).
    ``bytes_sent`` counts response *body* bytes written.
    """

    method: str
    path: str
    headers: dict[str, str]
    status: int | None = None
    bytes_sent: int = 0
    started: float = 0.0
    finished: float | None = None
    fault: Fault | None = None
    """The fault applied to this request, if any (after ``times`` gating)."""


class _Resource:
    """A servable object: in-memory bytes, or a file read (and cached) on demand.

    Rendering (placeholder substitution + ETag) is cached because hashing a
    large audio file on every Range request of a resuming downloader would be
    needlessly slow.  File-backed resources re-read the file when its size or
    mtime changes, so the demo can edit a feed while the server runs.
    """

    def __init__(
        self,
        *,
        content_type: str,
        is_text: bool,
        data: bytes | None = None,
        file: Path | None = None,
        last_modified: datetime | None = None,
        stream: bool = False,
    ) -> None:
        self.content_type = content_type
        self.is_text = is_text
        self._data = data
        self._file = file
        self._stream = stream and file is not None
        self._last_modified = last_modified
        self._lock = threading.Lock()
        self._cache_key: tuple | None = None
        self._cache: tuple[bytes, str, datetime] | None = None

    def render(self, base_url: str) -> tuple[bytes | _DiskBody, str, datetime] | None:
        """``(body, etag, last_modified)`` as served, or None if the file vanished.

        A streamed file's body is a :class:`_DiskBody` (read slice by slice when sent).
        """
        if self._file is not None:
            try:
                stat = self._file.stat()
            except OSError:
                return None
            if self._stream:
                last_modified = _utc_seconds(datetime.fromtimestamp(stat.st_mtime, tz=timezone.utc))
                etag = f'"{stat.st_size:x}-{stat.st_mtime_ns:x}"'
                return _DiskBody(self._file, stat.st_size), etag, last_modified
            signature: tuple = (stat.st_mtime_ns, stat.st_size)
        else:
            signature = ()
        key = (signature, base_url)
        with self._lock:
            if self._cache_key == key and self._cache is not None:
                return self._cache
            if self._file is not None:
                try:
                    raw = self._file.read_bytes()
                except OSError:
                    return None
                last_modified = _utc_seconds(
                    datetime.fromtimestamp(stat.st_mtime, tz=timezone.utc)
                )
            else:
                assert self._data is not None and self._last_modified is not None
                raw, last_modified = self._data, self._last_modified
            body = raw.replace(BASE_URL_PLACEHOLDER, base_url.encode()) if self.is_text else raw
            self._cache_key, self._cache = key, (body, _etag(body), last_modified)
            return self._cache


class _ByteRange:
    """Outcome of evaluating a Range header against a body length."""

    FULL = "full"  # ignore the header, send 200 with everything
    PARTIAL = "partial"  # send 206 with [start, end)
    UNSATISFIABLE = "unsatisfiable"  # send 416

    _SPEC = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)

    def __init__(self, kind: str, start: int = 0, end: int = 0) -> None:
        self.kind, self.start, self.end = kind, start, end

    @classmethod
    def parse(cls, header: str, length: int) -> _ByteRange:
        # RFC 9110 §14.2: a server MAY ignore Range, and MUST ignore an invalid
        # one.  Multiple ranges would need multipart/byteranges, which no
        # podcast client uses, so they are ignored too (full 200).
        match = cls._SPEC.match(header)
        if match is None:
            return cls(cls.FULL)
        first, last = match.groups()
        if first:
            start = int(first)
            if last:
                end = int(last) + 1
                if end <= start:  # last-pos < first-pos: invalid
                    return cls(cls.FULL)
            else:
                end = length
            if start >= length:
                return cls(cls.UNSATISFIABLE)
            return cls(cls.PARTIAL, start, min(end, length))
        if last:  # suffix range "bytes=-N": the last N bytes
            suffix = int(last)
            if suffix == 0 or length == 0:
                return cls(cls.UNSATISFIABLE)
            return cls(cls.PARTIAL, max(0, length - suffix), length)
        return cls(cls.FULL)  # "bytes=-": invalid


class _Handler(BaseHTTPRequestHandler):
    """Serves one connection (possibly several keep-alive requests)."""

    # HTTP/1.1 so clients keep connections alive: pooled connections are where
    # several downloader bugs (stale sockets, leftover bytes) show up.
    protocol_version = "HTTP/1.1"
    server_version = "PodcastCDN/1.0"
    timeout = _CONNECTION_TIMEOUT_S
    # Headers and body go out in separate writes; with Nagle's algorithm the
    # second write waits for the client's delayed ACK (~40 ms per response on
    # a reused connection), which made redirect chains crawl.  Pacing faults
    # also want every write on the wire immediately.
    disable_nagle_algorithm = True

    server: _CDNServer

    def version_string(self) -> str:
        # The default advertises the Python version too, which is noise here.
        return self.server_version

    def setup(self) -> None:
        super().setup()
        # Per-request state; reset at the start of every request because one
        # handler instance serves all requests of a keep-alive connection.
        self._record: RequestRecord | None = None
        self._reset_connection = False

    # -- quietness --------------------------------------------------------

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        # Tests make thousands of requests; per-request stderr noise would bury
        # real failures.  Use PodcastCDN.requests to see what happened.
        pass

    # -- bookkeeping -------------------------------------------------------

    def send_response(self, code: int, message: str | None = None) -> None:
        if self._record is not None and self._record.status is None:
            self._record.status = code
        super().send_response(code, message)

    def do_GET(self) -> None:  # noqa: N802 (name fixed by BaseHTTPRequestHandler)
        self._handle(head_only=False)

    def do_HEAD(self) -> None:  # noqa: N802
        self._handle(head_only=True)

    def _handle(self, head_only: bool) -> None:
        cdn = self.server.cdn
        self._reset_connection = False
        self._record = RequestRecord(
            method=self.command,
            path=_normalize_path(self.path),
            headers=dict(self.headers.items()),
            started=time.monotonic(),
        )
        cdn._request_started(self._record)
        try:
            self._drain_request_body()
            self._serve(head_only)
        except OSError:
            # The client went away, or stop() shut the socket under us: there
            # is nobody left to answer, just make sure the connection ends.
            self.close_connection = True
        finally:
            self._complete()  # no-op unless the response ended early

    def finish(self) -> None:
        if self._reset_connection:
            self._abort_with_rst()
            return
        super().finish()

    # -- the response logic -------------------------------------------------

    def _serve(self, head_only: bool) -> None:
        cdn = self.server.cdn
        record = self._record
        assert record is not None
        fault = cdn._claim_fault(record.path)
        record.fault = fault
        f = fault or _NO_FAULT

        if f.latency_s and self._sleep(f.latency_s):
            self.close_connection = True  # stopping: leave without answering
            return

        if f.redirect_to is not None:
            location = f.redirect_to.replace("{base_url}", self.server.base_url)
            body = f"Redirecting to {location}\n".encode()
            self._send_simple(f.redirect_status, body, "text/plain", head_only, {"Location": location})
            return

        if f.status is not None:
            extra = {"Retry-After": f.retry_after} if f.retry_after is not None else {}
            phrase = _reason(f.status)
            body = f"{f.status} {phrase}\n".encode()
            self._send_simple(f.status, body, "text/plain; charset=utf-8", head_only, extra)
            return

        if f.html_200:
            # What captive portals and some misconfigured CDNs do: a friendly
            # error page with a success status, which a naive downloader saves
            # as "episode.mp3".
            body = (
                b"<!DOCTYPE html>\n<html><head><title>Service Unavailable</title></head>"
                b"<body><h1>Service Unavailable</h1>"
                b"<p>The server is temporarily unable to service your request.</p>"
                b"</body></html>\n"
            )
            self._send_simple(200, body, "text/html; charset=utf-8", head_only, {"Cache-Control": "no-store"})
            return

        resource = cdn._lookup(record.path)
        rendered = resource.render(self.server.base_url) if resource is not None else None
        if resource is None or rendered is None:
            self._send_simple(404, b"404 Not Found\n", "text/plain; charset=utf-8", head_only)
            return
        body, etag, last_modified = rendered

        if f.empty_body:
            # Always a plain 200, whatever Range or validators the client sent:
            # the point is a "successful" download of nothing.
            empty = {"ETag": _etag(b""), "Last-Modified": _http_date(last_modified)}
            self._send_simple(200, b"", resource.content_type, head_only, empty)
            return

        if f.change_etag:
            revision = cdn._next_revision(record.path)
            if isinstance(body, _DiskBody):
                body = body.mutated(revision)
                etag = f'"{etag.strip(chr(34))}-r{revision}"'
            else:
                body = _mutate(body, revision)
                etag = _etag(body)
            # Move Last-Modified too, as a real change would; otherwise an
            # If-Range *date* would still match and hide the change.
            last_modified = last_modified + timedelta(seconds=revision)

        validators = {"ETag": etag, "Last-Modified": _http_date(last_modified)}

        if self._not_modified(etag, last_modified):
            self.send_response(304)
            for name, value in validators.items():
                self.send_header(name, value)
            self._end_headers(last=True)
            return

        status, start, end = 200, 0, len(body)
        headers = {"Content-Type": resource.content_type, "Accept-Ranges": "bytes", **validators}
        range_header = self.headers.get("Range")
        # Range is only defined for GET (RFC 9110 §14.2); HEAD must ignore it.
        if range_header is not None and not head_only and not f.ignore_range:
            if self._if_range_matches(etag, last_modified):
                byte_range = _ByteRange.parse(range_header, len(body))
                if byte_range.kind == _ByteRange.UNSATISFIABLE:
                    self._send_simple(
                        416, b"", "text/plain", head_only, {"Content-Range": f"bytes */{len(body)}"}
                    )
                    return
                if byte_range.kind == _ByteRange.PARTIAL:
                    status, start, end = 206, byte_range.start, byte_range.end
                    headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(body)}"

        headers["Content-Length"] = str(end - start)
        if f.wrong_content_length is not None:
            headers["Content-Length"] = str(f.wrong_content_length)
            # The framing is now a lie, so this connection cannot carry another
            # response; saying so keeps the client's pool out of trouble.
            headers["Connection"] = "close"

        limit = 0 if head_only else _body_limit(end - start, f)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self._end_headers(last=limit == 0)
        if limit:
            with _body_window(body, start, end) as window:
                self._send_body(window, limit, f)
        self._after_body(head_only, f)

    def _send_simple(
        self,
        status: int,
        body: bytes,
        content_type: str,
        head_only: bool,
        extra_headers: dict[str, str] | None = None,
    ) -> None:
        """A small, correctly framed response (errors, redirects, fault pages)."""
        self.send_response(status)
        for name, value in (extra_headers or {}).items():
            self.send_header(name, value)
        if status in (204, 304):  # these never carry a body (RFC 9110 §6.4.1)
            self._end_headers(last=True)
            return
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        send_body = bool(body) and not head_only
        self._end_headers(last=not send_body)
        if send_body:
            self._write(body, last=True)

    def _send_body(self, body: memoryview | _FileWindow, limit: int, f: Fault) -> None:
        """Write the first ``limit`` bytes of ``body``, paced as ``f`` says."""
        rate = 1 if f.trickle else f.bandwidth_bps
        # ~20 writes per second when throttled: smooth enough for clients that
        # measure throughput, cheap enough not to matter.
        chunk = max(1, min(_CHUNK, rate // 20)) if rate else _CHUNK
        began = time.monotonic()
        sent = 0
        while sent < limit:
            if rate:
                # Pace against the start time rather than sleeping a fixed
                # amount per chunk, so write overhead does not add up.
                delay = began + sent / rate - time.monotonic()
                if delay > 0 and self._sleep(delay):
                    self.close_connection = True  # stopping mid-body
                    return
            n = min(chunk, limit - sent)
            self._write(body[sent : sent + n], last=sent + n == limit)
            sent += n

    def _after_body(self, head_only: bool, f: Fault) -> None:
        """Decide how the connection ends after a (possibly cut) file body."""
        if head_only:
            return
        if f.reset_after_bytes is not None:
            self._reset_connection = True  # the RST is sent from finish()
            self.close_connection = True
        elif f.truncate_after_bytes is not None or f.wrong_content_length is not None:
            # The body did not match Content-Length: end with a clean FIN,
            # which socketserver's shutdown_request() sends after finish().
            self.close_connection = True

    def _end_headers(self, *, last: bool) -> None:
        if last:
            self._complete()
        self.end_headers()

    def _write(self, data: bytes | memoryview, *, last: bool) -> None:
        """Write body bytes, keeping ``bytes_sent`` and completion in step."""
        record = self._record
        assert record is not None
        # Counted before writing for the same reason as _complete(): once the
        # bytes are out, the client may look at the statistics.
        record.bytes_sent += len(data)
        if last:
            self._complete()
        try:
            self.wfile.write(data)
        except OSError:
            record.bytes_sent -= len(data)
            raise

    def _complete(self) -> None:
        """Count the current request as finished (idempotent).

        Called just *before* the last write of a response, not after: as soon
        as the last byte is out, the client may start its next request, and if
        this thread had not yet been scheduled to do its bookkeeping, two
        strictly sequential requests would be counted as concurrent.  Tests
        that check a downloader's concurrency limit with ``max_concurrent``
        must never see such phantom overlaps.
        """
        record = self._record
        if record is not None and record.finished is None:
            record.finished = time.monotonic()
            self.server.cdn._request_finished(record)

    # -- helpers ------------------------------------------------------------

    def _sleep(self, seconds: float) -> bool:
        """Sleep, waking up early if the server stops.  True means "stopping"."""
        return self.server.stop_event.wait(seconds)

    def _not_modified(self, etag: str, last_modified: datetime) -> bool:
        # RFC 9110 §13.2.2: If-None-Match takes precedence; If-Modified-Since
        # is only consulted when there is no If-None-Match.
        if_none_match = self.headers.get("If-None-Match")
        if if_none_match is not None:
            candidates = [tag.strip() for tag in if_none_match.split(",")]
            # Weak comparison is the rule for If-None-Match.
            opaque = etag.removeprefix("W/")
            return any(tag == "*" or tag.removeprefix("W/") == opaque for tag in candidates)
        if_modified_since = self.headers.get("If-Modified-Since")
        if if_modified_since is not None:
            since = _parse_http_date(if_modified_since)
            return since is not None and last_modified <= since
        return False

    def _if_range_matches(self, etag: str, last_modified: datetime) -> bool:
        """Whether a Range request may be honoured given its If-Range (if any)."""
        if_range = self.headers.get("If-Range")
        if if_range is None:
            return True
        if_range = if_range.strip()
        if if_range.startswith('"') or if_range.startswith("W/"):
            # Strong comparison: a weak tag never matches (RFC 9110 §13.1.5).
            return not if_range.startswith("W/") and if_range == etag
        since = _parse_http_date(if_range)
        return since is not None and since == last_modified

    def _drain_request_body(self) -> None:
        """Consume a request body (unusual for GET/HEAD) so keep-alive stays in sync."""
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True  # not worth decoding chunked bodies
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            self.close_connection = True
            return
        if length > _MAX_DRAINED_BODY or length < 0:
            self.close_connection = True
        elif length:
            self.rfile.read(length)

    def _abort_with_rst(self) -> None:
        """Close the connection so the kernel sends RST instead of FIN.

        SO_LINGER with a zero timeout makes close() discard unsent data and
        reset the connection.  It has to happen here, before socketserver's
        shutdown_request() would send a polite FIN, and the file objects must
        be closed first because the socket only really closes once its last
        makefile() reference is gone.
        """
        try:
            self.connection.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
        except OSError:
            pass
        for stream in (self.wfile, self.rfile):
            try:
                stream.close()
            except OSError:
                pass
        self.connection.close()


_NO_FAULT = Fault()


def _body_limit(length: int, f: Fault) -> int:
    """How many of ``length`` body bytes to send, given cut-off faults."""
    for cut in (f.reset_after_bytes, f.truncate_after_bytes):
        if cut is not None:
            length = min(length, cut)
    return length


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class _CDNServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that tracks its workers so stop() can end them."""

    daemon_threads = True
    # We join workers ourselves, with a deadline, instead of socketserver's
    # unbounded join in server_close().
    block_on_close = False
    # Tests open many concurrent connections at once; the default backlog of 5
    # would make the kernel delay some of them and skew concurrency stats.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], cdn: PodcastCDN) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.cdn = cdn
        # Handlers read the base URL from here rather than from the PodcastCDN,
        # which forgets it at the start of stop() while requests may still run.
        self.base_url = ""
        self.stop_event = threading.Event()
        self._workers_lock = threading.Lock()
        self._workers: dict[threading.Thread, socket.socket] = {}
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind() calls socket.getfqdn(), a reverse DNS lookup
        # that can stall for seconds in sandboxes without a resolver.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = host, port

    def process_request(self, request: socket.socket, client_address: object) -> None:
        # Registered from the accept loop, before the thread runs: once
        # shutdown() has returned, every worker is in the table.
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name=f"{self.cdn.name}-worker",
            daemon=True,
        )
        with self._workers_lock:
            self._workers[thread] = request
        thread.start()

    def process_request_thread(self, request: socket.socket, client_address: object) -> None:
        try:
            if self.stop_event.is_set():
                # Accepted just before stop(): do not start answering.
                self.shutdown_request(request)
                return
            # Runs the handler, then shuts down and closes the connection.
            super().process_request_thread(request, client_address)
        finally:
            with self._workers_lock:
                self._workers.pop(threading.current_thread(), None)

    def handle_error(self, request: object, client_address: object) -> None:
        # Disconnects are business as usual for a fault-injecting server; keep
        # tracebacks for real bugs only.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)

    def wake_workers(self) -> None:
        """Unblock workers stuck in recv()/send() (keep-alive waits, full buffers)."""
        with self._workers_lock:
            sockets = list(self._workers.values())
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by its worker

    def join_workers(self, timeout: float) -> list[threading.Thread]:
        """Join all workers within ``timeout``; returns those still alive."""
        deadline = time.monotonic() + timeout
        with self._workers_lock:
            threads = list(self._workers)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return [t for t in threads if t.is_alive()]


class PodcastCDN:
    """A loopback HTTP/1.1 server for podcast feeds and audio, with faults.

    Several instances can run side by side on different loopback addresses
    (127.0.0.1, 127.0.0.2, ... all route to lo on Linux) or ports, which lets
    tests model several hosts and per-host concurrency limits.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, name: str | None = None) -> None:
        self.host = host
        self.port = port
        self.name = name or f"cdn-{host}"
        self._resources: dict[str, _Resource] = {}
        self._faults: dict[str, Fault] = {}
        self._fault_uses: dict[str, int] = {}
        self._fault_began: dict[str, float] = {}  # monotonic time of a for_s fault's first request
        self._revisions: dict[str, int] = {}
        self._config_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._records: list[RequestRecord] = []
        self._active = 0
        self._max_concurrent = 0
        self._lifecycle_lock = threading.Lock()
        self._server: _CDNServer | None = None
        self._thread: threading.Thread | None = None
        self._base_url: str | None = None

    def __repr__(self) -> str:
        where = self._base_url or "stopped"
        return f"<PodcastCDN {self.name} {where}>"

    # -- content ---------------------------------------------------------------

    def add_file(
        self,
        path: str,
        data: bytes | os.PathLike,
        content_type: str | None = None,
        last_modified: datetime | None = None,
    ) -> None:
        """Serve ``data`` at ``path`` (replacing any previous content there).

        ``last_modified`` defaults to now; naive datetimes are taken as UTC.

        ``data`` may be a file path (``pathlib.Path``): the file is then streamed
        from disk on every request, never held in memory, with an ETag made of
        its size and mtime and its mtime as Last-Modified (``last_modified`` is
        ignored, and ``{base_url}`` is not substituted). Use it for big audio.
        """
        key = _normalize_path(path)
        content_type = content_type or guess_content_type(key)
        if isinstance(data, os.PathLike):
            file = Path(data)
            if not file.is_file():
                raise FileNotFoundError(str(file))
            resource = _Resource(content_type=content_type, is_text=False, file=file, stream=True)
            with self._config_lock:
                self._resources[key] = resource
            return
        resource = _Resource(
            content_type=content_type,
            is_text=_is_text(key, content_type),
            data=bytes(data),
            last_modified=_utc_seconds(last_modified or datetime.now(timezone.utc)),
        )
        with self._config_lock:
            self._resources[key] = resource

    def add_directory(self, root: Path, prefix: str = "/", stream_threshold: int = STREAM_THRESHOLD) -> None:
        """Serve every file below ``root`` under ``prefix``.

        The set of files is taken now; their contents are read when requested
        (and re-read when they change), so large audio files cost nothing until
        used and edits to feeds show up without a restart. Non-text files of
        ``stream_threshold`` bytes or more are streamed from disk instead of
        cached in memory (see ``add_file`` with a path).
        """
        root = Path(root)
        if not root.is_dir():
            raise NotADirectoryError(str(root))
        base = "/" + prefix.strip("/")
        base = base.rstrip("/")
        found: dict[str, _Resource] = {}
        for file in sorted(root.rglob("*")):
            if not file.is_file():
                continue
            key = _normalize_path(f"{base}/{file.relative_to(root).as_posix()}")
            content_type = guess_content_type(key)
            is_text = _is_text(key, content_type)
            stream = not is_text and file.stat().st_size >= stream_threshold
            found[key] = _Resource(content_type=content_type, is_text=is_text, file=file, stream=stream)
        with self._config_lock:
            self._resources.update(found)

    def remove_file(self, path: str) -> None:
        """Stop serving ``path`` (it becomes a 404)."""
        with self._config_lock:
            self._resources.pop(_normalize_path(path), None)

    @property
    def paths(self) -> list[str]:
        """The paths currently served, sorted."""
        with self._config_lock:
            return sorted(self._resources)

    def set_fault(self, path: str, fault: Fault | None) -> None:
        """Make ``path`` misbehave (``None`` restores normal service).

        The path need not exist: redirect and status faults work for any path.
        Setting a fault restarts its ``times`` count.
        """
        key = _normalize_path(path)
        with self._config_lock:
            if fault is None:
                self._faults.pop(key, None)
            else:
                self._faults[key] = fault
            self._fault_uses.pop(key, None)
            self._fault_began.pop(key, None)

    def outage_end(self, path: str) -> float | None:
        """When ``path``'s ``for_s`` fault stopped applying (monotonic), or None if it never started."""
        key = _normalize_path(path)
        with self._config_lock:
            fault, began = self._faults.get(key), self._fault_began.get(key)
            if fault is None or fault.for_s is None or began is None:
                return None
            return began + fault.for_s

    def url(self, path: str) -> str:
        """Absolute URL of ``path`` on this server."""
        return self.base_url + _normalize_path(path)

    # -- lifecycle -------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the running server (no trailing slash)."""
        if self._base_url is None:
            raise RuntimeError(f"{self.name} is not started; call start() first")
        return self._base_url

    def start(self) -> PodcastCDN:
        """Bind and start serving in a background daemon thread; returns self."""
        with self._lifecycle_lock:
            if self._server is not None:
                raise RuntimeError(f"{self.name} is already running")
            server = _CDNServer((self.host, self.port), self)
            host, port = server.server_address[:2]
            display_host = f"[{host}]" if ":" in host else host
            self._base_url = server.base_url = f"http://{display_host}:{port}"
            # A short poll interval bounds how long stop() waits for the
            # accept loop to notice the shutdown request.
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"{self.name}-serve",
                daemon=True,
            )
            self._server, self._thread = server, thread
            thread.start()
            return self

    def stop(self) -> None:
        """Stop promptly, even mid-response; idempotent.

        In-flight latency/trickle sleeps are interrupted, open connections are
        shut down, the listening socket is closed and all threads are joined.
        """
        with self._lifecycle_lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
            self._base_url = None
            if server is None or thread is None:
                return
            server.stop_event.set()  # wake sleeping handlers first
            server.shutdown()  # accept loop exits within poll_interval
            server.wake_workers()  # unblock keep-alive reads and stuck writes
            server.server_close()  # release the port
            thread.join(_STOP_JOIN_TIMEOUT_S)
            stuck = server.join_workers(_STOP_JOIN_TIMEOUT_S)
            if stuck:  # pragma: no cover - would indicate a bug in this module
                print(f"PodcastCDN {self.name}: {len(stuck)} worker(s) did not stop", file=sys.stderr)

    @property
    def running(self) -> bool:
        return self._server is not None

    def __enter__(self) -> PodcastCDN:
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- statistics --------------------------------------------------------------

    @property
    def active(self) -> int:
        """Requests being served right now."""
        with self._stats_lock:
            return self._active

    @property
    def max_concurrent(self) -> int:
        """The most requests ever served at the same time (since reset_stats)."""
        with self._stats_lock:
            return self._max_concurrent

    @property
    def requests(self) -> list[RequestRecord]:
        """Snapshot of all requests so far, oldest first.

        Copies, so a record of an in-flight request will not change under the
        caller's feet.
        """
        with self._stats_lock:
            return [dataclasses.replace(r, headers=dict(r.headers)) for r in self._records]

    def request_count(self, path: str | None = None) -> int:
        """Number of requests, for ``path`` only if given (query ignored)."""
        with self._stats_lock:
            if path is None:
                return len(self._records)
            key = _normalize_path(path)
            return sum(1 for r in self._records if r.path == key)

    def reset_stats(self) -> None:
        """Forget recorded requests; max_concurrent restarts from ``active``."""
        with self._stats_lock:
            self._records.clear()
            self._max_concurrent = self._active

    # -- called from handler threads ----------------------------------------------

    def _request_started(self, record: RequestRecord) -> None:
        with self._stats_lock:
            self._records.append(record)
            self._active += 1
            self._max_concurrent = max(self._max_concurrent, self._active)

    def _request_finished(self, record: RequestRecord) -> None:
        with self._stats_lock:
            self._active -= 1

    def _lookup(self, path: str) -> _Resource | None:
        with self._config_lock:
            return self._resources.get(path)

    def _claim_fault(self, path: str) -> Fault | None:
        """The fault for this request, consuming one of its ``times`` if limited."""
        with self._config_lock:
            fault = self._faults.get(path)
            if fault is None:
                return None
            if fault.for_s is not None:
                began = self._fault_began.setdefault(path, time.monotonic())
                if time.monotonic() - began >= fault.for_s:
                    return None
            if fault.times is not None:
                used = self._fault_uses.get(path, 0)
                if used >= fault.times:
                    return None
                self._fault_uses[path] = used + 1
            return fault

    def _next_revision(self, path: str) -> int:
        with self._config_lock:
            revision = self._revisions.get(path, 0) + 1
            self._revisions[path] = revision
            return revision


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.cdn",
        description="Serve a directory of podcast feeds and audio over HTTP until interrupted.",
    )
    parser.add_argument("--root", type=Path, required=True, help="directory to serve")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (default 0: any free port)")
    parser.add_argument("--prefix", default="/", help="URL prefix for the files (default /)")
    parser.add_argument("--name", default=None, help="label for this server")
    args = parser.parse_args(argv)

    cdn = PodcastCDN(host=args.host, port=args.port, name=args.name)
    try:
        cdn.add_directory(args.root, prefix=args.prefix)
    except NotADirectoryError:
        parser.error(f"--root {args.root} is not a directory")

    done = threading.Event()
    # Ctrl-C and SIGTERM (docker stop) just ask the main loop to finish, so
    # the server is always stopped cleanly; a KeyboardInterrupt could instead
    # land anywhere, e.g. half-way through start() or stop().
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    with cdn:
        print(f"Serving {args.root} at {cdn.base_url} ({len(cdn.paths)} files); Ctrl-C to stop")
        for path in cdn.paths:
            print(f"  {cdn.base_url}{path}")
        sys.stdout.flush()
        # A timeout keeps the main thread waking up to run signal handlers.
        while not done.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
