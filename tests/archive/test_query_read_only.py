"""`podrun query` only reads the archive (issue 22 item 9): no DDL, no COPY, no file outside the stage layout,
no settings change; each refusal one sentence, exit 1, nothing written; the README's queries still work."""

from __future__ import annotations

import csv
import io

from tests.test_podrun_trust import one_sentence, snapshot

README_QUERIES = [
    "SELECT feed_slug, count(*) AS episodes, round(sum(duration_sec)/60, 1) AS minutes FROM episodes "
    "GROUP BY 1 ORDER BY 1",
    "SELECT guid, start_sec, speaker_name, text FROM segments WHERE text ILIKE '%borrow%' ORDER BY guid, start_sec",
]


def test_query_reads_the_archive_and_nothing_else(settings, staged, podrun, tmp_path):
    outside, inside = tmp_path / "out.csv", settings.stage_root / "copied.csv"
    before = snapshot(settings.home)
    for sql, expected in [
        ("DROP VIEW episodes", "Error: queries only read the archive: DROP is not allowed (use SELECT)"),
        (f"COPY (SELECT * FROM segments) TO '{outside}'", "COPY is not allowed"),
        (f"COPY (SELECT * FROM segments) TO '{inside}'", "COPY is not allowed"),
        ("SELECT * FROM read_csv('/etc/passwd')",
         "Error: queries read only the archive's files: Cannot access file \"/etc/passwd\""),
        (f"SELECT * FROM read_text('{settings.checkpoint_db}')", "queries read only the archive's files"),
        ("SET enable_external_access = true", "SET is not allowed"),
        (f"ATTACH '{tmp_path / 'x.db'}'", "ATTACH is not allowed"),
        ("SELECT 1; DROP VIEW segments", "one statement at a time, not 2"),
    ]:
        line = one_sentence(podrun("query", sql, ok=False), 1)
        assert expected in line, (sql, line)
    assert not outside.exists() and not (tmp_path / "x.db").exists()
    assert snapshot(settings.home) == before

    table = podrun("query", README_QUERIES[0]).output.splitlines()
    assert table[0].split() == ["feed_slug", "episodes", "minutes"] and table[-1] == "(2 rows)"
    rows = list(csv.reader(io.StringIO(podrun("query", README_QUERIES[1], "--csv").output)))
    assert rows[0] == ["guid", "start_sec", "speaker_name", "text"] and len(rows) == 3
    assert "DESCRIBE" not in podrun("query", "DESCRIBE episodes").output  # reading statements still run
