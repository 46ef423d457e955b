"""The static file server behind ``podrun demo``: bundled feeds and audio on loopback.

Threaded HTTP/1.1 on 127.0.0.1; GET and HEAD, one ``Range`` with ``If-Range`` (strong ETag
or Last-Modified) as podcast apps and our downloader resume, ``If-None-Match``, 404 for
anything that is not a file under a served folder (no listings, no ``..``). ``{base_url}``
in .xml files becomes the server's address, so feeds point at whatever port it got.
Standard library only. (The fault-injecting test CDN is tests/support/cdn.py.)
"""

from __future__ import annotations

import email.utils
import hashlib
import re
import socketserver
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

TYPES = {".xml": "application/rss+xml", ".mp3": "audio/mpeg"}
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30  # an idle keep-alive connection does not pin a thread for ever

    def log_message(self, *args) -> None:
        pass

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET(head=True)

    def do_GET(self, head: bool = False) -> None:  # noqa: N802
        file = self.server.demo.resolve(urlsplit(self.path).path)
        if file is None:
            return self.send_error(404)
        body = file.read_bytes()
        if file.suffix == ".xml":
            body = body.replace(b"{base_url}", self.server.demo.base_url.encode())
        etag = '"' + hashlib.sha1(body).hexdigest() + '"'
        modified = email.utils.formatdate(file.stat().st_mtime, usegmt=True)
        headers = {"Content-Type": TYPES.get(file.suffix, "application/octet-stream"), "Accept-Ranges": "bytes",
                   "ETag": etag, "Last-Modified": modified}
        if etag in self.headers.get("If-None-Match", ""):
            return self._send(304, b"", headers, head=True)
        match = _RANGE.fullmatch(self.headers.get("Range", "").strip())
        first, last = match.groups() if match else ("", "")
        if (first or last) and not (first and last and int(last) < int(first)) \
                and self.headers.get("If-Range", etag) in (etag, modified):
            # One satisfiable range -> 206; "bytes=-N" is the last N bytes. Otherwise the whole file.
            start = int(first) if first else max(0, len(body) - int(last))
            end = min(int(last), len(body) - 1) if first and last else len(body) - 1
            if start > end:
                return self._send(416, b"", {"Content-Range": f"bytes */{len(body)}"}, head)
            headers["Content-Range"] = f"bytes {start}-{end}/{len(body)}"
            return self._send(206, body[start:end + 1], headers, head)
        self._send(200, body, headers, head)

    def _send(self, status: int, body: bytes, headers: dict[str, str], head: bool) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if status != 304:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self) -> None:  # HTTPServer's reverse DNS lookup can stall in sandboxes
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


class DemoServer:
    """``with DemoServer(port=0) as s: s.add_directory(folder, prefix="/audio"); s.url("/audio/x.mp3")``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port, self._roots, self._httpd = host, port, {}, None

    def add_directory(self, path: Path, prefix: str = "/") -> None:
        self._roots["/" + prefix.strip("/")] = Path(path).resolve()

    def resolve(self, url_path: str) -> Path | None:
        """The served file for a URL path, or None: only files inside a served folder."""
        path = unquote(url_path)
        if "\\" in path or "\0" in path or ".." in path.split("/"):
            return None
        for prefix, root in self._roots.items():
            if path.startswith(prefix.rstrip("/") + "/"):
                file = (root / path[len(prefix):].lstrip("/")).resolve()
                if file.is_relative_to(root) and file.is_file():
                    return file
        return None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + "/" + path.lstrip("/")

    def __enter__(self) -> DemoServer:
        self._httpd = _Server((self.host, self.port), _Handler)
        self._httpd.demo, self.port = self, self._httpd.server_address[1]
        threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="demo-server", daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
