"""The contract of every seam, one suite per protocol, run against each implementation.

A new implementation (S3, DynamoDB, CloudWatch) joins by adding its factory to the seam's
fixture params; the assertions stay as they are. The Pipes transcribers run the in-process one
in their worker: their runs are tested through the transcript asset (tests/assets/test_transcript_pipes.py,
tests/test_pipes_batch.py).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from podinsight_dagster.costs.budget import Freeze, LocalComputeFreezer, SpendEntry, SqliteSpendLedger
from podinsight_dagster.fetch.limits import LocalHostLimiter
from podinsight_dagster.store.checkpoints import (DISCOVERED, DOWNLOADED, FAILED, TRANSCRIBED, EpisodeRecord,
                                                   FeedRecord, SqliteCheckpointStore)
from podinsight_dagster.store.metrics import Metric, SqliteMetrics
from podinsight_dagster.store.objects import LocalObjectStore, ObjectNotFound
from podinsight_dagster.transcribe.options import TranscribeOptions, Transcript, TranscriptionError
from podinsight_dagster.transcribe.transcriber import InProcessTranscriber

from podinsight_dagster.services import (build_budget, build_checkpoints, build_limiter, build_metrics,
                                         build_object_stores)
from podinsight_dagster.settings import Settings
from podinsight_dagster.store.dynamo import create_table

from ..conftest import TEST_MODEL


@pytest.fixture
def aws_settings(moto_server, tmp_path, monkeypatch):
    """Settings of the aws deployment, against moto's server on loopback, with the buckets and table made."""
    # boto3's own credential chain reads these (moto accepts any).
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    settings = Settings(home=tmp_path / "home", feeds_dir=tmp_path / "feeds", deployment="aws",
                        aws_endpoint_url=moto_server.url, aws_region="us-east-1")
    s3 = moto_server.client("s3")
    for bucket in (settings.raw_bucket, settings.stage_bucket, settings.manifest_bucket):
        s3.create_bucket(Bucket=bucket)
    create_table(moto_server.client("dynamodb"), settings.status_table)
    return settings

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "audio"


# ---------------------------------------------------------------------------
# object store
# ---------------------------------------------------------------------------
@pytest.fixture(params=["local", "s3"])
def object_store(request, tmp_path):
    if request.param == "local":
        return LocalObjectStore(tmp_path / "bucket", "pod-insights-raw")
    return build_object_stores(request.getfixturevalue("aws_settings")).raw


def test_object_store_round_trips_bytes_json_and_files(object_store, tmp_path):
    object_store.put_bytes("f/g/audio/episode.mp3", b"ID3 audio", content_type="audio/mpeg")
    object_store.put_json("f/g/meta/meta.json", {"transcript_key": None, "title": "Zoë"})
    src = tmp_path / "upload.bin"
    src.write_bytes(b"x" * 70_000)
    object_store.put_file("f/g/audio/big.bin", src)
    assert object_store.get_bytes("f/g/audio/episode.mp3") == b"ID3 audio"
    assert object_store.get_json("f/g/meta/meta.json") == {"transcript_key": None, "title": "Zoë"}
    assert object_store.size("f/g/audio/big.bin") == 70_000
    assert object_store.exists("f/g/audio/big.bin") and not object_store.exists("f/g/audio/none.mp3")
    with object_store.local_copy("f/g/audio/big.bin") as path:
        assert Path(path).read_bytes() == b"x" * 70_000
    assert object_store.name == "pod-insights-raw"
    assert "f/g/audio/episode.mp3" in object_store.uri("f/g/audio/episode.mp3")


def test_object_store_lists_by_prefix_and_deletes(object_store):
    for key in ("a/1/meta/meta.json", "a/2/meta/meta.json", "b/1/meta/meta.json"):
        object_store.put_bytes(key, b"{}")
    assert sorted(object_store.list_keys("a/")) == ["a/1/meta/meta.json", "a/2/meta/meta.json"]
    assert len(list(object_store.list_keys())) == 3
    # In S3's order, after a key (the shared search index's log is read from where it was last read).
    assert list(object_store.list_keys("a/", start_after="a/1/meta/meta.json")) == ["a/2/meta/meta.json"]
    assert sorted(object_store.list_keys("", start_after="a/9")) == ["b/1/meta/meta.json"]
    object_store.delete("a/1/meta/meta.json")
    object_store.delete("a/1/meta/meta.json")  # deleting what is gone is no error
    assert sorted(object_store.list_keys("a/")) == ["a/2/meta/meta.json"]


