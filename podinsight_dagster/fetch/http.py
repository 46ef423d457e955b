"""The one HTTP client of Pod-Insight: feeds, audio and publisher transcripts (what it returns and raises:
responses.py).

What the run-book's ``polite_get`` lacked, and this module adds:

* bodies are streamed in chunks to a temporary file, never held whole in memory;
* a download cut off midway resumes with ``Range`` + ``If-Range``; a server that
  ignores Range, or a file that changed in between, restarts cleanly, so a spliced
  file is impossible (partial.py; an episode's partial outlives a killed process);
* only retryable failures are retried (timeouts, resets, truncated bodies, 408,
  429, 5xx), with exponential backoff and jitter, and 429/503 honour Retry-After;
  a 404 or an HTML page fails at once (retry.py);
* every connection, redirects included, is checked against the NetworkPolicy on
  the address it actually resolved to (netpolicy.py's GuardedAdapter);
* per-host concurrency is capped by a HostLimiter keyed on the registrable
  domain, across threads and (with a lock folder) across processes.
"""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Mapping
from urllib.parse import urljoin, urlsplit

import requests
import urllib3

from podinsight_dagster import USER_AGENT
from podinsight_dagster.fetch.limits import DEFAULT_HOST_LIMIT, HostLimiter, LocalHostLimiter
from podinsight_dagster.fetch.netpolicy import BlockedAddressError, GuardedAdapter, NetworkPolicy
from podinsight_dagster.fetch.responses import (ContentRejectedError, Download, FetchedBytes, FetchError, FetchStats,
                                                PermanentFetchError, TransientFetchError, parse_retry_after)
from podinsight_dagster.fetch.retry import Backoff, with_retries

if TYPE_CHECKING:
    from podinsight_dagster.fetch.partial import DownloadState

RETRYABLE_STATUSES = {408, 425, 429, 500, 502, 503, 504}
CHUNK = 256 * 1024
# Bodies we read to the end instead of dropping the connection (redirects, 304s, error pages),
# so the keep-alive connection goes back to the pool.
_DRAIN_MAX = 64 * 1024

@dataclass
class HttpConfig:
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    max_attempts: int = 4
    backoff_base: float = 1.0
    backoff_max: float = 30.0
    # An episode's download (retry.py): tries, and the longest wait between two (None: as above).
    download_attempts: int | None = None
    download_backoff_max: float | None = None
    retry_after_cap: float = 120.0
    max_redirects: int = 10
    max_audio_bytes: int = 1 << 30  # 1 GB
    max_feed_bytes: int = 20 << 20  # 20 MB: the largest real feeds are a few MB
    # Abort (and retry) a transfer slower than this many bytes/s over low_speed_window seconds,
    # like curl's --speed-limit/--speed-time: a server sending a byte a second never times out.
    low_speed_bytes_per_s: int = 1024
    low_speed_window_s: float = 30.0
    user_agent: str = USER_AGENT
    host_limits: dict[str, int] = field(default_factory=dict)
    default_host_limit: int = DEFAULT_HOST_LIMIT

    @property
    def request_backoff(self) -> Backoff:
        return Backoff(self.max_attempts, self.backoff_base, self.backoff_max, "full")

    @property
    def download_backoff(self) -> Backoff:
        cap = self.backoff_max if self.download_backoff_max is None else self.download_backoff_max
        return Backoff(self.download_attempts or self.max_attempts, self.backoff_base, cap, "equal")


