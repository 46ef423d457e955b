"""Hostile feeds are bounded in time and memory, and never read local files.

feedparser on its own is not enough: it strips entity declarations with a regex that
only looks at line starts, so a one-line DOCTYPE gets through to expat. Measured with
feedparser 6.0 alone: a one-line billion laughs took 2.2 s and 50 MB, and a quadratic
blowup (a 100 KB entity referenced 20,000 times) 76 s and 5.7 GB. feeds.defuse()
removes the DOCTYPE before feedparser sees the document.
"""

from __future__ import annotations

import socket
import threading
import time
import tracemalloc
import zlib
from pathlib import Path

import pytest

from podinsight_dagster.fetch.feeds import FeedParseError, defuse, parse_feed
from podinsight_dagster.fetch.http import ContentRejectedError

from .test_http_support import make_client, serve_audio


@pytest.fixture
def cdn():
    yield from serve_audio()

ITEM = (b'<item><title>%s</title><description>%s</description><guid>g1</guid>'
        b'<enclosure url="https://cdn.example/a.mp3" type="audio/mpeg" length="1"/></item>')


def _rss(doctype: bytes, title: bytes, body: bytes | None = None) -> bytes:
    body = body if body is not None else title
    return (b'<?xml version="1.0"?>\n' + doctype + b'\n<rss version="2.0"><channel><title>' + title
            + b"</title>" + ITEM % (title, body) + b"</channel></rss>")


def _laughs(sep: bytes) -> bytes:
    decls = [b'<!ENTITY lol0 "lol">']
    decls += [b'<!ENTITY lol%d "%s">' % (i, b"".join(b"&lol%d;" % (i - 1) for _ in range(10))) for i in range(1, 10)]
    return b"<!DOCTYPE rss [" + sep + sep.join(decls) + sep + b"]>"


def _bounded(fn, seconds=15.0, megabytes=30):
    """Run ``fn`` twice: timed (untraced, tracemalloc slows Python down) and under tracemalloc.

    The time limit is loose on purpose (slow CI machines): it catches an unbounded expansion,
    which takes minutes; the memory peak is the precise check.
    """
    t0 = time.monotonic()
    result = fn()
    elapsed = time.monotonic() - t0
    assert elapsed < seconds, f"took {elapsed:.2f} s"
    tracemalloc.start()
    try:
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < megabytes << 20, f"peak {peak >> 20} MB"
    return result


def _text(feed) -> str:
    return repr(feed) + repr(feed.to_dict())


@pytest.mark.parametrize("sep", [b"\n", b""], ids=["multi-line", "one-line"])
def test_billion_laughs_is_not_expanded(sep):
    feed = _bounded(lambda: parse_feed(_rss(_laughs(sep), b"&lol9;")))
    assert "lollol" not in _text(feed) and len(feed.episodes) == 1


def test_quadratic_blowup_is_not_expanded():
    # 100 KB x 5,000 references x 3 places = 1.5 GB if expanded.
    doc = _rss(b'<!DOCTYPE rss [<!ENTITY a "' + b"a" * 100_000 + b'">]>', b"&a;" * 5_000)
    feed = _bounded(lambda: parse_feed(doc))
    assert "a" * 1000 not in _text(feed)


def _secrets(tmp_path: Path) -> list[tuple[str, str]]:
    canary = tmp_path / "canary.txt"
    canary.write_text("CANARY-7f3a9c-do-not-leak\n")
    files = [(canary.as_uri(), "CANARY-7f3a9c")]
    passwd = Path("/etc/passwd")
    if passwd.exists():
        first = passwd.read_text().splitlines()[0]
        files.append(("file:///etc/passwd", first))
    return files