def test_object_store_overwrite_replaces_whole_object(object_store):
    object_store.put_bytes("k/meta.json", b"old, and longer than the new one")
    object_store.put_bytes("k/meta.json", b"new")
    assert object_store.get_bytes("k/meta.json") == b"new"


def test_object_store_missing_objects_raise_object_not_found(object_store):
    for call in (lambda: object_store.get_bytes("no/such"), lambda: object_store.size("no/such"),
                 lambda: object_store.local_copy("no/such").__enter__()):
        with pytest.raises(ObjectNotFound):
            call()
    assert issubclass(ObjectNotFound, FileNotFoundError)  # callers may catch either


# ---------------------------------------------------------------------------
# checkpoint store
# ---------------------------------------------------------------------------
@pytest.fixture(params=["sqlite", "dynamodb"])
def checkpoints(request, tmp_path):
    if request.param == "sqlite":
        store = SqliteCheckpointStore(tmp_path / "checkpoints.sqlite")
    else:
        store = build_checkpoints(request.getfixturevalue("aws_settings"))
    yield store
    store.close()


def _episode(pk: str, **kw) -> EpisodeRecord:
    slug, guid = pk.split("/")
    return EpisodeRecord(partition_key=pk, feed_slug=slug, guid_key=guid, title=kw.pop("title", "t"),
                         enclosure_url="https://cdn.example/a.mp3", **kw)


def test_checkpoints_register_only_new_episodes_and_refresh_known_ones(checkpoints):
    assert checkpoints.register_episodes([_episode("f/a"), _episode("f/b")]) == ["f/a", "f/b"]
    checkpoints.mark_downloaded("f/a", bytes=10, sha256="ab")
    assert checkpoints.register_episodes([_episode("f/a", title="fixed typo"), _episode("f/c")]) == ["f/c"]
    a = checkpoints.require("f/a")
    assert (a.state, a.title, a.bytes, a.sha256) == (DOWNLOADED, "fixed typo", 10, "ab")  # progress kept
    assert checkpoints.get("f/none") is None
    with pytest.raises(KeyError, match="f/none"):
        checkpoints.require("f/none")


def test_checkpoints_a_record_never_erases_what_it_does_not_carry(checkpoints):
    """A manifest row (no show notes, persons, transcripts, chapters) once nulled what the feed had said."""
    said = {"transcripts_json": '[{"url": "https://cdn.example/a.vtt"}]', "persons_json": '[{"name": "Ann"}]',
            "chapters_url": "https://cdn.example/a.json", "description": "Ann talks.", "duration_hint_sec": 61.0}
    checkpoints.register_episodes([_episode("f/a", **said)])
    checkpoints.mark_downloaded("f/a", bytes=10, sha256="ab")
    checkpoints.register_episodes([EpisodeRecord(partition_key="f/a", feed_slug="f", guid_key="a",
                                                 title="from the manifest")])  # a row carries little
    a = checkpoints.require("f/a")
    assert {k: getattr(a, k) for k in said} == said
    assert (a.title, a.enclosure_url, a.state) == ("from the manifest", "https://cdn.example/a.mp3", DOWNLOADED)
    checkpoints.register_episodes([_episode("f/a", **{**said, "description": "Ann and Bo talk."})])
    assert checkpoints.require("f/a").description == "Ann and Bo talk."  # the feed's new notes win


