"""When a failed fetch is tried again, and when it is not.

What is retried is decided where the failure is seen (http.py): timeouts, resets,
cut bodies, 408, 425, 429 and 5xx raise ``TransientFetchError``; a 404 or 410, an
HTML page or other bytes that are not audio, a file over the size cap, a redirect to
a blocked (private) address raise ``PermanentFetchError``, which is never retried:
one request per run.

Two schedules use this loop:

* requests for documents (feeds, transcripts, HEAD): ``PODINSIGHT_HTTP_MAX_ATTEMPTS``
  tries with full jitter, so a feed poll gives up quickly;
* an episode's download (``HttpConfig.download_backoff``): ``PODINSIGHT_DOWNLOAD_ATTEMPTS``
  tries, the wait between two of them capped at ``PODINSIGHT_DOWNLOAD_BACKOFF_MAX_S``
  (so the episode is asked again within that many seconds of its host answering), with
  "equal" jitter: each wait is at least half its step, so the attempts are sure to span
  a short outage (6 attempts, 8 s cap: at least 11.5 s, at most 23 s of waiting), and are
  bounded. The sleeps happen outside any host slot (http.py takes the slot per request),
  so a waiting episode never holds a connection of its host's limit.

Dagster's step retry (RetryPolicy) is not used for downloads: it re-ran the whole step,
every episode's permanent failure included, a minute later.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    """``attempts`` tries at most; before try n+1 a wait of up to ``min(cap_s, base_s * 2**(n-1))``."""

    attempts: int = 4
    base_s: float = 1.0
    cap_s: float = 30.0
    # "full": uniform in [0, step] (spreads retries most); "equal": uniform in [step/2, step]
    # (a guaranteed minimum, so the tries span an outage of known length).
    jitter: str = "full"

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed try ``attempt`` (1-based); a server's Retry-After wins (already capped)."""
        if retry_after is not None:
            return retry_after
        step = min(self.cap_s, self.base_s * 2 ** (attempt - 1))
        if self.jitter == "equal":
            return step / 2 + random.uniform(0, step / 2)
        return random.uniform(0, step)


def with_retries(what: str, fn: Callable[[int], T], backoff: Backoff, sleep: Callable[[float], None]) -> T:
    """``fn(attempt)`` until it returns, retrying only TransientFetchError, at most ``backoff.attempts`` times.

    The last transient error is raised as a TransientFetchError saying how many tries were made;
    any other exception (PermanentFetchError included) goes straight through.
    """
    from podinsight_dagster.fetch.http import TransientFetchError

    attempt = 0
    while True:
        attempt += 1
        try:
            return fn(attempt)
        except TransientFetchError as exc:
            if attempt >= max(1, backoff.attempts):
                tries = f"{attempt} attempts" if attempt != 1 else "1 attempt"
                raise TransientFetchError(f"{what}: gave up after {tries}: {exc}",
                                          url=exc.url, status=exc.status) from exc
            sleep(backoff.delay(attempt, exc.retry_after))
