"""podrun can be trusted by default (issue 22): nothing lost, a dry run changes nothing, no silent success,
one sentence instead of a traceback, and a status whose summary agrees with its stages."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
from pathlib import Path

import pytest
from dagster import DagsterInstance

from podinsight_dagster.demo.run import CONTENT, write_demo_catalog
from podinsight_dagster.store.checkpoints import EpisodeRecord, FeedRecord, SqliteCheckpointStore

KEPT = ("persons_json", "transcripts_json", "chapters_url", "description", "duration_hint_sec")


def one_sentence(result, code: int) -> str:
    """The command exited with ``code`` and said one line, no traceback; return it."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def last_line(result, code: int) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    return result.output.strip().splitlines()[-1]


# ---------------------------------------------------------------------------
# item 1: --manifest never erases what the feed said; a new poll updates it
# ---------------------------------------------------------------------------
def test_fetch_manifest_keeps_what_the_feed_said_and_a_new_poll_updates_it(settings, demo_catalog, demo_cdn,
                                                                           podrun):
    demo_catalog(["science-weekly"])
    podrun("fetch", "--limit", "0")
    store = SqliteCheckpointStore(settings.checkpoint_db)
    before = {r.partition_key: {k: getattr(r, k) for k in KEPT} for r in store.episodes()}
    assert any(v["persons_json"] and "Priya Raman" in v["persons_json"] for v in before.values())
    assert all(v["description"] for v in before.values())

    podrun("fetch", "--manifest", str(settings.home / "manifest.csv"), "--limit", "0")
    assert {r.partition_key: {k: getattr(r, k) for k in KEPT} for r in store.episodes()} == before

    feed = (CONTENT / "feeds" / "science-weekly.xml").read_text()
    old_notes = "Sleep stages, dreaming and memory, with guest Priya Raman."
    demo_cdn.add_file("/feeds/science-weekly.xml", feed.replace(old_notes, "Sleep, revised notes.").encode(),
                      "application/rss+xml")
    podrun("fetch", "--limit", "0")
    notes = [r.description for r in store.episodes()]
    assert "Sleep, revised notes." in notes and old_notes not in notes


# ---------------------------------------------------------------------------
# item 3: a dry run changes nothing in the data root
# ---------------------------------------------------------------------------
def snapshot(root: Path) -> dict[str, object]:
    """Every file under ``root``: SQLite databases as their table dumps, other files as sha256."""
    out: dict[str, object] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_dir():
            out[rel] = "dir"
        elif path.name.endswith(("-wal", "-shm", "-journal")):
            continue  # SQLite's own files come and go with connections; the dump below holds the content
        elif path.suffix in (".db", ".sqlite"):
            con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                out[rel] = list(con.iterdump())
            finally:
                con.close()
        else:
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def test_fetch_dry_run_changes_nothing(settings, demo_catalog, podrun, demo_cdn, tmp_path, monkeypatch):
    fresh = tmp_path / "fresh"  # a data root with only its catalog: the user's first command
    write_demo_catalog(fresh / "feeds", demo_cdn.base_url, ["tech-talk"])
    monkeypatch.setenv("PODINSIGHT_HOME", str(fresh))
    monkeypatch.setenv("PODINSIGHT_FEEDS_DIR", str(fresh / "feeds"))
    before = snapshot(fresh)
    assert "DRY RUN: would download 3 episodes" in podrun("fetch", "--dry-run").output
    assert snapshot(fresh) == before
    monkeypatch.setenv("PODINSIGHT_HOME", str(settings.home))
    monkeypatch.setenv("PODINSIGHT_FEEDS_DIR", str(settings.feeds_dir))

    demo_catalog(["tech-talk"])
    podrun("fetch", "--limit", "1")  # a data root in use: checkpoints, a Dagster partition and run, a manifest
    demo_catalog(["tech-talk", "history-hour"])  # a new feed: its episodes are not registered yet
    before = snapshot(settings.home)
    out = podrun("fetch", "--dry-run").output
    assert "DRY RUN: would download 5 episodes" in out and "nothing was written" in out
    assert snapshot(settings.home) == before
    out = podrun("fetch", "--dry-run", "--manifest", str(settings.home / "manifest.csv")).output
    assert "DRY RUN: would download 2 episodes" in out
    assert snapshot(settings.home) == before
    assert "downloading 5 episodes" in podrun("fetch").output  # the real run after it finds them all new


# ---------------------------------------------------------------------------
# item 4: exit codes; settings checked before a run
# ---------------------------------------------------------------------------
def test_fetch_exits_1_when_every_feed_failed(settings, demo_cdn, podrun):
    (settings.feeds_dir / "tier1_feeds.yaml").write_text(
        f"feeds:\n  - {{slug: gone, url: '{demo_cdn.url('/gone.xml')}'}}\n"
        f"  - {{slug: page, url: '{demo_cdn.url('/page.html')}'}}\n")
    demo_cdn.add_file("/page.html", b"<html><body>not a feed</body></html>", "text/html")
    result = podrun("fetch", ok=False)
    line = last_line(result, 1)
    assert line.startswith("Error: 2 of 2 feeds failed to poll (gone: ") and "page: " in line
    assert "podrun fetch" in line
    feeds = {f.slug: f.last_status for f in SqliteCheckpointStore(settings.checkpoint_db).feeds()}
    assert feeds == {"gone": "failed", "page": "failed"}