class HttpClient:
    def __init__(self, config: HttpConfig | None = None, policy: NetworkPolicy | None = None,
                 limiter: HostLimiter | None = None, sleep: Callable[[float], None] = time.sleep):
        self.config = config or HttpConfig()
        self.policy = policy or NetworkPolicy()
        self.limiter = limiter or LocalHostLimiter(self.config.host_limits, self.config.default_host_limit)
        self.stats = FetchStats()
        self._sleep = sleep
        self._local = threading.local()
        # Every live thread's session, so close() reaches them all; a dead thread's is closed when the
        # next one is made (download pools come and go per run: their sockets must not pile up).
        self._sessions: dict[threading.Thread, requests.Session] = {}
        self._sessions_lock = threading.Lock()

    @property
    def session(self) -> requests.Session:
        # requests.Session is not documented as thread-safe: one per thread.
        sess = getattr(self._local, "session", None)
        if sess is None:
            sess = requests.Session()
            sess.trust_env = False  # no proxies or .netrc from the environment
            adapter = GuardedAdapter(self.policy)
            sess.mount("http://", adapter)
            sess.mount("https://", adapter)
            sess.headers["User-Agent"] = self.config.user_agent
            self._local.session = sess
            with self._sessions_lock:
                dead = [t for t in self._sessions if not t.is_alive()]
                for t in dead:
                    self._sessions.pop(t).close()
                self._sessions[threading.current_thread()] = sess
        return sess

    def close(self) -> None:
        """Close every thread's connections (a Dagster resource's teardown, the end of a command)."""
        with self._sessions_lock:
            sessions, self._sessions = self._sessions, {}
        for sess in sessions.values():
            sess.close()
        self._local = threading.local()

    # -- low level ----------------------------------------------------------
    def _check_url(self, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise PermanentFetchError(f"unsupported URL scheme {parts.scheme!r} in {url!r}: only http and https",
                                      url=url)
        if not parts.hostname:
            raise PermanentFetchError(f"URL without a host: {url!r}", url=url)
        return parts.hostname

    @contextmanager
    def _open(self, url: str, headers: Mapping[str, str] | None = None,
              method: str = "GET") -> Iterator[tuple[requests.Response, str | None]]:
        """Follow redirects by hand (each hop checked), holding a host slot while the body streams.

        Yields (response, permanent_redirect_target): the target of a 301/308 answered to the
        very first request, i.e. where the caller should ask next time. Raises FetchError
        subclasses. The slot of a redirecting hop is given back before the next hop is
        requested, so a chain across hosts never holds two slots (no deadlock at limit 1).
        """
        permanent: str | None = None
        seen: list[str] = []
        current = url
        for hop in range(self.config.max_redirects + 1):
            host = self._check_url(current)
            if current in seen:
                raise PermanentFetchError(
                    f"redirect loop fetching {url}: {' -> '.join(seen + [current])}", url=url)
            seen.append(current)
            with self.limiter.slot(host):
                resp = self._request(method, current, host, headers)
                if resp.status_code in (301, 302, 303, 307, 308) and resp.headers.get("Location"):
                    target = urljoin(current, resp.headers["Location"])
                    if hop == 0 and resp.status_code in (301, 308):
                        permanent = target
                    _release(resp, drain=True)
                    current = target
                    continue  # leaves the `with`: this host's slot is free before the next hop
                failed = True
                try:
                    yield resp, permanent
                    failed = False
                finally:
                    # Read a small leftover body (304, error page) so the connection is reused;
                    # after a failure mid-body just drop the connection.
                    _release(resp, drain=not failed)
                return
        raise PermanentFetchError(
            f"too many redirects fetching {url}: more than {self.config.max_redirects} "
            f"({' -> '.join(seen[:4])} -> ...)", url=url)

    def _request(self, method: str, url: str, host: str, headers: Mapping[str, str] | None) -> requests.Response:
        try:
            resp = self.session.request(
                method, url, headers=dict(headers or {}), stream=True, allow_redirects=False,
                timeout=(self.config.connect_timeout, self.config.read_timeout),
            )
        except requests.exceptions.ConnectTimeout as exc:
            self.stats.record(host, error=True)
            raise TransientFetchError(
                f"connect timeout to {host} after {self.config.connect_timeout:g} s", url=url) from exc
        except requests.exceptions.ConnectionError as exc:
            self.stats.record(host, error=True)
            blocked = _find_cause(exc, BlockedAddressError)
            if blocked is not None:
                raise PermanentFetchError(str(blocked), url=url) from exc
            raise TransientFetchError(f"cannot connect to {host}: {_short(exc)}", url=url) from exc
        except requests.exceptions.Timeout as exc:
            self.stats.record(host, error=True)
            raise TransientFetchError(
                f"read timeout waiting for {host} ({self.config.read_timeout:g} s)", url=url) from exc
        except requests.exceptions.RequestException as exc:
            self.stats.record(host, error=True)
            raise PermanentFetchError(f"bad request to {url}: {_short(exc)}", url=url) from exc
        self.stats.record(host, status=resp.status_code)
        return resp

    def _raise_for_status(self, resp: requests.Response, url: str) -> None:
        status = resp.status_code
        if status < 400:
            return
        reason = f"HTTP {status} {resp.reason or ''}".strip()
        if status in RETRYABLE_STATUSES:
            retry_after = None
            if status in (429, 503):
                retry_after = parse_retry_after(resp.headers.get("Retry-After"), self.config.retry_after_cap)
            raise TransientFetchError(f"{reason} from {resp.url}", url=url, status=status, retry_after=retry_after)
        raise PermanentFetchError(f"{reason} from {resp.url}", url=url, status=status)

    def _with_retries(self, what: str, fn: Callable[[int], object]):
        """Run ``fn(attempt)``, retrying TransientFetchError; sleeps happen outside any host slot."""
        return with_retries(what, fn, self.config.request_backoff, self._sleep)

    # -- small bodies: feeds, transcripts -------------------------------------
    def fetch_bytes(self, url: str, *, etag: str | None = None, last_modified: str | None = None,
                    max_bytes: int | None = None, accept: str | None = None) -> FetchedBytes:
        """GET a small document (a feed, a transcript) with a size cap; conditional when validators are given.

        A 304 comes back as ``not_modified`` with no content (and the validators to keep).
        """
        cap = max_bytes or self.config.max_feed_bytes
        headers: dict[str, str] = {}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        if accept:
            headers["Accept"] = accept

        def attempt(_n: int) -> FetchedBytes:
            with self._open(url, headers) as (resp, permanent):
                if resp.status_code == 304:
                    return FetchedBytes(url, resp.url, 304, b"", resp.headers,
                                        resp.headers.get("ETag") or etag,
                                        resp.headers.get("Last-Modified") or last_modified, permanent)
                self._raise_for_status(resp, url)
                declared = _int(resp.headers.get("Content-Length"))
                if declared is not None and declared > cap:
                    raise ContentRejectedError(
                        f"{url} is {declared} bytes, over the {cap}-byte cap for documents (refused before "
                        "reading the body)", url=url)
                buf = bytearray()
                # Decoded (gzip) bytes count against the cap too: a compression bomb stops at the cap.
                for chunk in self._iter_body(resp, url, decode=True):
                    buf += chunk
                    if len(buf) > cap:
                        raise ContentRejectedError(f"{url} is over the {cap}-byte cap for documents", url=url)
                return FetchedBytes(url, resp.url, resp.status_code, bytes(buf), resp.headers,
                                    resp.headers.get("ETag"), resp.headers.get("Last-Modified"), permanent)

        return self._with_retries(f"GET {url}", attempt)

    def head(self, url: str) -> Mapping[str, str]:
        def attempt(_n: int):
            with self._open(url, method="HEAD") as (resp, _):
                self._raise_for_status(resp, url)
                return dict(resp.headers)
        return self._with_retries(f"HEAD {url}", attempt)

    def _iter_body(self, resp: requests.Response, url: str, *, decode: bool) -> Iterator[bytes]:
        """Body chunks as they arrive; a reset, a cut or a stalled transfer becomes TransientFetchError.

        ``read1`` returns whatever one socket read gave (up to CHUNK), so the low-speed check
        runs on every arrival: a server sending a byte a second is caught after the window,
        whereas a blocking ``read(CHUNK)`` would wait for 256 KiB that never come. A body
        shorter than its Content-Length raises (urllib3 enforces the length).
        """
        host = urlsplit(url).hostname or ""
        raw = resp.raw
        min_rate, window = self.config.low_speed_bytes_per_s, self.config.low_speed_window_s
        window_start, window_bytes = time.monotonic(), 0
        try:
            while True:
                chunk = raw.read1(CHUNK, decode_content=decode)
                if not chunk:
                    return
                self.stats.record(host, nbytes=len(chunk))
                window_bytes += len(chunk)
                now = time.monotonic()
                elapsed = now - window_start
                if elapsed >= window:
                    if window_bytes / elapsed < min_rate:
                        raise TransientFetchError(
                            f"{url}: transfer stalled: {window_bytes / elapsed:.1f} B/s over {elapsed:.1f} s, "
                            f"under the {min_rate} B/s low-speed limit", url=url)
                    window_start, window_bytes = now, 0
                yield chunk
        except (urllib3.exceptions.HTTPError, requests.exceptions.RequestException, OSError) as exc:
            if isinstance(exc, urllib3.exceptions.ReadTimeoutError) or isinstance(exc, socket.timeout):
                raise TransientFetchError(
                    f"{url}: read timeout mid-body (nothing for {self.config.read_timeout:g} s)", url=url) from exc
            raise TransientFetchError(f"{url}: connection broke mid-body: {_short(exc)}", url=url) from exc

    # -- audio ----------------------------------------------------------------
    def download(self, url: str, dest: Path, *, max_bytes: int | None = None,
                 state: "DownloadState | None" = None) -> Download:
        """Stream ``url`` into ``dest`` (a temporary path the caller commits), resuming after cuts.

        Memory stays at one chunk whatever the size. Tries ``config.download_backoff``'s attempts.
        Without ``state``, ``dest`` is removed on any failure: the caller never sees a partial
        file. With a ``state`` (an episode's partial, fetch/partial.py), the bytes it has in
        ``dest`` are resumed, and kept after a failure that may pass (the next try resumes
        them); a permanent failure removes them.
        """
        from podinsight_dagster.fetch.partial import DownloadState, download_attempt

        cap = max_bytes or self.config.max_audio_bytes
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        keep = state is not None
        st = state if state is not None else DownloadState()
        try:
            return with_retries(f"download {url}", lambda n: download_attempt(self, url, dest, cap, st, n),
                                self.config.download_backoff, self._sleep)
        except BaseException as exc:
            if not keep or (isinstance(exc, FetchError) and not exc.retryable):
                st.discard(dest)
            raise


def _release(resp: requests.Response, *, drain: bool) -> None:
    """Give the connection back: drain a small remaining body so keep-alive works, else close."""
    try:
        if drain and not resp.raw.closed:
            length = _int(resp.headers.get("Content-Length"))
            no_body = resp.status_code in (204, 304) or resp.request.method == "HEAD"
            if no_body or (length is not None and length <= _DRAIN_MAX):
                resp.raw.drain_conn()
    except Exception:  # noqa: BLE001 - best effort; close() below drops the connection
        pass
    resp.close()


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _find_cause(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    seen = set()
    stack = [exc]
    while stack:
        cur = stack.pop()
        if cur is None or id(cur) in seen:
            continue
        seen.add(id(cur))
        if isinstance(cur, kind):
            return cur
        stack.extend([cur.__cause__, cur.__context__, *[a for a in getattr(cur, "args", ()) if isinstance(a, BaseException)]])
        reason = getattr(cur, "reason", None)
        if isinstance(reason, BaseException):
            stack.append(reason)
    return None


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) < 300 else text[:297] + "..."
