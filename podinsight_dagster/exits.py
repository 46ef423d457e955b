"""podrun's exit codes and the one-sentence errors that carry them (README: "Exit codes").

0 all done (or nothing to do); 1 work failed, wholly or partly (a feed, an episode, a run) or its
input was refused; 2 bad usage or settings, found before anything ran (click's usage errors, an
environment variable, the model, the catalog, the data root); 3 refused by the cost guard (the
freeze, or the ceiling). Each error is one line: what failed and what to do.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import tempfile
from pathlib import Path

import click

DONE, WORK_FAILED, BAD_SETTINGS, REFUSED = 0, 1, 2, 3


class WorkFailed(click.ClickException):
    """Some or all of a command's work failed: exit 1, the message says what and what to do."""

    exit_code = WORK_FAILED


class BadSettings(click.ClickException):
    """A setting (environment, flag, model, catalog, data root) cannot be used: exit 2, before any work."""

    exit_code = BAD_SETTINGS


class Refused(click.ClickException):
    """The cost guard refused the work (the freeze is set, or the ceiling would be crossed): exit 3."""

    exit_code = REFUSED


# ---------------------------------------------------------------------------
# The data root (PODINSIGHT_HOME) of the local deployment
# ---------------------------------------------------------------------------
# What a data root that has been used holds (any one of them).
DATA_MARKERS = ("checkpoints.sqlite", "pod-insights-stage", "pod-insights-raw", "transcript_index.sqlite")


def _not_a_folder(home: Path) -> str | None:
    """Why ``home`` cannot be a folder (it, or a folder above it, is a file), else None."""
    if home.exists() and not home.is_dir():
        return f"the data root {home} (PODINSIGHT_HOME) is a file, not a folder; point PODINSIGHT_HOME at a folder"
    for parent in home.parents:
        if parent.exists():
            if not parent.is_dir():
                return (f"the data root {home} (PODINSIGHT_HOME) cannot be a folder: {parent} is a file; "
                        "point PODINSIGHT_HOME at a folder")
            break
    return None


def require_folder(home: Path) -> None:
    """BadSettings when ``home`` cannot be a folder (it, or a folder above it, is a file); creates nothing."""
    why = _not_a_folder(home)
    if why:
        raise BadSettings(why)


def require_writable_home(home: Path) -> None:
    """BadSettings unless ``home`` is a folder this process can write (made if missing)."""
    require_folder(home)
    try:
        home.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".podrun-write-check-", dir=home)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise BadSettings(f"cannot write to the data root {home} (PODINSIGHT_HOME): {exc.strerror or exc}; "
                          "make it writable or point PODINSIGHT_HOME elsewhere") from None


def require_data(home: Path, *also: Path) -> None:
    """BadSettings unless ``home`` holds Pod-Insight data (or one of ``also`` exists); creates nothing.

    A mistyped PODINSIGHT_HOME would otherwise read as an empty archive (zeros everywhere).
    """
    require_folder(home)
    if any(p.exists() for p in also) or (home.is_dir() and any((home / m).exists() for m in DATA_MARKERS)):
        return
    state = "does not exist" if not home.exists() else "holds no Pod-Insight data"
    raise BadSettings(f"the data root {home} (PODINSIGHT_HOME) {state}; check PODINSIGHT_HOME, "
                      "or run podrun fetch (or podrun demo) first")


_STORAGE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.ENOTDIR, errno.EISDIR, errno.EEXIST}


def storage_error_sentence(exc: BaseException, home: Path | None) -> click.ClickException | None:
    """One sentence for a file or SQLite error while using the data root (read-only, a file in the way: exit 2;
    a full disk: the work failed, exit 1); None for any other error."""
    where = f"the data root {home} (PODINSIGHT_HOME)" if home else "the data root (PODINSIGHT_HOME)"
    if isinstance(exc, OSError) and exc.errno in _STORAGE_ERRNOS and exc.filename:
        error = WorkFailed if exc.errno == errno.ENOSPC else BadSettings
        inside = home is not None and str(exc.filename).startswith(str(home))
        todo = ("free some space and run it again" if exc.errno == errno.ENOSPC else
                "check that PODINSIGHT_HOME is a writable folder" if inside else "check its permissions")
        return error(f"cannot use {exc.filename}" + (f" in {where}" if inside else "") + f": {exc.strerror}; {todo}")
    if isinstance(exc, sqlite3.OperationalError) and any(
            s in str(exc) for s in ("readonly", "read-only", "unable to open", "disk I/O", "disk is full")):
        error = WorkFailed if "full" in str(exc) else BadSettings
        return error(f"cannot use the database in {where}: {exc}; check that PODINSIGHT_HOME is a writable folder")
    return None