def test_unknown_model_refused_before_any_run_and_stale_failures_exit_1(settings, demo_catalog, podrun):
    demo_catalog(["tech-talk"])
    podrun("fetch", "--limit", "1")
    for args in (("transcribe", "--model", "nonexistent"), ("demo", "--model", "nonexistent")):
        line = one_sentence(podrun(*args, ok=False), 2)
        assert "unknown model 'nonexistent'" in line and "tiny.en" in line
    with DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        assert [r.job_name for r in instance.get_runs()] == ["fetch_episodes"]  # no transcription run began

    store = SqliteCheckpointStore(settings.checkpoint_db)
    [pk] = [r.partition_key for r in store.episodes(state="downloaded")]
    store.mark_stage(pk, "transcribe", "done", code_version="an older model")  # a stale transcript
    store.mark_transcribed(pk)
    audio = next((settings.raw_root / pk).rglob("episode.mp3"))
    audio.write_bytes(b"\0" * audio.stat().st_size)  # no longer audio: the re-transcription fails
    line = last_line(podrun("transcribe", "--stale", ok=False), 1)
    assert line.startswith(f"Error: 1 of 1 episodes failed to transcribe ({pk}: ")
    assert "podrun transcribe" in line


# ---------------------------------------------------------------------------
# item 5: one summary that agrees with the stages; failed feeds with their error
# ---------------------------------------------------------------------------
def test_status_summary_agrees_with_the_stages_and_names_failed_feeds(settings, podrun):
    store = SqliteCheckpointStore(settings.checkpoint_db)
    keys = [f"show/ep-{i}" for i in range(5)]
    store.register_episodes([EpisodeRecord(partition_key=k, feed_slug="show", guid_key=k.split("/")[1])
                             for k in keys])
    for k in keys[:4]:
        store.mark_downloaded(k, bytes=100, sha256="x")
    for k in keys[:3]:
        store.mark_failed(k, "transcribe", "not audio: no MPEG frames")
    store.upsert_feed(FeedRecord(slug="show", url="https://show.example/feed.xml", last_status="ok"))
    store.upsert_feed(FeedRecord(slug="gone", url="https://gone.example/feed.xml", last_status="failed",
                                 last_error="HTTP 404 Not Found"))
    out = podrun("status").output.splitlines()
    assert out[0] == "discovered: 1  downloaded: 1  transcribed: 0  failed: 3 (transcribe 3)"
    assert "  transcribe pending: 2  running: 0  done: 0  failed: 3" in out  # the stage line agrees
    assert out[out.index("failed feeds: 1") + 1] == "  gone: HTTP 404 Not Found"
    import json

    doc = json.loads(podrun("status", "--json").output)
    assert doc["episodes"]["failed"] == doc["stages"]["transcribe"]["failed"] == 3
    assert doc["failed_feeds"] == [{"slug": "gone", "url": "https://gone.example/feed.xml",
                                    "error": "HTTP 404 Not Found", "checked_at": None}]


# ---------------------------------------------------------------------------
# item 6: the catalog: unknown keys and non-http(s) feed URLs
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("feeds:\n  - {slug: a, url: 'https://a.example/feed'}\nhost_limts:\n  a.example: 2\n",
     "unknown key 'host_limts' (did you mean 'host_limits'?)"),
    ("feeds:\n  - {slug: a, url: 'https://a.example/feed', langauge: en}\n",
     "feeds[0] (a): unknown key 'langauge' (the keys are slug, url, tier)"),
    ("feeds:\n  - {slug: a, url: 'https://a.example/feed', teir: 1}\n",
     "feeds[0] (a): unknown key 'teir' (did you mean 'tier'?)"),
    ("feeds:\n  - {slug: a, url: 'file:///etc/passwd'}\n",
     'feeds[0] (a): url must be an http:// or https:// address, not "file:///etc/passwd"'),
    ("feeds:\n  - {slug: a, url: 'a.example/feed.xml'}\n",
     'feeds[0] (a): url must be an http:// or https:// address, not "a.example/feed.xml"'),
])
def test_catalog_unknown_keys_and_non_http_urls_are_refused(settings, podrun, text, expected):
    path = settings.feeds_dir / "tier1_feeds.yaml"
    path.write_text(text)
    for args in (("fetch",), ("fetch", "--dry-run")):
        assert one_sentence(podrun(*args, ok=False), 2) == f"Error: {path}: {expected}"
    assert not settings.checkpoint_db.exists()  # refused before anything ran


