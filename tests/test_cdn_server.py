"""Tests for the loopback podcast CDN used by the demo and the downloader tests.

The server is only useful if its faults are faithful, so most assertions look
at what actually crosses the socket: some with ``requests`` (what the
downloader sees), some with a raw socket where ``requests`` would hide the
detail (exact byte counts, RST versus FIN, lying Content-Length).
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path

import pytest
import requests
import urllib3

REPO_ROOT = Path(__file__).resolve().parents[1]
# pytest puts tests/ (not the repository root) on sys.path when there is no
# installed package or pytest config saying otherwise.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.support.cdn import Fault, PodcastCDN, guess_content_type  # noqa: E402

TIMEOUT = 5  # client-side timeout for every request: a hang must fail, not stall
AUDIO = bytes(range(256)) * 400  # 102400 bytes, every offset distinguishable


@pytest.fixture
def cdn():
    server = PodcastCDN(name="test").start()
    try:
        yield server
    finally:
        server.stop()


def _port(cdn: PodcastCDN) -> int:
    return int(cdn.base_url.rsplit(":", 1)[1])


class RawResponse:
    def __init__(self, status: int, headers: dict[str, str], body: bytes, ending: str) -> None:
        self.status, self.headers, self.body, self.ending = status, headers, body, ending


def raw_get(cdn: PodcastCDN, path: str, headers: dict[str, str] | None = None) -> RawResponse:
    """One request on a fresh socket, reading until the server ends the connection.

    ``ending`` is "eof" for a clean close (FIN) and "reset" for an RST.  The
    request asks for ``Connection: close`` so that a well-behaved response
    also ends with EOF rather than an idle keep-alive.
    """
    lines = [f"GET {path} HTTP/1.1", f"Host: {cdn.host}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    with socket.create_connection((cdn.host, _port(cdn)), timeout=TIMEOUT) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data, ending = b"", "eof"
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            ending = "reset"
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = dict(line.split(": ", 1) for line in header_lines)
    return RawResponse(int(status_line.split()[1]), parsed, body, ending)


def _cdn_threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(name + "-") and t.is_alive()]


# -- basic serving -----------------------------------------------------------------


def test_get_head_and_404(cdn):
    cdn.add_file("/audio/ep1.mp3", AUDIO)

    r = requests.get(cdn.url("/audio/ep1.mp3"), timeout=TIMEOUT)
    assert r.status_code == 200
    assert r.content == AUDIO
    assert r.headers["Content-Type"] == "audio/mpeg"
    assert r.headers["Content-Length"] == str(len(AUDIO))
    assert r.headers["Accept-Ranges"] == "bytes"
    assert r.headers["ETag"] == '"' + hashlib.sha1(AUDIO).hexdigest() + '"'
    assert "Last-Modified" in r.headers

    h = requests.head(cdn.url("/audio/ep1.mp3"), timeout=TIMEOUT)
    assert h.status_code == 200
    assert h.content == b""
    assert h.headers["Content-Length"] == str(len(AUDIO))
    assert h.headers["ETag"] == r.headers["ETag"]

    assert requests.get(cdn.url("/nope.mp3"), timeout=TIMEOUT).status_code == 404

    assert cdn.request_count() == 3
    assert cdn.request_count("/audio/ep1.mp3") == 2
    records = cdn.requests
    assert [(rec.method, rec.status) for rec in records] == [("GET", 200), ("HEAD", 200), ("GET", 404)]
    assert records[0].bytes_sent == len(AUDIO) and records[1].bytes_sent == 0
    assert all(rec.finished is not None and rec.finished >= rec.started for rec in records)
    assert records[0].headers.get("User-Agent", "").startswith("python-requests")


def test_paths_are_percent_decoded_and_query_ignored(cdn):
    cdn.add_file("/my show/ep 1.mp3", b"abc")
    r = requests.get(cdn.base_url + "/my%20show/ep%201.mp3?utm=feed", timeout=TIMEOUT)
    assert r.content == b"abc"
    assert cdn.request_count("/my show/ep 1.mp3") == 1


def test_base_url_placeholder_is_substituted_in_text_only(cdn):
    cdn.add_file("/feed.xml", b"<rss><enclosure url='{base_url}/ep1.mp3'/></rss>")
    cdn.add_file("/ep1.srt", b"1\n00:00:00,000 --> 00:00:01,000\n{base_url}\n")
    cdn.add_file("/blob.mp3", b"ID3{base_url}")  # binary: must be left alone

    r = requests.get(cdn.url("/feed.xml"), timeout=TIMEOUT)
    expected = f"<rss><enclosure url='{cdn.base_url}/ep1.mp3'/></rss>".encode()
    assert r.content == expected
    assert r.headers["Content-Type"] == "application/rss+xml"
    assert r.headers["Content-Length"] == str(len(expected))
    assert r.headers["ETag"] == '"' + hashlib.sha1(expected).hexdigest() + '"'

    assert cdn.base_url.encode() in requests.get(cdn.url("/ep1.srt"), timeout=TIMEOUT).content
    assert requests.get(cdn.url("/blob.mp3"), timeout=TIMEOUT).content == b"ID3{base_url}"


def test_add_directory_guesses_types_and_honours_prefix(cdn, tmp_path):
    (tmp_path / "feeds").mkdir()
    (tmp_path / "feeds" / "show.xml").write_text("<rss>{base_url}/media/ep.mp3</rss>")
    (tmp_path / "ep.mp3").write_bytes(b"\xff\xfb" + b"\0" * 100)
    (tmp_path / "ep.vtt").write_text("WEBVTT\n")
    (tmp_path / "ep.json").write_text('{"url": "{base_url}"}')
    cdn.add_directory(tmp_path, prefix="/media")

    assert cdn.paths == ["/media/ep.json", "/media/ep.mp3", "/media/ep.vtt", "/media/feeds/show.xml"]
    feed = requests.get(cdn.url("/media/feeds/show.xml"), timeout=TIMEOUT)
    assert feed.text == f"<rss>{cdn.base_url}/media/ep.mp3</rss>"
    assert requests.get(cdn.url("/media/ep.mp3"), timeout=TIMEOUT).headers["Content-Type"] == "audio/mpeg"
    assert requests.get(cdn.url("/media/ep.vtt"), timeout=TIMEOUT).headers["Content-Type"] == "text/vtt"
    assert requests.get(cdn.url("/media/ep.json"), timeout=TIMEOUT).json() == {"url": cdn.base_url}

    # Contents are read on demand, so edits show up (with a new ETag).
    before = requests.get(cdn.url("/media/ep.vtt"), timeout=TIMEOUT).headers["ETag"]
    (tmp_path / "ep.vtt").write_text("WEBVTT\n\n00:00.000 --> 00:01.000\nhello\n")
    after = requests.get(cdn.url("/media/ep.vtt"), timeout=TIMEOUT)
    assert after.text.endswith("hello\n") and after.headers["ETag"] != before


def test_guess_content_type():
    assert guess_content_type("/a/b.mp3") == "audio/mpeg"
    assert guess_content_type("/feed.xml") == "application/rss+xml"
    assert guess_content_type("/x.vtt") == "text/vtt"
    assert guess_content_type("/x.srt") == "application/x-subrip"
    assert guess_content_type("/x.json") == "application/json"
    assert guess_content_type("/x.unknownext") == "application/octet-stream"


def test_keep_alive_serves_several_requests_on_one_connection(cdn):
    cdn.add_file("/a.txt", b"first")
    cdn.add_file("/b.txt", b"second!")
    request = "GET {} HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection((cdn.host, _port(cdn)), timeout=TIMEOUT) as sock:
        sock.sendall((request.format("/a.txt") + request.format("/b.txt")).encode())
        data = b""
        while not data.endswith(b"second!"):
            chunk = sock.recv(65536)
            assert chunk, "server closed a keep-alive connection"
            data += chunk
    assert data.count(b"HTTP/1.1 200 OK") == 2
    assert b"Content-Length: 5\r\n" in data and b"Content-Length: 7\r\n" in data


# -- validators, conditional and range requests ---------------------------------------


def test_conditional_get_returns_304(cdn):
    modified = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
    cdn.add_file("/ep.mp3", AUDIO, last_modified=modified)
    first = requests.get(cdn.url("/ep.mp3"), timeout=TIMEOUT)
    etag = first.headers["ETag"]
    assert first.headers["Last-Modified"] == "Wed, 01 May 2024 12:00:00 GMT"

    r = requests.get(cdn.url("/ep.mp3"), headers={"If-None-Match": etag}, timeout=TIMEOUT)
    assert r.status_code == 304 and r.content == b"" and r.headers["ETag"] == etag
    r = requests.get(cdn.url("/ep.mp3"), headers={"If-None-Match": f'"other", W/{etag}'}, timeout=TIMEOUT)
    assert r.status_code == 304
    r = requests.get(cdn.url("/ep.mp3"), headers={"If-None-Match": '"other"'}, timeout=TIMEOUT)
    assert r.status_code == 200 and r.content == AUDIO

    same = format_datetime(modified, usegmt=True)
    earlier = format_datetime(modified - timedelta(days=1), usegmt=True)
    r = requests.get(cdn.url("/ep.mp3"), headers={"If-Modified-Since": same}, timeout=TIMEOUT)
    assert r.status_code == 304 and r.content == b""
    r = requests.get(cdn.url("/ep.mp3"), headers={"If-Modified-Since": earlier}, timeout=TIMEOUT)
    assert r.status_code == 200
    # If-None-Match wins over If-Modified-Since (RFC 9110 §13.2.2).
    r = requests.get(
        cdn.url("/ep.mp3"), headers={"If-None-Match": '"other"', "If-Modified-Since": same}, timeout=TIMEOUT
    )
    assert r.status_code == 200


def test_range_requests(cdn):
    cdn.add_file("/ep.mp3", AUDIO)
    size = len(AUDIO)

    r = requests.get(cdn.url("/ep.mp3"), headers={"Range": "bytes=100-"}, timeout=TIMEOUT)
    assert r.status_code == 206
    assert r.content == AUDIO[100:]
    assert r.headers["Content-Range"] == f"bytes 100-{size - 1}/{size}"
    assert r.headers["Content-Length"] == str(size - 100)

    r = requests.get(cdn.url("/ep.mp3"), headers={"Range": "bytes=10-19"}, timeout=TIMEOUT)
    assert r.status_code == 206 and r.content == AUDIO[10:20]
    assert r.headers["Content-Range"] == f"bytes 10-19/{size}"

    r = requests.get(cdn.url("/ep.mp3"), headers={"Range": f"bytes=10-{size * 2}"}, timeout=TIMEOUT)
    assert r.status_code == 206 and r.content == AUDIO[10:]

    r = requests.get(cdn.url("/ep.mp3"), headers={"Range": "bytes=-5"}, timeout=TIMEOUT)
    assert r.status_code == 206 and r.content == AUDIO[-5:]

    r = requests.get(cdn.url("/ep.mp3"), headers={"Range": f"bytes={size}-"}, timeout=TIMEOUT)
    assert r.status_code == 416
    assert r.headers["Content-Range"] == f"bytes */{size}"

    # Invalid or multi-range specs are ignored: full 200.
    for spec in ("bytes=20-10", "items=0-1", "bytes=0-1,5-6"):
        r = requests.get(cdn.url("/ep.mp3"), headers={"Range": spec}, timeout=TIMEOUT)
        assert r.status_code == 200 and len(r.content) == size, spec

    # HEAD ignores Range (range handling is only defined for GET).
    r = requests.head(cdn.url("/ep.mp3"), headers={"Range": "bytes=10-19"}, timeout=TIMEOUT)
    assert r.status_code == 200 and r.headers["Content-Length"] == str(size)


def test_if_range(cdn):
    modified = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
    cdn.add_file("/ep.mp3", AUDIO, last_modified=modified)
    etag = requests.head(cdn.url("/ep.mp3"), timeout=TIMEOUT).headers["ETag"]

    def get(if_range: str) -> requests.Response:
        headers = {"Range": "bytes=100-", "If-Range": if_range}
        return requests.get(cdn.url("/ep.mp3"), headers=headers, timeout=TIMEOUT)

    assert get(etag).status_code == 206
    r = get('"stale-etag"')
    assert r.status_code == 200 and r.content == AUDIO and "Content-Range" not in r.headers
    assert get("W/" + etag).status_code == 200  # weak tags never match If-Range
    assert get(format_datetime(modified, usegmt=True)).status_code == 206
    assert get(format_datetime(modified - timedelta(hours=1), usegmt=True)).status_code == 200


# -- faults ------------------------------------------------------------------------


def test_status_fault_with_retry_after_and_times(cdn):
    cdn.add_file("/ep.mp3", AUDIO)
    cdn.set_fault("/ep.mp3", Fault(status=503, retry_after="2", times=2))
    for _ in range(2):
        r = requests.get(cdn.url("/ep.mp3"), timeout=TIMEOUT)
        assert r.status_code == 503
        assert r.headers["Retry-After"] == "2"
        assert int(r.headers["Content-Length"]) == len(r.content) > 0
    r = requests.get(cdn.url("/ep.mp3"), timeout=TIMEOUT)
    assert r.status_code == 200 and r.content == AUDIO
    assert [rec.fault is not None for rec in cdn.requests] == [True, True, False]

    # Re-arming restarts the count; None restores normal service; missing
    # paths can still be faulted.
    cdn.set_fault("/ep.mp3", Fault(status=429, retry_after="Wed, 21 Oct 2015 07:28:00 GMT", times=1))
    r = requests.get(cdn.url("/ep.mp3"), timeout=TIMEOUT)
    assert r.status_code == 429 and r.headers["Retry-After"].startswith("Wed")
    assert requests.get(cdn.url("/ep.mp3"), timeout=TIMEOUT).status_code == 200
    cdn.set_fault("/ep.mp3", Fault(status=500))
    assert requests.get(cdn.url("/ep.mp3"), timeout=TIMEOUT).status_code == 500
    cdn.set_fault("/ep.mp3", None)
    assert requests.get(cdn.url("/ep.mp3"), timeout=TIMEOUT).status_code == 200
    cdn.set_fault("/missing.mp3", Fault(status=404))
    assert requests.get(cdn.url("/missing.mp3"), timeout=TIMEOUT).status_code == 404


def test_for_s_fault_is_an_outage_counted_from_its_first_request(cdn):
    cdn.add_file("/ep.mp3", AUDIO)
    cdn.set_fault("/ep.mp3", Fault(status=503, for_s=0.5))
    time.sleep(0.6)  # the window starts at the first request, not at set_fault
    assert cdn.outage_end("/ep.mp3") is None
    assert requests.get(cdn.url("/ep.mp3"), timeout=TIMEOUT).status_code == 503
    end = cdn.outage_end("/ep.mp3")
    assert end == pytest.approx(cdn.requests[0].started + 0.5, abs=0.05)
    time.sleep(max(0.0, end - time.monotonic()) + 0.05)
    r = requests.get(cdn.url("/ep.mp3"), timeout=TIMEOUT)
    assert r.status_code == 200 and r.content == AUDIO
    assert [rec.fault is not None for rec in cdn.requests] == [True, False]


def test_reset_after_bytes_aborts_mid_body(cdn):
    cdn.add_file("/ep.mp3", AUDIO)
    cdn.set_fault("/ep.mp3", Fault(reset_after_bytes=1000))

    with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError)):
        requests.get(cdn.url("/ep.mp3"), timeout=TIMEOUT)

    raw = raw_get(cdn, "/ep.mp3")
    assert raw.ending == "reset"
    assert raw.status == 200 and raw.headers["Content-Length"] == str(len(AUDIO))
    assert len(raw.body) <= 1000 and AUDIO.startswith(raw.body)
    assert cdn.requests[-1].bytes_sent == 1000


def test_truncate_after_bytes_closes_cleanly_short_of_content_length(cdn):
    cdn.add_file("/ep.mp3", AUDIO)
    cdn.set_fault("/ep.mp3", Fault(truncate_after_bytes=1000))

    raw = raw_get(cdn, "/ep.mp3")
    assert raw.ending == "eof"
    assert raw.headers["Content-Length"] == str(len(AUDIO))
    assert raw.body == AUDIO[:1000]

    # urllib3 enforces Content-Length, so requests notices the short body.
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(cdn.url("/ep.mp3"), timeout=TIMEOUT)

    # Truncation applies to the partial body of a Range response too.
    raw = raw_get(cdn, "/ep.mp3", {"Range": "bytes=500-"})
    assert raw.status == 206 and raw.body == AUDIO[500:1500]


def test_ignore_range_always_sends_full_body(cdn):
    cdn.add_file("/ep.mp3", AUDIO)
    cdn.set_fault("/ep.mp3", Fault(ignore_range=True))
    r = requests.get(cdn.url("/ep.mp3"), headers={"Range": "bytes=100-"}, timeout=TIMEOUT)
    assert r.status_code == 200 and r.content == AUDIO
    assert "Content-Range" not in r.headers
    assert r.headers["Accept-Ranges"] == "bytes"  # still advertised: that's the trap


def test_change_etag_serves_a_new_version_each_time(cdn):
    cdn.add_file("/ep.mp3", AUDIO)
    cdn.set_fault("/ep.mp3", Fault(change_etag=True))
    first = requests.get(cdn.url("/ep.mp3"), timeout=TIMEOUT)
    second = requests.get(cdn.url("/ep.mp3"), timeout=TIMEOUT)
    assert len(first.content) == len(second.content) == len(AUDIO)
    assert first.content != second.content != AUDIO
    assert first.headers["ETag"] != second.headers["ETag"]
    assert first.headers["ETag"] == '"' + hashlib.sha1(first.content).hexdigest() + '"'
    assert first.headers["Last-Modified"] != second.headers["Last-Modified"]

    # A resume guarded by If-Range gets the whole new file, not a spliced 206.
    resumed = requests.get(
        cdn.url("/ep.mp3"),
        headers={"Range": "bytes=1000-", "If-Range": second.headers["ETag"]},
        timeout=TIMEOUT,
    )
    assert resumed.status_code == 200 and len(resumed.content) == len(AUDIO)
    # ...while an unguarded resume gets a 206 of a different version.
    spliced = requests.get(cdn.url("/ep.mp3"), headers={"Range": "bytes=1000-"}, timeout=TIMEOUT)
    assert spliced.status_code == 206 and spliced.content != second.content[1000:]


def test_html_200_serves_an_error_page(cdn):
    cdn.add_file("/ep.mp3", AUDIO)
    cdn.set_fault("/ep.mp3", Fault(html_200=True))
    r = requests.get(cdn.url("/ep.mp3"), timeout=TIMEOUT)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/html")
    assert r.content.startswith(b"<!DOCTYPE html>")
    assert int(r.headers["Content-Length"]) == len(r.content)


def test_wrong_content_length(cdn):
    cdn.add_file("/ep.mp3", AUDIO[:100])

    cdn.set_fault("/ep.mp3", Fault(wrong_content_length=40))
    raw = raw_get(cdn, "/ep.mp3")
    assert raw.headers["Content-Length"] == "40"
    assert raw.body == AUDIO[:100]  # the real body, all of it
    assert raw.ending == "eof"
    # A client that trusts the header silently gets a short file.
    assert requests.get(cdn.url("/ep.mp3"), timeout=TIMEOUT).content == AUDIO[:40]

    cdn.set_fault("/ep.mp3", Fault(wrong_content_length=500))
    raw = raw_get(cdn, "/ep.mp3")
    assert raw.headers["Content-Length"] == "500" and raw.body == AUDIO[:100]
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(cdn.url("/ep.mp3"), timeout=TIMEOUT)


def test_empty_body(cdn):
    cdn.add_file("/ep.mp3", AUDIO)
    cdn.set_fault("/ep.mp3", Fault(empty_body=True))
    r = requests.get(cdn.url("/ep.mp3"), timeout=TIMEOUT)
    assert r.status_code == 200
    assert r.headers["Content-Length"] == "0" and r.content == b""


def test_latency_and_bandwidth(cdn):
    cdn.add_file("/ep.mp3", AUDIO[:2000])
    cdn.set_fault("/ep.mp3", Fault(latency_s=0.3))
    t0 = time.monotonic()
    assert requests.get(cdn.url("/ep.mp3"), timeout=TIMEOUT).content == AUDIO[:2000]
    assert time.monotonic() - t0 >= 0.3

    cdn.set_fault("/ep.mp3", Fault(bandwidth_bps=4000))  # 2000 bytes -> ~0.5 s
    t0 = time.monotonic()
    assert requests.get(cdn.url("/ep.mp3"), timeout=TIMEOUT).content == AUDIO[:2000]
    assert 0.4 <= time.monotonic() - t0 < 10.0  # throttled; the upper bound only catches a stall


def test_trickle_sends_one_byte_per_second(cdn):
    cdn.add_file("/ep.mp3", AUDIO)
    cdn.set_fault("/ep.mp3", Fault(trickle=True))
    t0 = time.monotonic()
    with requests.get(cdn.url("/ep.mp3"), stream=True, timeout=TIMEOUT) as r:
        assert r.status_code == 200
        assert r.headers["Content-Length"] == str(len(AUDIO))
        assert r.raw.read(2) == AUDIO[:2]
    assert 1.0 <= time.monotonic() - t0 < 10.0  # one byte a second; the upper bound only catches a stall


def test_redirect_chain_loop_and_cross_host(cdn):
    cdn.add_file("/real/ep.mp3", AUDIO)
    cdn.set_fault("/ep.mp3", Fault(redirect_to="/hop/ep.mp3"))
    cdn.set_fault("/hop/ep.mp3", Fault(redirect_to="../real/ep.mp3", redirect_status=301))  # relative
    r = requests.get(cdn.url("/ep.mp3"), timeout=TIMEOUT)
    assert r.status_code == 200 and r.content == AUDIO
    assert [h.status_code for h in r.history] == [302, 301]
    assert r.url == cdn.url("/real/ep.mp3")

    cdn.set_fault("/loop/a", Fault(redirect_to="/loop/b"))
    cdn.set_fault("/loop/b", Fault(redirect_to="{base_url}/loop/a", redirect_status=307))
    with pytest.raises(requests.exceptions.TooManyRedirects):
        requests.get(cdn.url("/loop/a"), timeout=TIMEOUT)

    with PodcastCDN(host="127.0.0.2", name="other") as other:
        other.add_file("/ep.mp3", b"elsewhere")
        cdn.set_fault("/moved.mp3", Fault(redirect_to=other.url("/ep.mp3")))
        r = requests.get(cdn.url("/moved.mp3"), timeout=TIMEOUT)
        assert r.content == b"elsewhere" and other.request_count("/ep.mp3") == 1


def test_fault_validation():
    with pytest.raises(ValueError):
        Fault(latency_s=-1)
    with pytest.raises(ValueError):
        Fault(times=0)
    with pytest.raises(ValueError):
        Fault(status=99)
    with pytest.raises(ValueError):
        Fault(redirect_to="/x", redirect_status=200)


# -- statistics, several hosts, lifecycle ------------------------------------------------


def test_max_concurrent_counts_overlapping_requests(cdn):
    cdn.add_file("/slow.mp3", b"x")
    cdn.set_fault("/slow.mp3", Fault(latency_s=0.5))
    results: list[int] = []
    lock = threading.Lock()

    def fetch() -> None:
        status = requests.get(cdn.url("/slow.mp3"), timeout=TIMEOUT).status_code
        with lock:
            results.append(status)

    threads = [threading.Thread(target=fetch) for _ in range(5)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + TIMEOUT
    while cdn.active < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cdn.active == 5
    for t in threads:
        t.join(TIMEOUT)
    assert results == [200] * 5
    assert cdn.max_concurrent == 5 and cdn.active == 0

    # Strictly sequential requests are never counted as overlapping, even
    # though the client may start the next one the instant a response is in.
    cdn.reset_stats()
    assert cdn.max_concurrent == 0 and cdn.request_count() == 0
    cdn.set_fault("/slow.mp3", None)
    with requests.Session() as session:
        for _ in range(20):
            session.get(cdn.url("/slow.mp3"), timeout=TIMEOUT)
            session.head(cdn.url("/slow.mp3"), timeout=TIMEOUT)
            requests.get(cdn.url("/missing"), timeout=TIMEOUT)
    assert cdn.max_concurrent == 1 and cdn.request_count() == 60


def test_several_hosts_side_by_side():
    cdns = [PodcastCDN(host=f"127.0.0.{i}", name=f"host{i}") for i in (1, 2, 3)]
    try:
        for i, c in enumerate(cdns, 1):
            c.start().add_file("/who", f"host{i}".encode())
        assert len({c.base_url for c in cdns}) == 3
        assert cdns[1].base_url.startswith("http://127.0.0.2:")
        for i, c in enumerate(cdns, 1):
            assert requests.get(c.url("/who"), timeout=TIMEOUT).text == f"host{i}"
        assert [c.request_count() for c in cdns] == [1, 1, 1]
    finally:
        for c in cdns:
            c.stop()


def test_stop_is_prompt_during_trickle_and_leaks_nothing():
    cdn = PodcastCDN(name="stoptest").start()
    port = _port(cdn)
    cdn.add_file("/ep.mp3", AUDIO)
    cdn.add_file("/feed.xml", b"<rss/>")
    cdn.set_fault("/ep.mp3", Fault(trickle=True))
    cdn.set_fault("/slow.xml", Fault(latency_s=30, status=503))

    trickling = requests.get(cdn.url("/ep.mp3"), stream=True, timeout=TIMEOUT)
    assert trickling.raw.read(1) == AUDIO[:1]
    sleeping = socket.create_connection((cdn.host, port), timeout=TIMEOUT)
    sleeping.sendall(b"GET /slow.xml HTTP/1.1\r\nHost: x\r\n\r\n")
    idle = requests.Session()  # leaves an idle keep-alive connection behind
    assert idle.get(cdn.url("/feed.xml"), timeout=TIMEOUT).status_code == 200
    deadline = time.monotonic() + TIMEOUT
    while cdn.active != 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cdn.active == 2

    t0 = time.monotonic()
    cdn.stop()
    assert time.monotonic() - t0 < 10.0  # well under the 30 s the sleeping request would hold it
    assert _cdn_threads("stoptest") == []
    with pytest.raises(RuntimeError):
        cdn.base_url
    cdn.stop()  # idempotent

    # The client of the trickle sees its body cut short, not a hang.
    with pytest.raises(urllib3.exceptions.HTTPError):
        trickling.raw.read()
    trickling.close()
    assert sleeping.recv(100) == b""  # closed without an answer
    sleeping.close()
    idle.close()

    # The port is free again.
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))


def test_restart_after_stop():
    cdn = PodcastCDN(name="restart")
    cdn.add_file("/a", b"a")
    with cdn:
        assert requests.get(cdn.url("/a"), timeout=TIMEOUT).content == b"a"
        with pytest.raises(RuntimeError):
            cdn.start()
    with cdn:
        assert requests.get(cdn.url("/a"), timeout=TIMEOUT).content == b"a"
    assert _cdn_threads("restart") == []


def test_command_line_serves_a_directory(tmp_path):
    (tmp_path / "feed.xml").write_text("<rss>{base_url}</rss>")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    with subprocess.Popen(
        [sys.executable, "-m", "tests.support.cdn", "--root", str(tmp_path), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO_ROOT,
    ) as proc:
        try:
            assert proc.stdout is not None
            banner = proc.stdout.readline()
            base_url = banner.split(" at ", 1)[1].split()[0]
            assert requests.get(base_url + "/feed.xml", timeout=TIMEOUT).text == f"<rss>{base_url}</rss>"
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=TIMEOUT) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
