"""podrun on input as people write it: feeds in the wild (what `feed inspect --json` read), and
bad catalogs, manifests and settings (one sentence, never a traceback; exit code 2 for a setting or the catalog,
1 for a manifest)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dagster import DagsterInstance, materialize

from podinsight_dagster.assets import all_assets
from podinsight_dagster.definitions import resources_for

FEEDS = Path(__file__).resolve().parent / "fixtures" / "feeds"
HEADER = ("partition_key,feed_slug,guid_key,guid,title,published,enclosure_url,enclosure_type,"
          "enclosure_length,duration_sec,tier\n")


def refused(podrun, *args, code: int = 1) -> str:
    """Run podrun expecting one clear sentence and exit code ``code``; return the sentence."""
    result = podrun(*args, ok=False)
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def inspect_json(podrun, source: str) -> dict:
    return json.loads(podrun("feed", "inspect", source, "--json").output)


# ---------------------------------------------------------------------------
# item 6: feeds in the wild, as `podrun feed inspect --json` reads them
# ---------------------------------------------------------------------------
def test_inspect_whitespace_feed(home, podrun):
    [ep] = inspect_json(podrun, str(FEEDS / "whitespace.xml"))["episodes"]
    assert (ep["guid"], ep["enclosure"]) == (
        "spaces-ep-1", {"url": "https://cdn.example/spaces/ep1.mp3", "type": "audio/mpeg", "length": 4096})
    assert ep["transcripts"][0]["url"] == "https://cdn.example/spaces/ep1.vtt"
    assert ep["chapters_url"] == "https://cdn.example/spaces/ep1.chapters.json"


def test_inspect_relative_urls_from_a_file_and_over_http(home, podrun, demo_cdn):
    path = str(FEEDS / "relative-urls.xml")
    eps = inspect_json(podrun, path)["episodes"]
    assert eps[0]["enclosure"]["url"] == str(FEEDS / "audio" / "ep1.mp3")  # against the file path
    assert eps[1]["enclosure"]["url"] == "https://media.example/season2/ep2.mp3"  # xml:base
    demo_cdn.add_file("/shows/rel/feed.xml", (FEEDS / "relative-urls.xml").read_bytes(), "application/rss+xml")
    eps = inspect_json(podrun, demo_cdn.url("/shows/rel/feed.xml"))["episodes"]
    assert eps[0]["enclosure"]["url"] == demo_cdn.url("/shows/rel/audio/ep1.mp3")
    assert eps[0]["transcripts"][0]["url"] == demo_cdn.url("/shows/transcripts/ep1.srt")
    assert eps[0]["chapters_url"] == demo_cdn.url("/chapters/ep1.json")
    assert eps[2]["enclosure"]["url"] == demo_cdn.url("/shows/rel/mirror/ep3.mp3")


def test_inspect_media_rss_and_several_enclosures(home, podrun):
    eps = inspect_json(podrun, str(FEEDS / "media-rss.xml"))["episodes"]
    assert [e["enclosure"]["url"].rsplit("/", 1)[1] for e in eps] == [
        "ep1.mp3", "ep2-128k.m4a", "ep3.mp3", "ep4-stream"]


def test_inspect_undeclared_namespaces(home, podrun):
    doc = inspect_json(podrun, str(FEEDS / "undeclared-namespaces.xml"))
    assert doc["feed"]["itunes_type"] == "serial"
    one, two = doc["episodes"]
    assert one["duration_sec"] == 3661 and one["transcripts"] == [
        {"url": "https://cdn.example/forgot/ep1.vtt", "type": "text/vtt", "language": "en"}]
    assert two["enclosure"]["url"] == "https://cdn.example/forgot/ep2.mp3" and doc["skipped"] == []


def test_inspect_no_guid(home, podrun):
    eps = inspect_json(podrun, str(FEEDS / "no-guid.xml"))["episodes"]
    assert [(e["guid"], e["guid_derived"]) for e in eps] == [
        ("https://cdn.example/noguid/ep1.mp3?source=feed", True),
        ("https://cdn.example/noguid/ep2.mp3", True),
        ("noguid-3", False)]
    assert eps[0]["guid_key"].startswith("h-")


def test_inspect_lists_items_without_audio_as_skipped(home, podrun):
    doc = inspect_json(podrun, str(FEEDS / "no-audio.xml"))
    assert [e["guid"] for e in doc["episodes"]] == ["mixed-5"]
    assert [(s["guid"], s["reason"]) for s in doc["skipped"]] == [
        ("mixed-1", "no enclosure"), ("mixed-2", "no audio enclosure (image/jpeg)"),
        ("mixed-3", "no audio enclosure (application/pdf)"), ("mixed-4", "no enclosure")]
    text = podrun("feed", "inspect", str(FEEDS / "no-audio.xml")).output
    assert "Mixed Show  (1 episodes)" in text
    assert "skipped item 1 ('Cover art only'): no audio enclosure (image/jpeg)" in text


def test_inspect_serial_keeps_the_feed_order(home, podrun):
    doc = inspect_json(podrun, str(FEEDS / "serial.xml"))
    assert doc["feed"]["itunes_type"] == "serial"
    assert [(e["guid"], e["season"], e["episode"]) for e in doc["episodes"]] == [
        ("serial-1", 2, 1), ("serial-3", 2, 3), ("serial-2", 2, 2)]
    assert "Serial Show  (3 episodes, serial)" in podrun("feed", "inspect", str(FEEDS / "serial.xml")).output


def test_inspect_durations(home, podrun):
    eps = inspect_json(podrun, str(FEEDS / "durations.xml"))["episodes"]
    assert [e["duration_sec"] for e in eps] == [None if e["title"] == "null" else float(e["title"]) for e in eps]
    assert eps[6]["duration_sec"] == 3723.5 and eps[-1]["duration_sec"] is None


# ---------------------------------------------------------------------------
# item 7: bad input is one sentence (exit code 2 for the catalog and settings, 1 for a manifest)
# ---------------------------------------------------------------------------
def write_catalog(settings, text: str) -> Path:
    path = settings.feeds_dir / "tier1_feeds.yaml"
    path.write_text(text)
    return path


def test_catalog_with_a_non_numeric_tier(settings, podrun):
    path = write_catalog(settings, "feeds:\n  - {slug: a-show, url: 'https://a.example/feed', tier: one}\n")
    assert refused(podrun, "fetch", "--dry-run", code=2) == (
        f'Error: {path}: feeds[0] (a-show): tier must be a whole number, not "one"')


def test_catalog_with_a_boolean_host_limit(settings, podrun):
    path = write_catalog(settings, "feeds:\n  - {slug: a-show, url: 'https://a.example/feed', tier: 1}\n"
                                   "host_limits: {x: true}\n")
    assert refused(podrun, "fetch", "--dry-run", code=2) == (
        f"Error: {path}: host_limits: x must be a positive whole number, not true")


def test_a_bad_catalog_fails_the_feeds_asset_with_the_same_sentence(settings):
    path = write_catalog(settings, "feeds:\n  - {slug: a-show, url: 'https://a.example/feed', tier: one}\n")
    with DagsterInstance.ephemeral() as instance:
        result = materialize(all_assets, selection=["feeds"], instance=instance, resources=resources_for("local"),
                             raise_on_error=False)
    assert not result.success
    [failure] = result.get_step_failure_events()
    data = failure.step_failure_data
    assert data.user_failure_data.description == f'{path}: feeds[0] (a-show): tier must be a whole number, not "one"'
    assert data.error.cls_name == "Failure"


def write_manifest(tmp_path, body: bytes) -> str:
    path = tmp_path / "manifest.csv"
    path.write_bytes(body)
    return str(path)


ROW = "tech-talk/ep-1,tech-talk,ep-1,ep-1,One,,https://cdn.example/1.mp3,audio/mpeg,{length},{duration},1\n"


def test_manifest_that_is_not_utf8(settings, podrun, tmp_path):
    body = HEADER.encode() + ROW.format(length=1, duration=2).replace("One", "Caf\xe9").encode("latin-1")
    source = write_manifest(tmp_path, body)
    offset = body.index(b"\xe9")
    assert refused(podrun, "fetch", "--manifest", source) == (
        f"Error: {source}: not a UTF-8 text file (byte 0xe9 at offset {offset})")


@pytest.mark.parametrize("column, length, duration, expected", [
    ("duration_sec", "1000", "ten minutes", "duration_sec must be a number of seconds, not 'ten minutes'"),
    ("duration_sec", "1000", "nan", "duration_sec must be a number of seconds, not 'nan'"),
    ("enclosure_length", "12 MB", "600", "enclosure_length must be a whole number of bytes, not '12 MB'"),
    ("enclosure_length", "-1", "600", "enclosure_length must be a whole number of bytes, not '-1'"),
])
def test_manifest_with_a_bad_number(settings, podrun, tmp_path, column, length, duration, expected):
    source = write_manifest(tmp_path, (HEADER + ROW.format(length=length, duration=duration)).encode())
    assert refused(podrun, "fetch", "--manifest", source) == f"Error: {source} line 2: {expected}"


def test_manifest_without_key_columns_or_missing(settings, podrun, tmp_path):
    source = write_manifest(tmp_path, b"title,enclosure_url\nOne,https://cdn.example/1.mp3\n")
    assert refused(podrun, "fetch", "--manifest", source) == (
        f"Error: {source}: no partition_key column (nor feed_slug and guid_key)")
    missing = str(tmp_path / "nope.csv")
    assert refused(podrun, "fetch", "--manifest", missing) == f"Error: cannot read manifest {missing}: no such file"


def test_manifest_with_a_bom_and_blank_numbers_is_fine(settings, podrun, tmp_path):
    source = write_manifest(tmp_path, b"\xef\xbb\xbf" + (HEADER + ROW.format(length="", duration="")).encode())
    assert "manifest " + source + ": 1 episodes" in podrun("fetch", "--manifest", source, "--limit", "0").output


@pytest.fixture
def s3(moto_server, monkeypatch):
    """boto3 in podrun reaches the moto server (the endpoint and region come from the settings)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.url)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    return moto_server.client("s3")