@pytest.mark.parametrize("variant", ["general", "one-line", "attribute", "parameter", "external-dtd", "utf-16"])
def test_external_entities_never_read_local_files(tmp_path, variant):
    for uri, secret in _secrets(tmp_path):
        if variant == "general":
            doc = _rss(b'<!DOCTYPE rss [\n<!ENTITY xxe SYSTEM "%s">\n]>' % uri.encode(), b"T &xxe;")
        elif variant == "one-line":
            doc = _rss(b'<!DOCTYPE rss [<!ENTITY xxe SYSTEM "%s">]>' % uri.encode(), b"T &xxe;")
        elif variant == "attribute":
            doc = _rss(b'<!DOCTYPE rss [<!ENTITY xxe SYSTEM "%s">]>' % uri.encode(), b"T").replace(
                b'url="https://cdn.example/a.mp3"', b'url="https://cdn.example/&xxe;"')
        elif variant == "parameter":
            doc = _rss(b'<!DOCTYPE rss [\n<!ENTITY %% pe SYSTEM "%s">\n%%pe;\n]>' % uri.encode(), b"T")
        elif variant == "external-dtd":
            doc = _rss(b'<!DOCTYPE rss SYSTEM "%s">' % uri.encode(), b"T")
        else:
            doc = _rss(b'<!DOCTYPE rss [<!ENTITY xxe SYSTEM "%s">]>' % uri.encode(), b"T &xxe;")
            doc = doc.decode().replace('version="1.0"?>', 'version="1.0" encoding="UTF-16"?>', 1).encode("utf-16")
        try:
            feed = _bounded(lambda: parse_feed(doc))
        except FeedParseError:
            continue  # refusing is fine too; leaking is not
        assert secret not in _text(feed)
        assert feed.title.startswith("T")


def test_defuse_removes_any_doctype_and_keeps_the_rest():
    doc = _rss(b"<!-- c --><!DOCTYPE rss [ <!-- ] > ' --> <!ENTITY x \"]>\"> <?pi ]> ?> ]>", b"T")
    out = defuse(doc)
    assert b"DOCTYPE" not in out and b"ENTITY" not in out and out.endswith(b"</channel></rss>")
    assert parse_feed(doc).title == "T"
    netscape = _rss(b'<!DOCTYPE rss PUBLIC "-//Netscape Communications//DTD RSS 0.91//EN" '
                    b'"http://my.netscape.com/publish/formats/rss-0.91.dtd">', b"Old &amp; fine")
    assert parse_feed(netscape).title == "Old & fine"


def test_unterminated_doctype_is_refused():
    with pytest.raises(FeedParseError, match="unterminated DOCTYPE"):
        parse_feed(b'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY a "x">')


def test_fifty_megabyte_feed_is_refused_before_parsing(cdn):
    big = b'<?xml version="1.0"?><rss version="2.0"><channel><title>Huge</title>' + b" " * (50 << 20) + b"</channel></rss>"
    cdn.add_file("/huge.xml", big)
    client, sleeps = make_client(max_feed_bytes=20 << 20)  # the default, spelled out
    with pytest.raises(ContentRejectedError) as err:
        client.fetch_bytes(cdn.url("/huge.xml"))
    assert f"is {len(big)} bytes, over the {20 << 20}-byte cap" in str(err.value)
    assert client.stats.snapshot()["127.0.0.1"].bytes == 0 and sleeps == []  # not read, not retried


class _RawServer:
    """Answers every connection with one fixed response, then closes (no keep-alive)."""

    def __init__(self, response: bytes):
        self.response = response
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/feed.xml"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.recv(65536)
                    conn.sendall(self.response)
                    conn.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()


def test_feed_without_content_length_is_capped_while_streaming():
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\nConnection: close\r\n\r\n"
    server = _RawServer(head + b"<rss>" + b"x" * (3 << 20))
    try:
        client, _ = make_client()
        with pytest.raises(ContentRejectedError, match="over the 1048576-byte cap"):
            _bounded(lambda: client.fetch_bytes(server.url, max_bytes=1 << 20), megabytes=12)
    finally:
        server.close()


def test_gzip_bomb_is_capped_on_decoded_bytes():
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip framing
    bomb = packer.compress(b"<rss>" + b"\0" * (60 << 20)) + packer.flush()
    assert len(bomb) < 200_000
    head = (b"HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\nContent-Encoding: gzip\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(bomb))
    server = _RawServer(head + bomb)
    try:
        client, _ = make_client()
        with pytest.raises(ContentRejectedError, match="cap"):
            _bounded(lambda: client.fetch_bytes(server.url, max_bytes=2 << 20), megabytes=12)
    finally:
        server.close()
