"""SQL over the stage layout: DuckDB views ``episodes``, ``transcripts``, ``segments`` and ``kpis``.

The views read the files the pipeline writes where they lie (a folder, or ``s3://`` through
DuckDB's httpfs), so a query always sees the latest episodes. ``segments`` has the run-book's
Athena table (Appendix B) shape: ``text, start_sec, end_sec, speaker`` with the partition columns
``feed_slug`` and ``guid`` (the episode's folder, i.e. its ``guid_key``), plus the extra fields
the pipeline writes (``avg_logprob``, ``no_speech_prob``, ``speaker_name``). A view over files
that do not exist yet is an empty view with the same columns.
"""

from __future__ import annotations

from dataclasses import dataclass

# Columns of each file type, as the pipeline writes them (transcribe/steps.py, costs/kpis.py).
SEGMENT_COLUMNS: dict[str, str] = {
    "text": "VARCHAR", "start_sec": "DOUBLE", "end_sec": "DOUBLE", "speaker": "INTEGER",
    "avg_logprob": "DOUBLE", "no_speech_prob": "DOUBLE", "speaker_name": "VARCHAR",
}
TRANSCRIPT_COLUMNS: dict[str, str] = {
    "partition_key": "VARCHAR", "guid": "VARCHAR", "title": "VARCHAR", "audio_key": "VARCHAR",
    "text": "VARCHAR", "language": "VARCHAR", "language_probability": "DOUBLE", "duration": "DOUBLE",
    "speech_duration": "DOUBLE", "model": "VARCHAR", "device": "VARCHAR", "wall_sec": "DOUBLE",
    "source": "VARCHAR", "unreliable_reason": "VARCHAR",
}
KPI_COLUMNS: dict[str, str] = {
    "partition_key": "VARCHAR", "duration_sec": "DOUBLE", "speech_sec": "DOUBLE", "speech_ratio": "DOUBLE",
    "words": "BIGINT", "words_per_minute": "DOUBLE", "segments": "BIGINT", "language": "VARCHAR",
    "language_probability": "DOUBLE", "mean_avg_logprob": "DOUBLE", "low_confidence_share": "DOUBLE",
    "max_compression_ratio": "DOUBLE", "suspected_hallucination": "BOOLEAN", "unreliable_text": "BOOLEAN",
    "model": "VARCHAR", "device": "VARCHAR", "wall_sec": "DOUBLE", "realtime_factor": "DOUBLE",
    "cost_usd": "DOUBLE", "source": "VARCHAR",
}
# Athena's partition columns, taken from the object's path <feed_slug>/<guid_key>/...
PARTITION_COLUMNS: dict[str, str] = {"feed_slug": "VARCHAR", "guid": "VARCHAR"}

VIEWS = ("episodes", "transcripts", "segments", "kpis")


class QueryError(ValueError):
    """A query DuckDB refused (bad SQL, an unknown table or column); the message is one sentence."""


@dataclass
class QueryResult:
    columns: list[str]
    rows: list[tuple]


def _struct(columns: dict[str, str]) -> str:
    return "{" + ", ".join(f"'{name}': '{kind}'" for name, kind in columns.items()) + "}"


def _has_files(con, pattern: str) -> bool:
    return con.execute("SELECT count(*) FROM glob(?)", [pattern]).fetchone()[0] > 0


def _path_parts(alias: str = "filename") -> str:
    # <root>/<feed_slug>/<guid_key>/<folder>/<file>: the last four parts of the path.
    return (f"str_split({alias}, '/')[-4] AS feed_slug, str_split({alias}, '/')[-3] AS guid_key")


def _file_view(con, name: str, pattern: str, columns: dict[str, str], fmt: str, select: str) -> None:
    if _has_files(con, pattern):
        source = (f"read_json('{pattern}', format='{fmt}', columns={_struct(columns)}, filename=true, "
                  f"hive_partitioning=false, union_by_name=true)")
    else:  # nothing written yet: the same columns, no rows
        casts = ", ".join(f"CAST(NULL AS {kind}) AS {col}" for col, kind in columns.items())
        source = f"(SELECT {casts}, CAST(NULL AS VARCHAR) AS filename WHERE false)"
    con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT {select} FROM {source}")