# ---------------------------------------------------------------------------
# item 7: a data root that cannot be used, or holds nothing: one sentence
# ---------------------------------------------------------------------------
EVERY_COMMAND = [("status",), ("status", "--json"), ("fetch",), ("fetch", "--dry-run"), ("transcribe",),
                 ("freeze",), ("freeze", "--lift"), ("query", "SELECT 1"), ("search", "sleep"), ("report",),
                 ("demo",)]


def test_a_data_root_that_is_a_file_is_one_sentence(tmp_path, home, podrun, monkeypatch):
    home.parent.mkdir(parents=True, exist_ok=True)
    home.write_text("not a folder")
    monkeypatch.chdir(tmp_path)  # report's default --out lands here, if anything
    for args in EVERY_COMMAND:
        line = one_sentence(podrun(*args, ok=False), 2)
        assert f"{home} (PODINSIGHT_HOME) is a file" in line, (args, line)
    under = home / "data"
    monkeypatch.setenv("PODINSIGHT_HOME", str(under))
    monkeypatch.setenv("PODINSIGHT_FEEDS_DIR", str(under / "feeds"))
    for args in EVERY_COMMAND:
        line = one_sentence(podrun(*args, ok=False), 2)
        assert f"{under} (PODINSIGHT_HOME) cannot be a folder: {home} is a file" in line, (args, line)
    assert home.read_text() == "not a folder" and not (tmp_path / "report.html").exists()
    feed = Path(__file__).resolve().parent / "fixtures" / "feeds" / "whitespace.xml"
    assert "spaces-ep-1" in podrun("feed", "inspect", str(feed)).output  # needs no data root


@pytest.fixture
def immutable(home):
    """``home`` made immutable (chattr +i): not even root may add a file to it."""
    home.mkdir(parents=True)
    done = subprocess.run(["chattr", "+i", str(home)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"chattr +i is not available here (an ext4-like file system is needed): {done.stderr.strip()}")
    try:
        yield home
    finally:
        subprocess.run(["chattr", "-i", str(home)], check=True)


def test_a_read_only_data_root_is_one_sentence(immutable, podrun, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    for args in (("fetch",), ("transcribe",), ("freeze",), ("freeze", "--lift"), ("demo",)):
        line = one_sentence(podrun(*args, ok=False), 2)
        assert f"cannot write to the data root {immutable} (PODINSIGHT_HOME): Operation not permitted" in line, args
    for args in (("status",), ("query", "SELECT 1"), ("search", "sleep"), ("report",)):
        line = one_sentence(podrun(*args, ok=False), 2)
        assert f"{immutable} (PODINSIGHT_HOME) holds no Pod-Insight data" in line, (args, line)
    assert list(immutable.iterdir()) == []


def test_a_read_only_data_root_with_data_is_one_sentence(settings, demo_catalog, podrun, monkeypatch, tmp_path):
    demo_catalog(["tech-talk"])
    podrun("fetch", "--limit", "0")
    subprocess.run(["chattr", "+i", str(settings.home)], check=True)
    try:
        for args in (("fetch",), ("transcribe",), ("freeze",)):
            line = one_sentence(podrun(*args, ok=False), 2)
            assert f"cannot write to the data root {settings.home}" in line, (args, line)
        for args in (("status",), ("report", "--out", str(tmp_path / "r.html"))):  # reading may work
            result = podrun(*args, ok=False)
            assert result.exit_code == 0 or str(settings.home) in one_sentence(result, 2), (args, result.output)
    finally:
        subprocess.run(["chattr", "-i", str(settings.home)], check=True)


def test_reading_commands_on_a_mistyped_data_root_create_nothing(tmp_path, home, podrun, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for args in (("status",), ("status", "--json"), ("query", "SELECT count(*) FROM episodes"),
                 ("search", "sleep"), ("report",)):
        line = one_sentence(podrun(*args, ok=False), 2)
        assert line == (f"Error: the data root {home} (PODINSIGHT_HOME) does not exist; check PODINSIGHT_HOME, "
                        "or run podrun fetch (or podrun demo) first"), args
    assert not home.exists() and not (tmp_path / "report.html").exists()


def test_query_without_sql_is_a_usage_error(settings, podrun):
    for sql in ("", "   "):
        result = podrun("query", sql, ok=False)
        assert result.exit_code == 2 and "Traceback" not in result.output
        assert "no SQL given" in result.output


def test_a_file_in_the_way_inside_the_data_root_is_one_sentence(settings, demo_catalog, podrun):
    demo_catalog(["tech-talk"])
    settings.locks_dir.rmdir()
    settings.locks_dir.write_text("in the way")
    line = one_sentence(podrun("fetch", "--limit", "0", ok=False), 2)
    assert line == (f"Error: cannot use {settings.locks_dir} in the data root {settings.home} (PODINSIGHT_HOME): "
                    "File exists; check that PODINSIGHT_HOME is a writable folder")
