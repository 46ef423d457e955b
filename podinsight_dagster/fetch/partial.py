"""An audio download while it is under way: resumed after a cut, a retry, or a killed process.

``download_attempt`` is one request of ``HttpClient.download``: it resumes what is already
in the file with ``Range: bytes=N-`` + ``If-Range: <validator>``; a server that ignores Range
(200), or a file that changed (If-Range no longer matches: 200), restarts from byte 0, so a
spliced file is impossible.

``EpisodePartial`` keeps an episode's partial file under a fixed name in the staging folder,
with the validator it was started under beside it (``<name>.json``: URL, strong ETag or
Last-Modified). A process killed mid-body leaves both; the next try, in this run or the
next, resumes from the bytes on disk when the URL is the same and the server still answers
206 to that validator, else starts over. The partial goes when the episode completes (its
bytes are moved into raw storage) or fails for good. While a process downloads into it,
it holds an exclusive ``flock`` on the file: another process asking for the same episode at
the same moment downloads into a private temporary file instead (never into the same bytes).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from podinsight_dagster.fetch.http import _int
from podinsight_dagster.fetch.responses import (ContentRejectedError, Download, PermanentFetchError,
                                                TransientFetchError, _describe_non_audio, sniff_audio)

if TYPE_CHECKING:
    from podinsight_dagster.fetch.http import HttpClient

PARTIAL_PREFIX = ".tmp-part-"  # ".tmp-": never listed as an object, removed by clean_staging when abandoned
_HEAD = 64  # bytes kept for content sniffing


@dataclass
class DownloadState:
    """What one download has so far: bytes written, their hash, and the validator that ties them together.

    ``sidecar``: where the validator is kept beside the file, so another process can resume it
    (None: this download's bytes live only as long as the call).
    """

    written: int = 0
    validator: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    content_type: str | None = None
    audio_format: str | None = None
    head: bytes = b""
    resumed: int = 0
    restarts: int = 0
    hasher: "hashlib._Hash" = field(default_factory=hashlib.sha256)
    sidecar: Path | None = None
    url: str | None = None
    resumed_from: int = 0  # bytes found on disk from an earlier process

    @classmethod
    def from_disk(cls, dest: Path, sidecar: Path, url: str) -> "DownloadState":
        """The state of ``dest`` as an earlier try left it: resumable when the sidecar names ``url`` and a validator."""
        st = cls(sidecar=sidecar, url=url)
        try:
            doc = json.loads(sidecar.read_text())
        except (OSError, ValueError):
            doc = None
        size = dest.stat().st_size if dest.exists() else 0
        if not isinstance(doc, dict) or doc.get("url") != url or not doc.get("validator") or not size:
            st.restart(dest)  # nothing that can be tied to the server's current file
            return st
        with open(dest, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                if len(st.head) < _HEAD:
                    st.head += chunk[: _HEAD - len(st.head)]
                st.hasher.update(chunk)
        if len(st.head) >= 12 and sniff_audio(st.head) is None:
            st.restart(dest)  # not what this code writes (it sniffs before storing): start over
            return st
        st.audio_format = sniff_audio(st.head) if len(st.head) >= 12 else None
        st.written = st.resumed_from = size
        st.validator, st.etag, st.last_modified = doc["validator"], doc.get("etag"), doc.get("last_modified")
        st.content_type = doc.get("content_type")
        return st

    def restart(self, dest: Path) -> None:
        # Emptied in place rather than unlinked: the file's inode carries the flock of EpisodePartial.
        if dest.exists():
            os.truncate(dest, 0)
        self.written = 0
        self.head = b""
        self.validator = None
        self.audio_format = None
        self.hasher = hashlib.sha256()
        self._forget()

    def remember(self) -> None:
        """A fresh start: keep the validator beside the file (before any body byte), so a kill can resume it."""
        if self.sidecar is None:
            return
        if not self.validator:
            self._forget()
            return
        doc = {"url": self.url, "validator": self.validator, "etag": self.etag,
               "last_modified": self.last_modified, "content_type": self.content_type}
        tmp = self.sidecar.with_name(self.sidecar.name + ".new")
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, self.sidecar)

    def discard(self, dest: Path) -> None:
        dest.unlink(missing_ok=True)
        self._forget()

    def _forget(self) -> None:
        if self.sidecar is not None:
            self.sidecar.unlink(missing_ok=True)

    def check_head(self, url: str) -> None:
        if self.audio_format is not None or not self.head:
            return
        fmt = sniff_audio(self.head)
        if fmt is None:
            raise ContentRejectedError(f"{url} is not audio: the server sent {_describe_non_audio(self.head)}",
                                       url=url)
        self.audio_format = fmt


def download_attempt(client: "HttpClient", url: str, dest: Path, cap: int, st: DownloadState,
                     attempt: int) -> Download:
    """One request of ``client.download``: resume what ``st`` has in ``dest``, or start over."""
    # Bytes on the wire are what Range counts, so ask for no content coding.
    headers: dict[str, str] = {"Accept-Encoding": "identity"}
    have = st.written if st.written and dest.exists() else 0
    if have and st.validator:
        headers["Range"] = f"bytes={have}-"
        headers["If-Range"] = st.validator
    elif st.written:
        # Nothing we can safely resume from (no validator to tie the parts together): start over.
        st.restart(dest)
        have = 0
    with client._open(url, headers) as (resp, _permanent):
        status = resp.status_code
        if status == 416:
            st.restart(dest)
            st.restarts += 1
            raise TransientFetchError(f"{url}: server refused the resume range; restarting", url=url)
        client._raise_for_status(resp, url)
        if status == 206:
            start, total = content_range(resp.headers.get("Content-Range"))
            if start != have:
                st.restart(dest)
                st.restarts += 1
                raise TransientFetchError(f"{url}: server resumed at byte {start}, expected {have}", url=url)
            st.resumed += 1
            expected_total = total
        elif status == 200:
            if have:
                # Range ignored, or If-Range said the file changed: never splice, start over.
                st.restart(dest)
                st.restarts += 1
                have = 0
            expected_total = _int(resp.headers.get("Content-Length"))
        else:
            raise PermanentFetchError(f"{url}: unexpected HTTP {status}", url=url, status=status)
        if expected_total is not None and expected_total > cap:
            raise ContentRejectedError(
                f"{url} is {expected_total} bytes, over the {cap}-byte cap for audio", url=url)
        encoding = (resp.headers.get("Content-Encoding") or "identity").strip().lower()
        decode = encoding not in ("", "identity")
        if have == 0:  # a fresh start: remember what identifies this version of the file
            validator = resp.headers.get("ETag")
            if not validator or validator.startswith("W/"):
                # A weak ETag may not be used in If-Range: fall back to Last-Modified.
                validator = resp.headers.get("Last-Modified")
            # A content-coded body cannot be resumed by byte offset of what we stored.
            st.validator = None if decode else validator
            st.etag, st.last_modified = resp.headers.get("ETag"), resp.headers.get("Last-Modified")
            st.content_type = resp.headers.get("Content-Type")
            st.remember()
            if decode:
                expected_total = None  # Content-Length counts coded bytes
        with open(dest, "ab" if st.written else "wb") as fh:
            for chunk in client._iter_body(resp, url, decode=decode):
                if len(st.head) < _HEAD:
                    st.head += chunk[: _HEAD - len(st.head)]
                    if len(st.head) >= 12:
                        st.check_head(url)  # an HTML page is refused before it is stored
                st.written += len(chunk)
                if st.written > cap:
                    raise ContentRejectedError(f"{url} is over the {cap}-byte cap for audio", url=url)
                fh.write(chunk)
                st.hasher.update(chunk)
        if st.written == 0:
            raise ContentRejectedError(f"{url}: the server sent an empty body (HTTP {status})", url=url)
        st.check_head(url)
        if expected_total is not None and st.written < expected_total:
            raise TransientFetchError(
                f"{url}: body cut off at {st.written} of {expected_total} bytes", url=url)
        if expected_total is not None and st.written > expected_total:
            st.restart(dest)
            raise TransientFetchError(f"{url}: got more bytes than the server announced", url=url)
        return Download(
            url=url, final_url=resp.url, path=dest, bytes=st.written, sha256=st.hasher.hexdigest(),
            content_type=st.content_type, audio_format=st.audio_format or "bin", etag=st.etag,
            last_modified=st.last_modified, attempts=attempt, resumed=st.resumed, restarts=st.restarts,
            resumed_from=st.resumed_from,
        )


def content_range(value: str | None) -> tuple[int | None, int | None]:
    # "bytes 100-199/1000"
    if not value or not value.startswith("bytes "):
        return None, None
    try:
        span, _, total = value[6:].partition("/")
        start = int(span.split("-", 1)[0])
        return start, (int(total) if total.strip() not in ("", "*") else None)
    except ValueError:
        return None, None


class EpisodePartial:
    """One episode's partial download in ``folder``, held by this process (``with``) while it downloads.

    ``state(url)`` gives ``HttpClient.download`` what an earlier try left; ``path`` is where the
    bytes go. ``finish()`` once the bytes are committed (or the episode failed for good) removes
    what is left of the partial and its sidecar.
    """

    def __init__(self, folder: Path, key: str):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        name = PARTIAL_PREFIX + hashlib.sha1(key.encode()).hexdigest()[:20]
        self.path = self.folder / name
        self.sidecar: Path | None = self.folder / f"{name}.json"
        self._fd: int | None = None

    @property
    def private(self) -> bool:
        """Another process holds this episode's partial: this one downloads into a private file (no resume)."""
        return self.sidecar is None

    def __enter__(self) -> "EpisodePartial":
        for _ in range(5):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                break  # another process is downloading this episode right now
            self._fd = fd
            if self._still_ours():
                return self
            # The file was moved away (committed) or removed between open and lock: lock the new one.
            os.close(fd)
            self._fd = None
        tmp_fd, tmp_name = tempfile.mkstemp(prefix=".tmp-dl-", dir=self.folder)
        os.close(tmp_fd)
        self.path, self.sidecar = Path(tmp_name), None
        return self

    def state(self, url: str) -> DownloadState | None:
        """What an earlier try left for ``url`` (None for a private file: removed on any failure)."""
        if self.sidecar is None:
            return None
        return DownloadState.from_disk(self.path, self.sidecar, url)

    def _still_ours(self) -> bool:
        """The name still points at the file this process locked (not one another process made since)."""
        try:
            return os.stat(self.path).st_ino == os.fstat(self._fd).st_ino
        except (OSError, TypeError):
            return False

    def finish(self) -> None:
        """Remove the partial and its sidecar (after its bytes were committed, or the episode failed for good).

        Only this process's: once the bytes were moved away, the name may already be another process's
        new partial of the same episode.
        """
        if self.private or self._still_ours():
            self.path.unlink(missing_ok=True)
        if self.sidecar is not None and not self.path.exists():
            self.sidecar.unlink(missing_ok=True)

    def __exit__(self, *exc) -> None:
        if self.private:
            self.path.unlink(missing_ok=True)
        elif self._still_ours() and os.fstat(self._fd).st_size == 0:
            self.finish()  # nothing received (a 5xx, a timeout): nothing to resume, nothing to leave behind
        if self._fd is not None:
            os.close(self._fd)  # releases the flock
            self._fd = None
