"""HttpClient.download against every fault the loopback CDN can inject.

The invariant checked each time: the outcome is either a complete file whose sha256
equals what the server sent, or a FetchError with a clear reason and no file left
at the destination path.
"""

from __future__ import annotations

import hashlib
import socket
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from tests.support.cdn import Fault
from podinsight_dagster.fetch.http import (
    ContentRejectedError,
    FetchError,
    HttpConfig,
    PermanentFetchError,
    TransientFetchError,
)

from .test_http_support import AUDIO, file_sha256, make_client, sha256, serve_audio


@pytest.fixture
def cdn():
    yield from serve_audio()

PATH = "/ep.mp3"


def _fails_cleanly(client, url, dest, kind=FetchError):
    with pytest.raises(kind) as err:
        client.download(url, dest)
    assert not dest.exists(), "a failed download must not leave a file behind"
    return str(err.value)


def _ok(result, dest, body=AUDIO):
    assert dest.exists() and dest.stat().st_size == len(body) == result.bytes
    assert result.sha256 == file_sha256(dest) == sha256(body)
    assert result.audio_format == "mp3"


# -- the plain case -------------------------------------------------------------------------

def test_plain_download_streams_whole_file_with_user_agent(cdn, tmp_path):
    client, sleeps = make_client()
    dest = tmp_path / "ep.mp3"
    result = client.download(cdn.url(PATH), dest)
    _ok(result, dest)
    assert (result.attempts, result.resumed, result.restarts, sleeps) == (1, 0, 0, [])
    assert result.etag and result.content_type == "audio/mpeg"
    ua = cdn.requests[0].headers["User-Agent"]
    assert ua.startswith("PodInsight/") and "(+http" in ua
    assert cdn.requests[0].headers["Accept-Encoding"] == "identity"


def test_defaults_caps():
    cfg = HttpConfig()
    assert cfg.max_audio_bytes == 1 << 30 and cfg.max_feed_bytes == 20 << 20


# -- latency, bandwidth, timeouts ----------------------------------------------------------

def test_latency_is_tolerated(cdn, tmp_path):
    cdn.set_fault(PATH, Fault(latency_s=0.3))
    client, _ = make_client(read_timeout=2.0)
    t0 = time.monotonic()
    _ok(client.download(cdn.url(PATH), tmp_path / "a.mp3"), tmp_path / "a.mp3")
    assert time.monotonic() - t0 >= 0.3


def test_latency_beyond_read_timeout_is_a_clear_timeout(cdn, tmp_path):
    cdn.set_fault(PATH, Fault(latency_s=2.0))
    client, sleeps = make_client(read_timeout=0.3, max_attempts=2)
    msg = _fails_cleanly(client, cdn.url(PATH), tmp_path / "a.mp3", TransientFetchError)
    assert "read timeout" in msg and "gave up after 2 attempts" in msg
    assert cdn.request_count(PATH) == 2 and len(sleeps) == 1


def test_connect_timeout(tmp_path):
    # A listener whose accept queue is full: the kernel drops further SYNs, so connect() hangs.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    held = []
    try:
        for _ in range(8):
            probe = socket.socket()
            probe.settimeout(0.2)
            try:
                probe.connect(("127.0.0.1", port))
                held.append(probe)
            except OSError:
                probe.close()
                break
        else:
            pytest.skip("this kernel accepts connections beyond the backlog")
        client, _ = make_client(connect_timeout=0.3, max_attempts=2)
        t0 = time.monotonic()
        msg = _fails_cleanly(client, f"http://127.0.0.1:{port}/ep.mp3", tmp_path / "a.mp3", TransientFetchError)
        assert "connect timeout" in msg and time.monotonic() - t0 < 3
    finally:
        for sock in held:
            sock.close()
        listener.close()


def test_bandwidth_cap_is_slow_but_not_stalled(cdn, tmp_path):
    cdn.set_fault(PATH, Fault(bandwidth_bps=600_000))
    # 10 KB/s floor over 0.1 s windows: a throttled but moving transfer must never trip it.
    client, _ = make_client(low_speed_window_s=0.1, low_speed_bytes_per_s=10_000)
    t0 = time.monotonic()
    result = client.download(cdn.url(PATH), tmp_path / "a.mp3")
    _ok(result, tmp_path / "a.mp3")
    assert time.monotonic() - t0 >= 0.4 and result.attempts == 1


