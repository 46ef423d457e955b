"""Passage vectors beside the search index: one append-only file of int8 rows, memory-mapped, scanned exactly.

Why a file and not rows in SQLite: a meaning search needs every vector. Read from 900,000 SQLite rows
and widened to float32 they cost seconds per process and 1.4 GB of memory, and every query then read
the 1.4 GB again (docs/BENCHMARKS.md, "Search by meaning"). Here the int8 rows lie in one file
(``<index stem>.vectors-<generation>.i8``, 384 bytes a row) that a search maps into memory (the OS
page cache shares it between processes) and scans with one compiled loop: each int8 widened to float32
in registers and multiplied with the float32 question, so a query reads 345 MB at 900,000 passages
and the scores are the ones the float32 matrix gave, up to the order of the additions.

The file only grows (incremental updates append an episode's rows); the index's ``episodes`` table
says which rows are whose (``vec_start``, ``vec_count``), written in the same transaction as the
passages and after the rows are on disk. Rows no episode points to (a re-indexed or removed
episode's, or an append whose transaction failed) are dead until ``compact`` rewrites the live ones
into the next generation's file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

SCALE = 127.0   # float component -> int8: round(x * 127); vectors are L2-normalised, so |x| <= 1


def quantize(vectors: np.ndarray) -> np.ndarray:
    """Unit float vectors as int8 rows (the stored form)."""
    return np.clip(np.rint(np.asarray(vectors, dtype=np.float32) * SCALE), -127, 127).astype(np.int8)


def file_for(index_path: Path, generation: int) -> Path:
    return index_path.with_name(f"{index_path.stem}.vectors-{generation}.i8")


def append(path: Path, rows: np.ndarray) -> int:
    """Append int8 rows to ``path`` (created if missing), on disk when this returns; the first row's slot.

    Call it while holding the index's write lock: the slot is the file's length then. A partial row
    left by a crash mid-write is cut off first.
    """
    dim = rows.shape[1]
    with open(path, "ab+") as f:
        size = f.seek(0, os.SEEK_END)
        if size % dim:
            f.truncate(size - size % dim)
            size -= size % dim
        f.write(np.ascontiguousarray(rows, dtype=np.int8).tobytes())
        f.flush()
        os.fsync(f.fileno())
    return size // dim


def mapped(path: Path, rows: int, dim: int) -> np.ndarray:
    """The first ``rows`` rows of the file, memory-mapped read-only (a plain ndarray view)."""
    if rows == 0:
        return np.zeros((0, dim), dtype=np.int8)
    return np.memmap(path, dtype=np.int8, mode="r", shape=(rows, dim)).view(np.ndarray)


def slot_rowids(ids: np.ndarray, starts: np.ndarray, counts: np.ndarray, shift: int, size: int) -> np.ndarray:
    """For each slot of the file's first ``size`` rows: the passage rowid it holds, -1 for a dead slot."""
    out = np.full(size, -1, dtype=np.int64)
    if not len(ids):
        return out
    total = int(counts.sum())
    first = np.repeat(starts, counts)
    within = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    out[first + within] = np.repeat(ids << shift, counts) + within
    return out


def warm_in_background():
    """Load the compiled scan in a thread (numba's import and its cached machine code: ~1 s) while the
    caller loads the question's encoder and embeds it; ``join()`` the thread before scanning."""
    import threading

    def warm():
        mat = np.zeros((1, 384), dtype=np.int8)
        mat.flags.writeable = False  # the mapped file's type: numba compiles per array type
        scores(mat, np.zeros(384, dtype=np.float32))

    thread = threading.Thread(target=warm, name="vector-scan-warm", daemon=True)
    thread.start()
    return thread


def scores(mat: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Cosine similarity of every int8 row (scaled by 127) with the unit float32 vector ``q``, float32."""
    # Imported here: numba's import (~0.5 s) is paid by meaning searches only.
    from podinsight_dagster.archive._scan import dot_rows

    out = np.empty(len(mat), dtype=np.float32)
    if len(mat):
        dot_rows(mat, np.ascontiguousarray(q, dtype=np.float32) / np.float32(SCALE), out)
    return out
