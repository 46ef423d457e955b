"""Per-host politeness (run-book §3.2): how many connections each host gets, enforced across threads and processes.

``HostLimiter`` is the seam; ``LocalHostLimiter`` holds the caps on one machine
(threads and every process sharing its lock folder). Hosts are grouped by
registrable domain, so ``traffic.megaphone.fm`` and ``dcs.megaphone.fm`` share
megaphone.fm's cap.
"""

from __future__ import annotations

import fcntl
import os
import random
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import ContextManager, Iterator, Mapping, Protocol

# run-book §3.2: HOST_LIMIT, "generic" hosts get 10.
DEFAULT_HOST_LIMITS: dict[str, int] = {"megaphone.fm": 5, "libsyn.com": 3, "simplecast.com": 4}
DEFAULT_HOST_LIMIT = 10

# Second-level labels under which registrations happen one level deeper (bbc.co.uk).
_MULTI_LABEL_SUFFIXES = {
    "co.uk", "org.uk", "ac.uk", "gov.uk", "com.au", "net.au", "org.au", "co.nz", "co.jp",
    "com.br", "com.cn", "co.in", "co.za", "com.mx", "com.tr", "co.kr",
}


class HostLimiter(Protocol):
    """At most ``limit_for(host)`` requests to a host's domain at once, wherever they come from."""

    def limit_for(self, host: str) -> int: ...
    def slot(self, host: str) -> ContextManager[None]: ...


def registrable_domain(host: str) -> str:
    """``traffic.megaphone.fm`` -> ``megaphone.fm``; IP literals are their own domain."""
    host = (host or "").lower().rstrip(".")
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
        return host
    except OSError:
        pass
    labels = host.split(".")
    if len(labels) >= 3 and ".".join(labels[-2:]) in _MULTI_LABEL_SUFFIXES:
        return ".".join(labels[-3:])
    return ".".join(labels[-2:]) if len(labels) >= 2 else host


# ---------------------------------------------------------------------------
# Host limiter
# ---------------------------------------------------------------------------
class HostCaps:
    """The caps by domain (the run-book's defaults, the catalog's over them) and this process's queue per domain.

    Limiters build on it: a request first waits here for one of its domain's N places in this
    process, so only requests that could run compete for the shared slots (files, leases).
    """

    def __init__(self, limits: Mapping[str, int] | None = None, default: int = DEFAULT_HOST_LIMIT):
        self.limits = {k.lower(): int(v) for k, v in {**DEFAULT_HOST_LIMITS, **(limits or {})}.items()}
        self.default = default
        self._sems: dict[str, threading.BoundedSemaphore] = {}
        self._guard = threading.Lock()

    def limit_for(self, host: str) -> int:
        host = (host or "").lower()
        if host in self.limits:
            return self.limits[host]
        return self.limits.get(registrable_domain(host), self.default)

    @contextmanager
    def queued(self, host: str) -> Iterator[tuple[str, int]]:
        """Hold one of this process's places for ``host``'s domain; yields (domain, its limit)."""
        domain = registrable_domain(host) or "generic"
        limit = max(1, self.limit_for(host))
        with self._guard:
            sem = self._sems.get(domain)
            if sem is None:
                sem = self._sems[domain] = threading.BoundedSemaphore(limit)
        with sem:
            yield domain, limit


class LocalHostLimiter(HostCaps):
    """Caps concurrent requests per registrable domain.

    Within a process a semaphore per domain queues threads fairly. With
    ``lock_dir`` the cap also holds across processes (several Dagster runs at
    once): each domain has N slot files and a request holds an exclusive
    ``flock`` on one of them. flock is per open file description, so it excludes
    threads and processes alike, and the kernel drops it if a process dies.
    """

    def __init__(self, limits: Mapping[str, int] | None = None, default: int = DEFAULT_HOST_LIMIT,
                 lock_dir: Path | None = None):
        super().__init__(limits, default)
        self.lock_dir = Path(lock_dir) if lock_dir else None

    @contextmanager
    def slot(self, host: str) -> Iterator[None]:
        with self.queued(host) as (domain, limit):
            if self.lock_dir is None:
                yield
                return
            fd = self._acquire_file_slot(domain, limit)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)

    def _acquire_file_slot(self, domain: str, limit: int) -> int:
        folder = self.lock_dir / "hosts" / domain.replace(":", "_")
        folder.mkdir(parents=True, exist_ok=True)
        delay = 0.005
        while True:
            for i in random.sample(range(limit), limit):
                fd = os.open(folder / f"slot-{i}", os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return fd
                except BlockingIOError:
                    os.close(fd)
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