def test_s3_manifest_missing_bucket_or_key(settings, podrun, s3):
    uri = "s3://no-such-bucket/20261125.csv"
    assert refused(podrun, "fetch", "--manifest", uri) == (
        f"Error: cannot read manifest {uri}: bucket no-such-bucket does not exist")
    s3.create_bucket(Bucket="pod-insights-manifests")
    uri = "s3://pod-insights-manifests/20261125.csv"
    assert refused(podrun, "fetch", "--manifest", uri) == (
        f"Error: cannot read manifest {uri}: bucket pod-insights-manifests has no object 20261125.csv")
    assert refused(podrun, "transcribe", "--manifest-s3", uri) == (
        f"Error: cannot read manifest {uri}: bucket pod-insights-manifests has no object 20261125.csv")
    assert refused(podrun, "fetch", "--manifest", "s3://pod-insights-manifests") == (
        "Error: cannot read manifest s3://pod-insights-manifests: an s3:// URI names a bucket and a key"
        " (s3://BUCKET/KEY)")


def test_s3_manifest_is_read_and_checked_like_a_file(settings, podrun, s3):
    s3.create_bucket(Bucket="pod-insights-manifests")
    s3.put_object(Bucket="pod-insights-manifests", Key="ok.csv",
                  Body=(HEADER + ROW.format(length=1, duration=2)).encode())
    out = podrun("fetch", "--manifest", "s3://pod-insights-manifests/ok.csv", "--limit", "0").output
    assert "manifest s3://pod-insights-manifests/ok.csv: 1 episodes" in out
    s3.put_object(Bucket="pod-insights-manifests", Key="bad.csv", Body=b"\xff\xfe" + HEADER.encode("utf-16-le"))
    assert refused(podrun, "fetch", "--manifest", "s3://pod-insights-manifests/bad.csv") == (
        "Error: s3://pod-insights-manifests/bad.csv: not a UTF-8 text file (byte 0xff at offset 0)")