def test_checkpoints_states_attempts_errors_and_counts(checkpoints):
    checkpoints.register_episodes([_episode(f"f/{g}") for g in "abcd"] + [_episode("g/a")])
    checkpoints.mark_attempt("f/a")
    checkpoints.mark_attempt("f/a")
    checkpoints.mark_downloaded("f/a", bytes=1, sha256="x")
    checkpoints.mark_failed("f/b", "download", "HTTP 404 " + "x" * 5000)
    checkpoints.mark_transcribed("f/c", cost_usd=0.25)
    checkpoints.update("f/c", quality_issue="no text")
    assert checkpoints.require("f/a").attempts == 2
    b = checkpoints.require("f/b")
    assert (b.state, b.failed_stage) == (FAILED, "download") and b.last_error.startswith("HTTP 404")
    assert len(b.last_error) <= 2000
    c = checkpoints.require("f/c")
    assert (c.state, c.cost_usd, c.quality_issue) == (TRANSCRIBED, 0.25, "no text") and c.transcribed_at
    assert checkpoints.counts() == {DISCOVERED: 2, DOWNLOADED: 1, TRANSCRIBED: 1, FAILED: 1}
    assert checkpoints.counts_by_feed()["g"] == {DISCOVERED: 1, DOWNLOADED: 0, TRANSCRIBED: 0, FAILED: 0}
    assert [r.partition_key for r in checkpoints.episodes(state=DISCOVERED)] == ["f/d", "g/a"]
    assert [r.partition_key for r in checkpoints.episodes(feed_slug="f", limit=2)] == ["f/a", "f/b"]
    with pytest.raises(ValueError, match="unknown"):
        checkpoints.update("f/a", no_such_field=1)


def test_checkpoints_stage_failures_never_erase_earlier_stages(checkpoints):
    from podinsight_dagster.store.checkpoints import DONE, PENDING
    checkpoints.register_episodes([_episode("f/a"), _episode("f/b")])
    checkpoints.mark_failed("f/b", "download", "HTTP 404", retryable=False)
    checkpoints.mark_downloaded("f/a", bytes=1, sha256="x")
    checkpoints.mark_stage("f/a", "transcribe", "running")
    checkpoints.mark_failed("f/a", "transcribe", "GPU fell over", retryable=True)
    a, b = checkpoints.require("f/a"), checkpoints.require("f/b")
    assert a.state == DOWNLOADED and b.state == FAILED  # the summary never goes backwards
    t = checkpoints.stage("f/a", "transcribe")
    assert (t.status, t.attempts, t.last_error, t.retryable) == (FAILED, 1, "GPU fell over", True)
    assert t.started_at and t.finished_at
    assert checkpoints.stage("f/a", "download").status == DONE
    assert checkpoints.stage("f/b", "download").retryable is False
    assert checkpoints.stage("f/b", "kpis").status == PENDING
    checkpoints.mark_stage("f/a", "transcribe", "running")
    checkpoints.mark_stage("f/a", "transcribe", "done", code_version="v1")
    t = checkpoints.stage("f/a", "transcribe")
    assert (t.status, t.attempts, t.last_error, t.code_version) == (DONE, 2, None, "v1")
    counts = checkpoints.stage_counts()
    assert counts["transcribe"] == {"pending": 1, "running": 0, "done": 1, "failed": 0}
    assert counts["download"] == {"pending": 0, "running": 0, "done": 1, "failed": 1}
    assert set(checkpoints.stages("transcribe")) == {"f/a"}
    checkpoints.mark_transcribed("f/a", cost_usd=0.1)
    checkpoints.mark_downloaded("f/a", bytes=1, sha256="x")  # a re-download never moves it back
    assert checkpoints.require("f/a").state == TRANSCRIBED


def test_checkpoints_claims_are_exclusive_leases_on_the_previous_stage(checkpoints):
    checkpoints.register_episodes([_episode("f/a"), _episode("f/b")])
    assert "discovered" in checkpoints.claim("f/b", "transcribe", "run-1", 60)  # not downloaded yet
    checkpoints.mark_downloaded("f/a", bytes=1, sha256="x")
    assert checkpoints.claim("f/a", "transcribe", "run-1", 60) is None
    assert "claimed by run-1" in checkpoints.claim("f/a", "transcribe", "run-2", 60)
    assert checkpoints.claim("f/a", "transcribe", "run-1", 60) is None  # the holder may take it again
    assert checkpoints.renew("f/a", "transcribe", "run-1", 0.2) and not checkpoints.renew("f/a", "transcribe", "x", 5)
    time.sleep(0.3)
    assert checkpoints.claim("f/a", "transcribe", "run-2", 60) is None  # an expired lease is free
    st = checkpoints.stage("f/a", "transcribe")
    assert (st.status, st.owner, st.attempts) == ("running", "run-2", 3)
    checkpoints.mark_stage("f/a", "transcribe", "done", code_version="v1")
    assert "already done" in checkpoints.claim("f/a", "transcribe", "run-3", 60, unless_done_version="v1")
    assert checkpoints.claim("f/a", "transcribe", "run-3", 60, unless_done_version="v2") is None