def test_one_byte_per_second_is_aborted_by_the_low_speed_check(cdn, tmp_path):
    cdn.set_fault(PATH, Fault(trickle=True))
    client, _ = make_client(low_speed_window_s=0.5, max_attempts=1, read_timeout=5.0)
    t0 = time.monotonic()
    msg = _fails_cleanly(client, cdn.url(PATH), tmp_path / "a.mp3", TransientFetchError)
    assert "stalled" in msg and "low-speed" in msg
    assert time.monotonic() - t0 < 3  # neither the read timeout nor the 3-day trickle


def test_trickle_then_recovery_resumes(cdn, tmp_path):
    cdn.set_fault(PATH, Fault(trickle=True, times=1))
    client, _ = make_client(low_speed_window_s=0.5, max_attempts=2)
    result = client.download(cdn.url(PATH), tmp_path / "a.mp3")
    _ok(result, tmp_path / "a.mp3")
    assert result.resumed == 1 and cdn.requests[1].headers["Range"].startswith("bytes=")


# -- rate limiting and server errors -------------------------------------------------------

def test_429_retry_after_seconds_is_honoured_and_counted(cdn, tmp_path):
    cdn.set_fault(PATH, Fault(status=429, retry_after="7", times=2))
    client, sleeps = make_client()
    result = client.download(cdn.url(PATH), tmp_path / "a.mp3")
    _ok(result, tmp_path / "a.mp3")
    assert sleeps == [7.0, 7.0] and result.attempts == 3 and cdn.request_count(PATH) == 3
    stats = client.stats.snapshot()["127.0.0.1"]
    assert stats.status_429 == 2 and stats.requests == 3


def test_429_retry_after_http_date(cdn, tmp_path):
    when = datetime.now(timezone.utc) + timedelta(seconds=40)
    cdn.set_fault(PATH, Fault(status=429, retry_after=format_datetime(when, usegmt=True), times=1))
    client, sleeps = make_client()
    _ok(client.download(cdn.url(PATH), tmp_path / "a.mp3"), tmp_path / "a.mp3")
    assert len(sleeps) == 1 and 37 <= sleeps[0] <= 40


def test_retry_after_is_capped(cdn, tmp_path):
    cdn.set_fault(PATH, Fault(status=503, retry_after="86400", times=1))
    client, sleeps = make_client(retry_after_cap=60)
    _ok(client.download(cdn.url(PATH), tmp_path / "a.mp3"), tmp_path / "a.mp3")
    assert sleeps == [60]


def test_503_without_retry_after_backs_off_exponentially_with_jitter(cdn, tmp_path):
    cdn.set_fault(PATH, Fault(status=503, times=3))
    client, sleeps = make_client(backoff_base=1.0, backoff_max=30.0)
    _ok(client.download(cdn.url(PATH), tmp_path / "a.mp3"), tmp_path / "a.mp3")
    assert len(sleeps) == 3
    assert all(0 <= s <= 2 ** i for i, s in enumerate(sleeps))  # full jitter under base * 2^(n-1)


def test_persistent_500_gives_up_after_max_attempts(cdn, tmp_path):
    cdn.set_fault(PATH, Fault(status=500))
    client, sleeps = make_client(max_attempts=3)
    msg = _fails_cleanly(client, cdn.url(PATH), tmp_path / "a.mp3", TransientFetchError)
    assert "HTTP 500" in msg and "gave up after 3 attempts" in msg
    assert cdn.request_count(PATH) == 3 and len(sleeps) == 2


@pytest.mark.parametrize("status", [408, 502, 504])
def test_other_retryable_statuses(cdn, tmp_path, status):
    cdn.set_fault(PATH, Fault(status=status, times=1))
    client, sleeps = make_client()
    _ok(client.download(cdn.url(PATH), tmp_path / "a.mp3"), tmp_path / "a.mp3")
    assert len(sleeps) == 1


@pytest.mark.parametrize("status", [404, 403, 410, 400])
def test_other_4xx_fail_at_once(cdn, tmp_path, status):
    cdn.set_fault(PATH, Fault(status=status))
    client, sleeps = make_client()
    msg = _fails_cleanly(client, cdn.url(PATH), tmp_path / "a.mp3", PermanentFetchError)
    assert f"HTTP {status}" in msg
    assert cdn.request_count(PATH) == 1 and sleeps == []


def test_404_for_a_missing_file_is_one_request(cdn, tmp_path):
    client, sleeps = make_client()
    msg = _fails_cleanly(client, cdn.url("/missing.mp3"), tmp_path / "a.mp3", PermanentFetchError)
    assert "HTTP 404" in msg and cdn.request_count() == 1 and sleeps == []


# -- cut bodies and resume -----------------------------------------------------------------

