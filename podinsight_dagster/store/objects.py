"""Object storage: the run-book's buckets as local folders (default) or S3.

Every write is all-or-nothing. Locally a file is written beside its destination,
fsynced, renamed over it and the folder fsynced, so a crash leaves either the old
object or the new one, never half of one. Readers never see a temporary file: they
start with ``.tmp-`` and listings skip them.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Iterator, Protocol

TMP_PREFIX = ".tmp-"


class ObjectNotFound(FileNotFoundError):
    pass


class ConcurrentUpdate(RuntimeError):
    """A conditional write found the object changed (or created) by another writer since it was read."""


class ObjectStore(Protocol):
    """What the pipeline needs from a bucket. Keys use '/' separators."""

    name: str

    def uri(self, key: str) -> str: ...
    def exists(self, key: str) -> bool: ...
    def size(self, key: str) -> int: ...
    def get_bytes(self, key: str) -> bytes: ...
    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None: ...
    def put_file(self, key: str, src: Path, content_type: str | None = None) -> None: ...
    def list_keys(self, prefix: str = "", start_after: str = "") -> Iterator[str]:
        """Keys under ``prefix``; with ``start_after``, only those after it (S3's order: UTF-8 bytes)."""
        ...
    def delete(self, key: str) -> None: ...
    def local_copy(self, key: str) -> contextlib.AbstractContextManager[Path]: ...
    def put_bytes_if_absent(self, key: str, data: bytes, content_type: str | None = None) -> bool:
        """Create-only write: False (and nothing written) when the key exists."""
        ...
    def get_json_versioned(self, key: str) -> tuple[dict, str]:
        """The object and an opaque version for ``put_json_if``."""
        ...
    def put_json_if(self, key: str, obj: object, version: str) -> None:
        """Replace the object only if it is still ``version``; else raise ConcurrentUpdate."""
        ...

    # JSON helpers are shared by every implementation (see JsonMixin).
    def get_json(self, key: str) -> dict: ...
    def put_json(self, key: str, obj: object) -> None: ...


class JsonMixin:
    def get_json(self, key: str) -> dict:
        return json.loads(self.get_bytes(key))  # type: ignore[attr-defined]

    def put_json(self, key: str, obj: object) -> None:
        data = json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False).encode() + b"\n"
        self.put_bytes(key, data, content_type="application/json")  # type: ignore[attr-defined]


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(dest: Path, mode: str = "wb") -> Iterator[IO]:
    """Write to a temporary file beside ``dest``; on success fsync and rename it into place."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=TMP_PREFIX, dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def commit_file(src: Path, dest: Path) -> None:
    """Move a finished file into place atomically (copying first if it lives on another filesystem)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as fh:
        os.fsync(fh.fileno())
    try:
        os.replace(src, dest)
    except OSError:  # EXDEV: the temp file is on another filesystem
        with atomic_writer(dest) as out, open(src, "rb") as inp:
            shutil.copyfileobj(inp, out, 1 << 20)
        src.unlink(missing_ok=True)
    fsync_dir(dest.parent)


class LocalObjectStore(JsonMixin):
    """A bucket as a folder: ``<root>/<key>``."""

    def __init__(self, root: Path, name: str | None = None):
        self.root = Path(root)
        self.name = name or self.root.name
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        # Keys come from keys.py and are safe already; refuse anything that would
        # leave the bucket anyway, as a second line of defence.
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise ValueError(f"object key {key!r} escapes bucket {self.name}")
        return path

    def path(self, key: str) -> Path:
        return self._path(key)

    def uri(self, key: str) -> str:
        return str(self._path(key))

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError as exc:
            raise ObjectNotFound(f"{self.name}/{key}") from exc

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise ObjectNotFound(f"{self.name}/{key}") from exc

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        with atomic_writer(self._path(key)) as fh:
            fh.write(data)

    def put_file(self, key: str, src: Path, content_type: str | None = None) -> None:
        commit_file(Path(src), self._path(key))

    def list_keys(self, prefix: str = "", start_after: str = "") -> Iterator[str]:
        base = self.root
        for dirpath, dirnames, filenames in os.walk(base):
            # Dot-folders hold partial downloads: never part of a listing.
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for fname in filenames:
                if fname.startswith(TMP_PREFIX):
                    continue
                rel = (Path(dirpath) / fname).relative_to(base).as_posix()
                if rel.startswith(prefix) and (not start_after or rel.encode() > start_after.encode()):
                    yield rel

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    @contextlib.contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        path = self._path(key)
        if not path.is_file():
            raise ObjectNotFound(f"{self.name}/{key}")
        yield path

    @contextlib.contextmanager
    def _key_lock(self, key: str) -> Iterator[None]:
        # Conditional writes serialise on a lock file per key (dot-folders never show in listings).
        folder = self.root / ".locks"
        folder.mkdir(exist_ok=True)
        fd = os.open(folder / hashlib.sha1(key.encode()).hexdigest(), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def put_bytes_if_absent(self, key: str, data: bytes, content_type: str | None = None) -> bool:
        with self._key_lock(key):
            if self.exists(key):
                return False
            self.put_bytes(key, data, content_type)
            return True

    def get_json_versioned(self, key: str) -> tuple[dict, str]:
        data = self.get_bytes(key)
        return json.loads(data), hashlib.sha256(data).hexdigest()

    def put_json_if(self, key: str, obj: object, version: str) -> None:
        with self._key_lock(key):
            try:
                current = hashlib.sha256(self.get_bytes(key)).hexdigest()
            except ObjectNotFound:
                current = None
            if current != version:
                raise ConcurrentUpdate(f"{self.name}/{key} changed since it was read")
            self.put_json(key, obj)

    def staging_dir(self) -> Path:
        """A folder on the bucket's filesystem for partial downloads, so commit is a rename."""
        path = self.root / ".partial"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def clean_staging(self, older_than_s: float = 6 * 3600) -> int:
        """Delete partial downloads left by a killed process (old enough that no live download owns them)."""
        import time

        cutoff, removed = time.time() - older_than_s, 0
        for tmp in self.staging_dir().glob(TMP_PREFIX + "*"):
            try:
                if tmp.stat().st_mtime < cutoff:
                    tmp.unlink()
                    removed += 1
            except FileNotFoundError:
                pass
        return removed