def test_checkpoints_claim_is_taken_by_exactly_one_of_many(checkpoints):
    checkpoints.register_episodes([_episode("f/a")])
    checkpoints.mark_downloaded("f/a", bytes=1, sha256="x")
    barrier, got = threading.Barrier(6), []

    def take(i):
        barrier.wait()
        if checkpoints.claim("f/a", "transcribe", f"owner-{i}", 60) is None:
            got.append(i)

    threads = [threading.Thread(target=take, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 1 and checkpoints.stage("f/a", "transcribe").owner == f"owner-{got[0]}"


def test_checkpoints_keep_feeds(checkpoints):
    checkpoints.upsert_feed(FeedRecord(slug="show", url="https://a/feed.xml", etag='"1"', episodes=3))
    checkpoints.upsert_feed(FeedRecord(slug="show", url="https://a/feed.xml", effective_url="https://b/feed.xml",
                                       etag='"2"', episodes=4, last_status="ok"))
    checkpoints.upsert_feed(FeedRecord(slug="other", url="https://c/feed.xml"))
    feed = checkpoints.get_feed("show")
    assert (feed.effective_url, feed.etag, feed.episodes, feed.last_status) == ("https://b/feed.xml", '"2"', 4, "ok")
    assert [f.slug for f in checkpoints.feeds()] == ["other", "show"] and checkpoints.get_feed("x") is None


def test_checkpoints_keep_paging_identity_and_alternate_downloads(checkpoints):
    checkpoints.upsert_feed(FeedRecord(slug="show", url="https://a/f.xml", resume_url="https://a/f.xml?page=5",
                                       podcast_guid="g-1", episodes=400, last_status="partial"))
    feed = checkpoints.get_feed("show")
    assert (feed.resume_url, feed.podcast_guid, feed.last_status) == ("https://a/f.xml?page=5", "g-1", "partial")
    checkpoints.upsert_feed(FeedRecord(slug="show", url="https://a/f.xml", podcast_guid="g-1", episodes=1200))
    assert checkpoints.get_feed("show").resume_url is None  # the walk finished
    checkpoints.register_episodes([_episode("f/a", download_url="https://cdn.example/low.mp3",
                                            download_integrity="sha256-AAAA")])
    assert checkpoints.require("f/a").download_url == "https://cdn.example/low.mp3"
    checkpoints.register_episodes([_episode("f/a")])  # a manifest row carries no alternate: it stays
    assert checkpoints.require("f/a").download_url == "https://cdn.example/low.mp3"
    checkpoints.register_episodes([_episode("f/a")], from_feed=True)  # the publisher dropped the alternate: so do we
    assert (checkpoints.require("f/a").download_url, checkpoints.require("f/a").download_integrity) == (None, None)


def test_checkpoints_are_safe_across_threads(checkpoints):
    checkpoints.register_episodes([_episode(f"f/e{i}") for i in range(40)])
    errors = []

    def work(i):
        try:
            checkpoints.mark_attempt(f"f/e{i}")
            checkpoints.mark_downloaded(f"f/e{i}", bytes=i, sha256=str(i))
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and checkpoints.counts()[DOWNLOADED] == 40


# ---------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------
@pytest.fixture(params=["sqlite", "cloudwatch"])
def metrics(request, tmp_path):
    if request.param == "sqlite":
        return SqliteMetrics(tmp_path / "metrics.sqlite")
    return build_metrics(request.getfixturevalue("aws_settings"))


def test_metrics_latest_is_the_newest_value_per_dimension_set(metrics):
    host = lambda h: (("hostname", h),)  # noqa: E731
    metrics.put([Metric("PerHost429", 5.0, "Percent", host("a.example")),
                 Metric("PerHost429", 0.5, "Percent", host("b.example")),
                 Metric("GBTransferred", 1.5, "Gigabytes", (("phase", "fetch"),))])
    time.sleep(1.1)  # CloudWatch keeps one value per period (1 s at high resolution)
    metrics.put([Metric("PerHost429", 0.0, "Percent", host("a.example"))])
    latest = metrics.latest("PerHost429")
    assert {json.loads(k)["hostname"]: v for k, v in latest.items()} == {"a.example": 0.0, "b.example": 0.5}
    assert list(metrics.latest("GBTransferred").values()) == [1.5]
    assert metrics.latest("NoSuchMetric") == {}


# ---------------------------------------------------------------------------
# spend ledger and freeze
# ---------------------------------------------------------------------------
@pytest.fixture(params=["sqlite", "dynamodb"])
def ledger(request, tmp_path):
    if request.param == "sqlite":
        return SqliteSpendLedger(tmp_path / "ledger.sqlite")
    return build_budget(request.getfixturevalue("aws_settings")).ledger


def test_ledger_only_grows_and_sums_by_time(ledger):
    now = time.time()
    ledger.record(SpendEntry("f/a", 0.10, compute_sec=1200, device="cuda", model="base", ts=now - 86_400 * 2))
    ledger.record(SpendEntry("f/a", 0.25, compute_sec=3000, device="cuda", model="base", run_id="r1", ts=now))
    ledger.record(SpendEntry("f/a", 0.25, compute_sec=3000, device="cuda", model="base", run_id="r2", ts=now))
    assert ledger.spent_since(now - 60) == pytest.approx(0.50)  # a re-run adds a line, never overwrites one
    assert ledger.spent_since(0) == pytest.approx(0.60)
    assert [e.run_id for e in ledger.entries(now - 60)] == ["r1", "r2"]
    assert ledger.entries()[0] == SpendEntry("f/a", 0.10, 1200, "cuda", "base", None, now - 86_400 * 2)


def test_ledger_reservations_admit_exactly_one_of_two_that_cross_the_ceiling(ledger):
    from podinsight_dagster.costs.budget import Budget, BudgetExceeded
    budget = Budget(ledger, ceiling_usd=10.0)
    ledger.record(SpendEntry("f/a", 2.0, compute_sec=100, model="base", audio_sec=1000))
    barrier, admitted, refused = threading.Barrier(2), [], []

    def launch(owner):
        barrier.wait()
        try:
            admitted.append(budget.reserve(5.0, owner, ttl_s=60))
        except BudgetExceeded as exc:
            refused.append(str(exc))

    threads = [threading.Thread(target=launch, args=(f"run-{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(admitted) == 1 and len(refused) == 1 and "reserved" in refused[0]
    assert ledger.reserved() == pytest.approx(5.0)
    with pytest.raises(BudgetExceeded):
        budget.check(3.5)  # the advisory check counts live reservations too
    budget.settle(admitted[0])
    assert ledger.reserved() == 0.0
    assert ledger.release(admitted[0].id) is False  # settled once
    short = budget.reserve(7.0, "run-3", ttl_s=0.2)  # a run that dies: its reservation expires
    time.sleep(0.3)
    assert ledger.reserved() == 0.0 and budget.reserve(7.0, "run-4", ttl_s=60).usd == 7.0
    assert short.usd == 7.0
    # The model's measured cost per audio second drives the projection: $2 for 1000 s -> $0.002/s.
    assert budget.projected_cost(500, model="base") == pytest.approx(1.0)
    assert ledger.entries()[0].audio_sec == 1000


def test_ledger_keeps_the_freeze(ledger):
    assert ledger.freeze_state() == Freeze(False)
    ledger.set_freeze("GPUCostToday $40.10 reached the $40.00 ceiling")
    state = ledger.freeze_state()
    assert state.active and "ceiling" in state.reason and state.since <= time.time()
    ledger.lift_freeze()
    assert not ledger.freeze_state().active


# ---------------------------------------------------------------------------
# compute freezer
# ---------------------------------------------------------------------------
@pytest.fixture(params=["local"])
def freezer(request, tmp_path):
    if request.param == "local":
        return LocalComputeFreezer(tmp_path / "capacity.sqlite")
    raise AssertionError(request.param)


def test_freezer_freezes_and_unfreezes_idempotently(freezer):
    assert not freezer.is_frozen()
    freezer.freeze()
    freezer.freeze()
    assert freezer.is_frozen()
    freezer.unfreeze()
    freezer.unfreeze()
    assert not freezer.is_frozen()


# ---------------------------------------------------------------------------
# per-host limiter
# ---------------------------------------------------------------------------
@pytest.fixture(params=["local-threads", "local-lock-folder", "dynamodb-leases"])
def make_limiter(request, tmp_path):
    def make(limits, default=10):
        if request.param == "dynamodb-leases":
            settings = request.getfixturevalue("aws_settings").replace(default_host_limit=default)
            return build_limiter(settings, limits)
        lock_dir = tmp_path / "locks" if request.param == "local-lock-folder" else None
        return LocalHostLimiter(limits, default, lock_dir)
    return make


def test_limiter_caps_by_registrable_domain_with_run_book_defaults(make_limiter):
    limiter = make_limiter({"example.org": 2}, default=6)
    assert limiter.limit_for("traffic.megaphone.fm") == 5       # run-book HOST_LIMIT
    assert limiter.limit_for("LIBSYN.com") == 3
    assert limiter.limit_for("a.cdn.example.org") == 2          # the catalog's override, by domain
    assert limiter.limit_for("elsewhere.example") == 6          # everyone else


def test_limiter_never_lets_more_than_the_cap_in_at_once(make_limiter):
    limiter = make_limiter({"megaphone.fm": 2})
    inside, peak, lock = 0, 0, threading.Lock()

    def hold(host):
        nonlocal inside, peak
        with limiter.slot(host):
            with lock:
                inside += 1
                peak = max(peak, inside)
            time.sleep(0.02)
            with lock:
                inside -= 1

    threads = [threading.Thread(target=hold, args=(h,)) for h in ["a.megaphone.fm", "b.megaphone.fm"] * 6]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak == 2


# ---------------------------------------------------------------------------
# transcriber (speech to text in this process: what a run's ASR pass asks, here or in the Pipes worker)
# ---------------------------------------------------------------------------
@pytest.fixture(params=["in-process"])
def transcriber(request, model_cache):
    options = TranscribeOptions(model=TEST_MODEL, model_cache=str(model_cache))
    if request.param == "in-process":
        return InProcessTranscriber(options)
    raise AssertionError(request.param)


def test_transcriber_yields_one_result_per_source_and_isolates_bad_audio(transcriber, tmp_path):
    corrupt = tmp_path / "corrupt.mp3"
    corrupt.write_bytes(b"this is not audio" * 100)
    sources = [FIXTURES / "clip-14s.mp3", corrupt, FIXTURES / "clip-18s.mp3"]
    results = dict(transcriber.transcribe(sources))
    assert sorted(results) == [0, 1, 2]
    assert isinstance(results[1], TranscriptionError)
    for i in (0, 2):
        t = results[i]
        assert isinstance(t, Transcript) and t.text.strip() and t.segments
        assert 0 < t.duration and all(0 <= s.start <= s.end <= t.duration + 1 for s in t.segments)
    assert transcriber.options.model == TEST_MODEL
    assert list(transcriber.transcribe([])) == []


# ---------------------------------------------------------------------------
# search index (archive.index.ArchiveIndex): one SQLite file locally; on aws, entry objects in the stage
# bucket read through each machine's replica. "machine" names a data root (on aws, another replica).
# ---------------------------------------------------------------------------
@pytest.fixture(params=["local", "aws"])
def open_index(request, tmp_path):
    from dataclasses import replace

    from podinsight_dagster.services import build_transcript_index

    if request.param == "local":
        base = Settings(home=tmp_path / "home", feeds_dir=tmp_path / "feeds", deployment="local")
    else:
        base = request.getfixturevalue("aws_settings")
    opened = []

    def open_(machine: str = "a", create: bool = True, closed_by_caller: bool = False):
        settings = base if request.param == "local" else replace(base, home=tmp_path / f"machine-{machine}")
        index = build_transcript_index(settings, create=create)
        if not closed_by_caller:
            opened.append(index)
        return index

    yield open_
    for index in opened:
        index.close()


def _topic_doc(topic: str, text: list[str] | None = None, feed: str = "show"):
    from podinsight_dagster.archive.index import EpisodeDoc
    from tests.chapters.synthetic import TOPICS

    lines = text or TOPICS[topic]
    segs = [{"text": t, "start_sec": 10.0 * i, "end_sec": 10.0 * i + 9} for i, t in enumerate(lines)]
    return EpisodeDoc(partition_key=f"{feed}/{topic}", feed_slug=feed, guid_key=topic, title=topic.title(),
                      published="2026-01-01T00:00:00Z", enclosure_url=f"https://cdn.example/{topic}.mp3",
                      audio_uri=None, duration_sec=80.0, segments=segs)


def test_index_written_on_one_machine_is_searched_on_another(open_index):
    from podinsight_dagster.archive.index import SearchError

    with pytest.raises(SearchError, match="no search index yet"):
        open_index("b", create=False)
    writer = open_index("a")
    counts = writer.index([_topic_doc("mortgages"), _topic_doc("sourdough", feed="food")])
    assert set(counts) == {"show/mortgages", "food/sourdough"} and all(n >= 1 for n in counts.values())
    assert writer.episode_count() == 2
    reader = open_index("b", create=False)
    [hit] = reader.search("starter flour", log=False)
    assert (hit.partition_key, hit.feed_slug, hit.title) == ("food/sourdough", "food", "Sourdough")
    assert hit.link.startswith("https://cdn.example/sourdough.mp3#t=")
    meaning = reader.search_meaning("How do I borrow money to buy a house?", limit=3, log=False)
    assert meaning[0].partition_key == "show/mortgages" and meaning[0].similarity > 0.25
    assert reader.stats()["episodes"] == 2 and reader.feeds() == ["food", "show"]
    reader.search("flour", log=True)
    assert reader.top_searches(1) == [("flour", 1)] and sum(reader.hits_by_month("flour").values()) == 1


def test_index_reindexed_and_removed_episodes_are_seen_by_every_reader(open_index):
    writer = open_index("a")
    writer.index([_topic_doc("mortgages"), _topic_doc("marathon")])
    assert [h.partition_key for h in open_index("b", create=False).search("marathon", log=False)]
    writer.index([_topic_doc("marathon", text=["Now about chess openings instead."])])
    reader = open_index("c", create=False)
    assert reader.search("marathon", log=False) == []
    assert [h.partition_key for h in reader.search("chess openings", log=False)] == ["show/marathon"]
    assert writer.remove("show/marathon") and not writer.remove("show/never")
    again = open_index("c", create=False)  # the same machine later: its replica catches up
    assert again.search("chess", log=False) == [] and again.stats()["episodes"] == 1


def test_index_concurrent_writers_lose_nothing(open_index):
    """Writers on several machines at once (threads here; tests/archive/test_shared_index.py: processes)."""
    import numpy as np

    rng = np.random.default_rng(3)

    def write(machine: str, start: int) -> None:
        index = open_index(machine, closed_by_caller=True)  # SQLite: closed in the thread that opened it
        try:
            for n in range(start, start + 6):
                doc = _topic_doc(f"ep{n}", text=[f"episode {n} talks about topic{n}"])
                vec = rng.standard_normal((1, 384)).astype(np.float32)
                index.index([doc], embeddings={doc.partition_key: vec / np.linalg.norm(vec)})
        finally:
            index.close()

    threads = [threading.Thread(target=write, args=(m, s)) for m, s in (("a", 0), ("b", 100), ("c", 200))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    reader = open_index("d", create=False)
    assert reader.stats()["episodes"] == 18
    assert all(len(reader.search(f"topic{n}", log=False)) == 1 for n in (0, 5, 100, 105, 200, 205))
