"""The loopback CDN streams big files from disk (used by bench/fetch_bench.py), faults included."""

from __future__ import annotations

import hashlib
import os
import tracemalloc

import pytest
import requests

from tests.support.cdn import Fault, PodcastCDN

from .test_http_support import AUDIO, file_sha256, make_client, sha256


@pytest.fixture
def disk_cdn(tmp_path):
    path = tmp_path / "big.mp3"
    path.write_bytes(AUDIO)
    with PodcastCDN(name="disk") as cdn:
        cdn.add_file("/big.mp3", path)
        yield cdn, path


def test_served_from_disk_with_size_mtime_etag(disk_cdn):
    cdn, path = disk_cdn
    r = requests.get(cdn.url("/big.mp3"), timeout=5)
    st = path.stat()
    assert r.content == AUDIO and r.headers["Content-Type"] == "audio/mpeg"
    assert r.headers["ETag"] == f'"{st.st_size:x}-{st.st_mtime_ns:x}"'
    part = requests.get(cdn.url("/big.mp3"), headers={"Range": "bytes=1000-1999", "If-Range": r.headers["ETag"]},
                        timeout=5)
    assert part.status_code == 206 and part.content == AUDIO[1000:2000]
    assert requests.get(cdn.url("/big.mp3"), headers={"If-None-Match": r.headers["ETag"]}, timeout=5).status_code == 304
    # Rewriting the file changes the ETag (size and mtime), and the new bytes are served.
    path.write_bytes(AUDIO[:5000])
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    again = requests.get(cdn.url("/big.mp3"), timeout=5)
    assert again.content == AUDIO[:5000] and again.headers["ETag"] != r.headers["ETag"]


def test_change_etag_on_disk_matches_the_in_memory_mutation(disk_cdn):
    cdn, _ = disk_cdn
    cdn.add_file("/mem.mp3", AUDIO)
    cdn.set_fault("/big.mp3", Fault(change_etag=True))
    cdn.set_fault("/mem.mp3", Fault(change_etag=True))
    disk = [requests.get(cdn.url("/big.mp3"), timeout=5) for _ in range(2)]
    mem = [requests.get(cdn.url("/mem.mp3"), timeout=5) for _ in range(2)]
    assert [d.content for d in disk] == [m.content for m in mem]
    assert disk[0].headers["ETag"] != disk[1].headers["ETag"]


def test_download_from_disk_resumes_after_reset(disk_cdn, tmp_path):
    cdn, _ = disk_cdn
    cdn.set_fault("/big.mp3", Fault(reset_after_bytes=150_000, times=1))
    client, _ = make_client()
    result = client.download(cdn.url("/big.mp3"), tmp_path / "out.mp3")
    assert result.sha256 == file_sha256(tmp_path / "out.mp3") == sha256(AUDIO) and result.resumed == 1


def test_add_directory_streams_big_non_text_files(tmp_path):
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "big.mp3").write_bytes(AUDIO)
    (tmp_path / "root" / "small.mp3").write_bytes(AUDIO[:100])
    with PodcastCDN(name="dir") as cdn:
        cdn.add_directory(tmp_path / "root", stream_threshold=1000)
        big = requests.get(cdn.url("/big.mp3"), timeout=5)
        small = requests.get(cdn.url("/small.mp3"), timeout=5)
    assert big.content == AUDIO and "-" in big.headers["ETag"]  # size-mtime: streamed
    assert small.headers["ETag"] == '"' + hashlib.sha1(AUDIO[:100]).hexdigest() + '"'  # cached


def test_big_file_costs_neither_side_memory(tmp_path):
    path = tmp_path / "big.mp3"
    with open(path, "wb") as fh:
        fh.write(AUDIO[:10])
        for _ in range(64):
            fh.write(os.urandom(1 << 20))
    with PodcastCDN(name="disk-mem") as cdn:
        cdn.add_file("/big.mp3", path)
        client, _ = make_client()
        tracemalloc.start()  # server and client share this process: both are measured
        try:
            result = client.download(cdn.url("/big.mp3"), tmp_path / "out.mp3")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert result.bytes == path.stat().st_size and result.sha256 == file_sha256(path)
    assert peak < 8 << 20, f"peak {peak >> 20} MB for a 64 MB file"


def test_add_file_with_a_missing_path_fails_early(tmp_path):
    with pytest.raises(FileNotFoundError):
        PodcastCDN().add_file("/x.mp3", tmp_path / "nope.mp3")
