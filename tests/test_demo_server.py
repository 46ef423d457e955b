"""The static server behind ``podrun demo``, over real HTTP on loopback."""

from __future__ import annotations

import http.client
from pathlib import Path

import pytest
import requests

from podinsight_dagster.demo.run import CONTENT
from podinsight_dagster.demo.server import DemoServer
from podinsight_dagster.fetch.http import HttpClient, HttpConfig
from podinsight_dagster.fetch.netpolicy import NetworkPolicy

TIMEOUT = 5
MP3 = "/audio/history-hour/ep1.mp3"


@pytest.fixture
def server():
    with DemoServer() as s:
        s.add_directory(CONTENT / "feeds", prefix="/feeds")
        s.add_directory(CONTENT / "audio", prefix="/audio")
        yield s


def raw(server: DemoServer, path: str, method: str = "GET", headers: dict | None = None):
    """A request with the path sent exactly as written (requests would normalise ``..``)."""
    conn = http.client.HTTPConnection("127.0.0.1", int(server.base_url.rsplit(":", 1)[1]), timeout=TIMEOUT)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def test_get_whole_file_byte_exact_with_headers(server):
    data = (CONTENT / "audio" / "history-hour" / "ep1.mp3").read_bytes()
    r = requests.get(server.url(MP3), timeout=TIMEOUT)
    assert r.status_code == 200 and r.content == data
    assert r.headers["Content-Type"] == "audio/mpeg"
    assert r.headers["Content-Length"] == str(len(data))
    assert r.headers["Accept-Ranges"] == "bytes"
    assert r.headers["ETag"].startswith('"') and r.headers["Last-Modified"].endswith("GMT")


def test_feed_is_rss_with_the_servers_own_address(server):
    r = requests.get(server.url("/feeds/history-hour.xml"), timeout=TIMEOUT)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/rss+xml"
    assert "{base_url}" not in r.text and f"{server.base_url}/audio/history-hour/ep1.mp3" in r.text
    assert r.headers["Content-Length"] == str(len(r.content))


def test_head_has_the_headers_and_no_body(server):
    get = requests.get(server.url(MP3), timeout=TIMEOUT)
    status, headers, body = raw(server, MP3, "HEAD")
    assert status == 200 and body == b""
    assert headers["Content-Length"] == get.headers["Content-Length"]
    assert headers["ETag"] == get.headers["ETag"] and headers["Content-Type"] == "audio/mpeg"


def test_range_gives_206_with_exactly_those_bytes(server):
    data = (CONTENT / "audio" / "history-hour" / "ep1.mp3").read_bytes()
    for spec, want, start in (("100-199", data[100:200], 100), ("1000-", data[1000:], 1000),
                              ("-50", data[-50:], len(data) - 50), (f"10-{len(data) * 2}", data[10:], 10)):
        r = requests.get(server.url(MP3), headers={"Range": f"bytes={spec}"}, timeout=TIMEOUT)
        assert r.status_code == 206, spec
        assert r.content == want, spec
        assert r.headers["Content-Range"] == f"bytes {start}-{start + len(want) - 1}/{len(data)}"
        assert r.headers["Content-Length"] == str(len(want))
    r = requests.get(server.url(MP3), headers={"Range": f"bytes={len(data)}-"}, timeout=TIMEOUT)
    assert r.status_code == 416 and r.headers["Content-Range"] == f"bytes */{len(data)}"


def test_if_range_honours_a_current_validator_and_sends_all_for_a_stale_one(server):
    data = (CONTENT / "audio" / "history-hour" / "ep1.mp3").read_bytes()
    head = requests.head(server.url(MP3), timeout=TIMEOUT).headers
    for current in (head["ETag"], head["Last-Modified"]):
        r = requests.get(server.url(MP3), headers={"Range": "bytes=10-", "If-Range": current}, timeout=TIMEOUT)
        assert r.status_code == 206 and r.content == data[10:]
    for stale in ('"0123456789abcdef"', "Thu, 01 Jan 1998 00:00:00 GMT"):
        r = requests.get(server.url(MP3), headers={"Range": "bytes=10-", "If-Range": stale}, timeout=TIMEOUT)
        assert r.status_code == 200 and r.content == data
    r = requests.get(server.url(MP3), headers={"If-None-Match": head["ETag"]}, timeout=TIMEOUT)
    assert r.status_code == 304 and r.content == b""


@pytest.mark.parametrize("path", ["/audio/nope.mp3", "/audio/", "/audio", "/audio/history-hour", "/",
                                  "/texts/history-hour/ep1.txt", "/catalog.yaml", "/feeds/../catalog.yaml",
                                  "/audio/../../etc/passwd", "/audio/%2e%2e/%2e%2e/etc/passwd",
                                  "/audio/..%2f..%2fcatalog.yaml", "/audio/history-hour/..\\ep1.mp3"])
def test_missing_folders_and_escapes_are_404(server, path):
    for method in ("GET", "HEAD"):
        status, _, body = raw(server, path, method)
        assert status == 404, (method, path)
        assert b"root:" not in body and b"feeds:" not in body


def test_our_downloader_gets_it_and_its_resume_request_is_honoured(server, tmp_path: Path):
    data = (CONTENT / "audio" / "history-hour" / "ep1.mp3").read_bytes()
    client = HttpClient(HttpConfig(max_attempts=1), NetworkPolicy.parse("127.0.0.1/32"))
    try:
        got = client.download(server.url(MP3), tmp_path / "ep1.mp3")
    finally:
        client.close()
    assert (tmp_path / "ep1.mp3").read_bytes() == data and got.bytes == len(data)
    assert got.content_type == "audio/mpeg" and got.etag
    # The headers the client sends to resume a cut-off download (fetch/http.py).
    r = requests.get(server.url(MP3), headers={"Accept-Encoding": "identity", "Range": f"bytes={len(data) - 7}-",
                                                "If-Range": got.etag}, timeout=TIMEOUT)
    assert r.status_code == 206 and data[:-7] + r.content == data


def test_url_base_url_and_fixed_port():
    with DemoServer(port=0) as a:
        port = int(a.base_url.rsplit(":", 1)[1])
        assert a.base_url == f"http://127.0.0.1:{port}" and port > 0
        assert a.url("/feeds/x.xml") == a.url("feeds/x.xml") == f"{a.base_url}/feeds/x.xml"
    with DemoServer(port=port) as b:  # the port is free again after stop, and a given port is used
        b.add_directory(CONTENT / "feeds", prefix="/feeds")
        assert b.base_url == f"http://127.0.0.1:{port}"
        assert requests.get(b.url("/feeds/tech-talk.xml"), timeout=TIMEOUT).status_code == 200