def test_reset_mid_body_resumes_with_range_and_if_range(cdn, tmp_path):
    cdn.set_fault(PATH, Fault(reset_after_bytes=120_000, times=1))
    client, _ = make_client()
    result = client.download(cdn.url(PATH), tmp_path / "a.mp3")
    _ok(result, tmp_path / "a.mp3")
    first, second = cdn.requests
    assert "Range" not in first.headers
    start = int(second.headers["Range"].removeprefix("bytes=").rstrip("-"))
    assert 0 < start <= 120_000  # whatever reached us before the RST
    assert second.headers["If-Range"] == result.etag and second.status == 206
    assert second.bytes_sent == len(AUDIO) - start
    assert (result.resumed, result.restarts) == (1, 0)


def test_truncated_body_resumes(cdn, tmp_path):
    cdn.set_fault(PATH, Fault(truncate_after_bytes=100_000, times=1))
    client, _ = make_client()
    result = client.download(cdn.url(PATH), tmp_path / "a.mp3")
    _ok(result, tmp_path / "a.mp3")
    assert cdn.requests[1].headers["Range"] == "bytes=100000-" and result.resumed == 1


def test_always_truncated_gives_up_cleanly(cdn, tmp_path):
    cdn.set_fault(PATH, Fault(truncate_after_bytes=1000))
    client, _ = make_client(max_attempts=3)
    msg = _fails_cleanly(client, cdn.url(PATH), tmp_path / "a.mp3", TransientFetchError)
    assert "gave up after 3 attempts" in msg and "mid-body" in msg


def test_range_ignored_restarts_from_zero(cdn, tmp_path):
    cdn.set_fault(PATH, Fault(reset_after_bytes=100_000, times=1))
    # Between the attempts the CDN starts ignoring Range (answers 200 with the whole file).
    client, _ = make_client(sleep=lambda _s: cdn.set_fault(PATH, Fault(ignore_range=True)))
    result = client.download(cdn.url(PATH), tmp_path / "a.mp3")
    _ok(result, tmp_path / "a.mp3")
    second = cdn.requests[1]
    assert "Range" in second.headers and second.status == 200 and second.bytes_sent == len(AUDIO)
    assert (result.resumed, result.restarts) == (0, 1)


def test_changed_etag_restarts_never_splices(cdn, tmp_path):
    # The CDN's change_etag fault shifts every byte by the revision number. This body sniffs as
    # MP3 (ID3) and, shifted by one, as M4A ("esxo" + 1 = "ftyp" at offset 4): both are audio.
    body = b"ID3\x04esxo" + AUDIO[8:]
    changed = body.translate(bytes((i + 1) & 0xFF for i in range(256)))  # the CDN's revision 1
    cdn.add_file(PATH, body)
    cdn.set_fault(PATH, Fault(reset_after_bytes=100_000, times=1))
    # Between the attempts the file changes (same length, new bytes, new ETag and Last-Modified).
    client, _ = make_client(sleep=lambda _s: cdn.set_fault(PATH, Fault(change_etag=True)))
    dest = tmp_path / "a.mp3"
    result = client.download(cdn.url(PATH), dest)
    _first, second = cdn.requests
    assert second.headers["If-Range"] == '"' + hashlib.sha1(body).hexdigest() + '"'
    assert second.status == 200  # If-Range no longer matches: the whole new file
    assert result.restarts == 1 and result.bytes == len(changed) and result.audio_format == "m4a"
    assert result.sha256 == file_sha256(dest) == sha256(changed) != sha256(body)


def test_wrong_content_length_too_long_is_a_cut_then_resumed(cdn, tmp_path):
    cdn.set_fault(PATH, Fault(wrong_content_length=len(AUDIO) + 5000, times=1))
    client, _ = make_client()
    result = client.download(cdn.url(PATH), tmp_path / "a.mp3")
    _ok(result, tmp_path / "a.mp3")
    # The promised extra bytes never came; asking for them from where we stopped gets 416
    # (there is nothing after byte len(AUDIO)), so the client starts over rather than guess.
    assert cdn.requests[1].headers["Range"] == f"bytes={len(AUDIO)}-"
    assert [r.status for r in cdn.requests] == [200, 416, 200] and result.restarts == 1


def test_wrong_content_length_always_too_long_fails_cleanly(cdn, tmp_path):
    cdn.set_fault(PATH, Fault(wrong_content_length=len(AUDIO) + 5000))
    client, _ = make_client(max_attempts=2)
    msg = _fails_cleanly(client, cdn.url(PATH), tmp_path / "a.mp3", TransientFetchError)
    assert "gave up after 2 attempts" in msg