@pytest.mark.parametrize("value", ["forty", "nan"])
def test_a_non_numeric_cost_ceiling(home, podrun, monkeypatch, value):
    monkeypatch.setenv("PODINSIGHT_COST_CEILING_USD", value)
    assert refused(podrun, "status", code=2) == f"Error: PODINSIGHT_COST_CEILING_USD='{value}' is not an amount in USD"
    assert refused(podrun, "transcribe", code=2) == (
        f"Error: PODINSIGHT_COST_CEILING_USD='{value}' is not an amount in USD")


def test_transcribe_manifest_s3_takes_only_its_episodes_up_to_limit(settings, demo_catalog, podrun, s3):
    """README's `podrun transcribe --limit 500 --manifest-s3 s3://...`: of the downloaded episodes, only those the
    manifest lists, at most --limit of them. (Dry runs: the selection is the same code; a transcription here would
    add 12 s and test the launcher, which the other transcribe tests do.)"""
    demo_catalog(["tech-talk"])
    podrun("fetch", "--limit", "3")
    header, *rows = (settings.home / "manifest.csv").read_text().splitlines(keepends=True)
    assert len(rows) == 3
    s3.create_bucket(Bucket="pod-insights-manifests")
    s3.put_object(Bucket="pod-insights-manifests", Key="retry.csv", Body="".join([header, *rows[:2]]).encode())
    uri = "s3://pod-insights-manifests/retry.csv"
    assert "would transcribe 3 episodes" in podrun("transcribe", "--dry-run").output
    assert "would transcribe 2 episodes" in podrun("transcribe", "--limit", "500", "--manifest-s3", uri,
                                                   "--dry-run").output  # 3 downloaded, 2 listed
    assert "would transcribe 1 episodes" in podrun("transcribe", "--limit", "1", "--manifest-s3", uri,
                                                   "--dry-run").output