def create_views(con, stage_root: str, feed: str = "*") -> None:
    """The four views over the stage layout rooted at ``stage_root`` (a folder path or ``s3://bucket``).

    ``feed`` narrows them to one feed's folder (the roll-up reads one feed at a time).
    """
    root = stage_root.rstrip("/") + "/" + feed
    seg_cols = ", ".join(SEGMENT_COLUMNS)
    _file_view(con, "segments", f"{root}/*/segments/segments.json", SEGMENT_COLUMNS, "newline_delimited",
               f"{seg_cols}, str_split(filename, '/')[-4] AS feed_slug, str_split(filename, '/')[-3] AS guid")
    tr_cols = ", ".join(c for c in TRANSCRIPT_COLUMNS if c != "guid")
    _file_view(con, "transcripts", f"{root}/*/transcripts/transcript.json", TRANSCRIPT_COLUMNS, "auto",
               f"{_path_parts()}, guid AS original_guid, {tr_cols}")
    kpi_cols = ", ".join(c for c in KPI_COLUMNS if c != "partition_key")
    _file_view(con, "kpis", f"{root}/*/kpis/kpis.json", KPI_COLUMNS, "auto",
               f"{_path_parts()}, partition_key, {kpi_cols}")
    con.execute("""
        CREATE OR REPLACE VIEW episodes AS
        SELECT t.feed_slug, t.guid_key, t.partition_key, t.original_guid, t.title, t.language,
               t.duration AS duration_sec, k.speech_ratio, k.words, k.words_per_minute, k.segments,
               k.realtime_factor, k.cost_usd, t.model, t.device, t.source, k.unreliable_text, t.audio_key
        FROM transcripts t LEFT JOIN kpis k USING (feed_slug, guid_key)""")


def lock_to_reading(con, stage_root: str) -> None:
    """From now on ``con`` reads the stage layout and nothing else: no other file, no URL, no settings change.

    DuckDB's own guard (``enable_external_access`` off, but for ``allowed_directories``, then
    ``lock_configuration``): ``read_csv('/etc/passwd')`` and ``COPY ... TO`` anywhere outside are refused.
    Writing inside the layout (it is allowed for reading) is refused by ``run_query``, which runs
    only queries (SELECT, EXPLAIN).
    """
    root = stage_root.rstrip("/") + "/"
    con.execute(f"SET allowed_directories = ['{root.replace(chr(39), chr(39) * 2)}']")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


# What ``run_query`` runs: statements that read (DESCRIBE, SHOW, SUMMARIZE and PRAGMA parse as SELECT).
_READING = ("SELECT", "EXPLAIN")


def run_query(con, sql: str) -> QueryResult:
    """Run one SQL query (SELECT, EXPLAIN) against the views; QueryError (one sentence) when it is anything else,
    or when DuckDB refuses it."""
    import duckdb

    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise QueryError(f"the query failed: {first}") from None
    if not statements:
        raise QueryError("no SQL statement given")
    if len(statements) > 1:
        raise QueryError(f"one statement at a time, not {len(statements)}")
    kind = statements[0].type.name
    if kind not in _READING:
        raise QueryError(f"queries only read the archive: {kind} is not allowed (use SELECT)")
    try:
        cur = con.execute(sql)
        if cur.description is None:
            return QueryResult([], [])
        columns = [d[0] for d in cur.description]
        return QueryResult(columns, cur.fetchall())
    except duckdb.PermissionException as exc:
        first = str(exc).strip().splitlines()[0]
        raise QueryError(f"queries read only the archive's files: {first.removeprefix('Permission Error: ')}") from None
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise QueryError(f"the query failed: {first}") from None