def test_wrong_content_length_too_short_keeps_exactly_the_declared_bytes(cdn, tmp_path):
    # HTTP framing ends the body at Content-Length; the excess is indistinguishable from the
    # next response on the wire (curl and wget keep the declared bytes too). The file is
    # whole in the only sense HTTP defines, and its hash is the hash of those bytes.
    declared = len(AUDIO) - 5000
    cdn.set_fault(PATH, Fault(wrong_content_length=declared))
    client, _ = make_client()
    result = client.download(cdn.url(PATH), tmp_path / "a.mp3")
    _ok(result, tmp_path / "a.mp3", AUDIO[:declared])


# -- not audio -------------------------------------------------------------------------------

def test_html_page_with_200_is_rejected_with_a_clear_reason(cdn, tmp_path):
    cdn.set_fault(PATH, Fault(html_200=True))
    client, sleeps = make_client()
    msg = _fails_cleanly(client, cdn.url(PATH), tmp_path / "a.mp3", ContentRejectedError)
    assert "not audio" in msg and "HTML page" in msg
    assert cdn.request_count(PATH) == 1 and sleeps == []


def test_empty_body_is_rejected(cdn, tmp_path):
    cdn.set_fault(PATH, Fault(empty_body=True))
    client, sleeps = make_client()
    msg = _fails_cleanly(client, cdn.url(PATH), tmp_path / "a.mp3", ContentRejectedError)
    assert "empty body" in msg and cdn.request_count(PATH) == 1 and sleeps == []


def test_json_body_is_rejected(cdn, tmp_path):
    cdn.add_file("/ep.json", b'{"error": "nope", "padding": "xxxxxxxxxxxxxxxxxxxx"}', content_type="audio/mpeg")
    client, _ = make_client()
    msg = _fails_cleanly(client, cdn.url("/ep.json"), tmp_path / "a.mp3", ContentRejectedError)
    assert "JSON" in msg


def test_size_cap_refuses_before_reading(cdn, tmp_path):
    client, _ = make_client(max_audio_bytes=100_000)
    msg = _fails_cleanly(client, cdn.url(PATH), tmp_path / "a.mp3", ContentRejectedError)
    assert "over the 100000-byte cap" in msg
    assert client.stats.snapshot()["127.0.0.1"].bytes == 0  # refused on the header: no body read


def test_size_cap_per_call(cdn, tmp_path):
    client, _ = make_client()
    with pytest.raises(ContentRejectedError):
        client.download(cdn.url(PATH), tmp_path / "a.mp3", max_bytes=1000)
    assert not (tmp_path / "a.mp3").exists()


def test_existing_destination_is_overwritten_not_appended(cdn, tmp_path):
    dest = tmp_path / "a.mp3"
    dest.write_bytes(b"stale bytes from an earlier run")
    client, _ = make_client()
    _ok(client.download(cdn.url(PATH), dest), dest)


# -- redirects ----------------------------------------------------------------------------------

def test_redirect_chain_is_followed(cdn, tmp_path):
    cdn.set_fault("/a", Fault(redirect_to="/b", redirect_status=301))
    cdn.set_fault("/b", Fault(redirect_to="{base_url}/c", redirect_status=302))
    cdn.set_fault("/c", Fault(redirect_to=PATH, redirect_status=307))
    client, _ = make_client()
    result = client.download(cdn.url("/a"), tmp_path / "a.mp3")
    _ok(result, tmp_path / "a.mp3")
    assert result.final_url == cdn.url(PATH)
    assert [r.path for r in cdn.requests] == ["/a", "/b", "/c", PATH]


def test_redirect_loop_is_a_clear_error(cdn, tmp_path):
    cdn.set_fault("/x", Fault(redirect_to="/y"))
    cdn.set_fault("/y", Fault(redirect_to="/x"))
    client, sleeps = make_client()
    msg = _fails_cleanly(client, cdn.url("/x"), tmp_path / "a.mp3", PermanentFetchError)
    assert "redirect loop" in msg and cdn.request_count() == 2 and sleeps == []


def test_redirect_limit(cdn, tmp_path):
    for i in range(6):
        cdn.set_fault(f"/hop{i}", Fault(redirect_to=f"/hop{i + 1}"))
    client, _ = make_client(max_redirects=4)
    msg = _fails_cleanly(client, cdn.url("/hop0"), tmp_path / "a.mp3", PermanentFetchError)
    assert "too many redirects" in msg and cdn.request_count() == 5


def test_redirect_to_another_scheme_is_refused(cdn, tmp_path):
    cdn.set_fault("/r", Fault(redirect_to="file:///etc/passwd"))
    client, _ = make_client()
    msg = _fails_cleanly(client, cdn.url("/r"), tmp_path / "a.mp3", PermanentFetchError)
    assert "unsupported URL scheme 'file'" in msg
