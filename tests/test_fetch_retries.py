"""Retries that waste nothing (issue 22 item 8), counted at the loopback CDN.

A permanent failure (404, 410, an HTML page, bytes that are not audio, a file over the cap, a
redirect to a private address) is requested once per run; a retryable one is retried per episode,
a bounded number of times, and again soon after its host answers; a download killed mid-body is
resumed from its partial (Range + If-Range), or restarted where the server ignores Range, and no
partial is left once the episode is in. ``podrun status --failed`` / ``--json`` list the failures.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support.cdn import Fault
from tests.support.feeds import add_to_catalog, serve_feed
from podinsight_dagster.demo.run import CONTENT
from podinsight_dagster.fetch.http import HttpConfig
from podinsight_dagster.settings import Settings
from podinsight_dagster.store.checkpoints import SqliteCheckpointStore

ROOT = Path(__file__).resolve().parents[1]
PODRUN = str(Path(sys.executable).parent / "podrun")
DEFAULT_ATTEMPTS = Settings.__dataclass_fields__["download_attempts"].default
DEFAULT_CAP_S = Settings.__dataclass_fields__["download_backoff_max_s"].default
DEMO_MP3 = sorted((CONTENT / "audio").glob("*/*.mp3"))  # nine ~190 kB episodes


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _requests(cdn, path: str) -> list:
    return [r for r in cdn.requests if r.path == path]


def _staged(settings) -> list[Path]:
    """What is left in raw storage's staging folder (partial downloads and their sidecars)."""
    folder = settings.raw_root / ".partial"
    return sorted(folder.iterdir()) if folder.is_dir() else []


def test_bad_feed_each_permanent_failure_is_requested_once_and_listed(settings, demo_cdn, podrun, monkeypatch,
                                                                      tmp_path):
    """The issue's 14-item feed with 8 bad items: before, the step retry asked for each permanent failure
    three times and for the always-cut file twelve times, over three minutes."""
    monkeypatch.setenv("PODINSIGHT_DOWNLOAD_ATTEMPTS", "3")
    monkeypatch.setenv("PODINSIGHT_DOWNLOAD_BACKOFF_MAX_S", "0.05")
    monkeypatch.setenv("PODINSIGHT_MAX_AUDIO_BYTES", "500000")
    json_body = tmp_path / "json.mp3"
    json_body.write_bytes(b'{"error": "episode moved"}' + b" " * 2000)
    big = tmp_path / "big.mp3"
    big.write_bytes(b"".join(p.read_bytes() for p in DEMO_MP3[:3]))  # ~570 kB, over the 500 kB cap
    good = ["ok1", "ok2", "ok3", "ok4", "flaky503", "cutonce"]
    permanent = ["gone404", "gone410", "html", "notaudio", "oversize", "private"]
    retryable = ["alwayscut", "always500"]
    files = {g: DEMO_MP3[i] for i, g in enumerate(good)}
    files.update({g: DEMO_MP3[-1] for g in permanent + retryable})
    files.update(notaudio=json_body, oversize=big)
    guids = good + permanent + retryable
    add_to_catalog(settings.feeds_dir, [serve_feed(demo_cdn, "mixed", [(g, files[g]) for g in guids])])
    path = {g: f"/audio/mixed/{g}.mp3" for g in guids}
    demo_cdn.set_fault(path["flaky503"], Fault(status=503, times=2))
    demo_cdn.set_fault(path["cutonce"], Fault(reset_after_bytes=50_000, times=1))
    demo_cdn.remove_file(path["gone404"])
    demo_cdn.set_fault(path["gone410"], Fault(status=410))
    demo_cdn.set_fault(path["html"], Fault(html_200=True))
    demo_cdn.set_fault(path["private"], Fault(redirect_to="http://169.254.169.254/latest/ep.mp3"))
    demo_cdn.set_fault(path["alwayscut"], Fault(truncate_after_bytes=1000))
    demo_cdn.set_fault(path["always500"], Fault(status=500))

    result = podrun("fetch", ok=False)
    assert result.exit_code == 1, result.output
    counts = {g: demo_cdn.request_count(path[g]) for g in guids}
    assert counts == {**{g: 1 for g in good + permanent}, "flaky503": 3, "cutonce": 2,
                      "alwayscut": 3, "always500": 3}, counts
    assert _requests(demo_cdn, path["cutonce"])[1].headers["Range"].startswith("bytes=")
    store = SqliteCheckpointStore(settings.checkpoint_db)
    for g in good:
        rec = store.require(f"mixed/{g}")
        assert rec.state == "downloaded"
        stored = settings.raw_root / "mixed" / g / "audio" / "episode.mp3"
        assert _sha(stored.read_bytes()) == _sha(files[g].read_bytes())
    # Only the always-cut episode's partial (and its validator) stays, for the next run to resume.
    staged = _staged(settings)
    assert len(staged) == 2 and {p.suffix for p in staged} == {"", ".json"}
    assert json.loads([p for p in staged if p.suffix == ".json"][0].read_text())["url"] == demo_cdn.url(
        path["alwayscut"])

    out = podrun("status", "--failed").output
    lines = [line.split() for line in out.splitlines()[1:]]
    assert out.splitlines()[0].startswith("8 failed episodes")
    listed = {words[0]: (words[1], words[2].rstrip(":")) for words in lines}
    assert listed == {**{f"mixed/{g}": ("download", "permanent") for g in permanent},
                      **{f"mixed/{g}": ("download", "retryable") for g in retryable}}
    reasons = {words[0]: " ".join(words[3:]) for words in lines}
    assert "HTTP 404" in reasons["mixed/gone404"] and "HTTP 410" in reasons["mixed/gone410"]
    assert "an HTML page" in reasons["mixed/html"] and "a JSON document" in reasons["mixed/notaudio"]
    assert "cap for audio" in reasons["mixed/oversize"] and "169.254.169.254" in reasons["mixed/private"]
    assert "gave up after 3 attempts" in reasons["mixed/alwayscut"] and "HTTP 500" in reasons["mixed/always500"]

    failed = json.loads(podrun("status", "--failed", "--json").output)["failed_episodes"]
    assert {f["partition_key"]: f["retryable"] for f in failed} == {
        **{f"mixed/{g}": False for g in permanent}, **{f"mixed/{g}": True for g in retryable}}
    assert all(f["stage"] == "download" and f["reason"] and f["feed_slug"] == "mixed" for f in failed)
    doc = json.loads(podrun("status", "--json").output)
    assert doc["failed_episodes"] == failed


def test_download_backoff_spans_an_outage_and_is_bounded():
    backoff = HttpConfig(download_attempts=DEFAULT_ATTEMPTS, download_backoff_max=DEFAULT_CAP_S).download_backoff
    for _ in range(200):
        waits = [backoff.delay(n) for n in range(1, backoff.attempts)]
        assert 11.5 <= sum(waits) <= 23.0 and max(waits) <= DEFAULT_CAP_S


def test_after_an_outage_the_episode_is_asked_again_soon_after_its_host_answers(settings, demo_cdn, podrun):
    """An 8-s outage (503): before, each episode gave up within 7 s and the step retry asked again 30 s to
    90 s later. With the default settings every episode is asked again within 10 s of the host's return."""
    add_to_catalog(settings.feeds_dir, [serve_feed(demo_cdn, "outage", [("o1", DEMO_MP3[0]), ("o2", DEMO_MP3[1])])])
    paths = ["/audio/outage/o1.mp3", "/audio/outage/o2.mp3"]
    for p in paths:
        demo_cdn.set_fault(p, Fault(status=503, for_s=8.0))
    podrun("fetch")
    for p, mp3 in zip(paths, DEMO_MP3):
        end = demo_cdn.outage_end(p)
        seen = _requests(demo_cdn, p)
        during = [r for r in seen if r.fault is not None]
        after = [r for r in seen if r.fault is None]
        assert during and all(r.status == 503 for r in during) and len(during) < DEFAULT_ATTEMPTS
        assert len(after) == 1 and after[0].status == 200
        assert after[0].started - end < 10.0, f"{p}: asked again {after[0].started - end:.1f} s after the outage"
        stored = settings.raw_root / "outage" / Path(p).stem / "audio" / "episode.mp3"
        assert _sha(stored.read_bytes()) == _sha(mp3.read_bytes())
    assert podrun("status", "--failed").output.strip() == "no failed episodes"
    assert json.loads(podrun("status", "--json").output)["failed_episodes"] == []


def test_killed_download_is_resumed_with_range_or_restarted_and_leaves_no_partial(settings, demo_cdn, podrun):
    """`podrun fetch` killed mid-body: the next run resumes each partial with Range + If-Range on the validator
    kept beside it (206), or, from a server that ignores Range, restarts it (200); either way the file is
    byte-identical and no partial is left. Before, the partials were neither resumed nor removed."""
    add_to_catalog(settings.feeds_dir, [serve_feed(demo_cdn, "killed", [("k1", DEMO_MP3[0]), ("k2", DEMO_MP3[1])])])
    resumable, no_range = "/audio/killed/k1.mp3", "/audio/killed/k2.mp3"
    for p in (resumable, no_range):
        demo_cdn.set_fault(p, Fault(bandwidth_bps=20_000))  # ~10 s each: the kill lands mid-body
    proc = subprocess.Popen([PODRUN, "fetch"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True, text=True)

    def partials() -> dict[str, tuple[int, str]]:
        """URL -> (bytes in the partial, the validator kept beside it)."""
        out = {}
        for sidecar in settings.raw_root.glob(".partial/.tmp-part-*.json"):
            try:
                doc = json.loads(sidecar.read_text())
                out[doc["url"]] = (sidecar.with_suffix("").stat().st_size, doc["validator"])
            except (OSError, ValueError):
                pass
        return out

    deadline = time.monotonic() + 120
    try:
        while not (len(partials()) == 2 and all(n >= 30_000 for n, _ in partials().values())):
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "no partial download with its validator appeared"
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    left = partials()
    assert len(left) == 2
    demo_cdn.set_fault(resumable, None)
    demo_cdn.set_fault(no_range, Fault(ignore_range=True))

    podrun("fetch")
    have, validator = left[demo_cdn.url(resumable)]
    last = _requests(demo_cdn, resumable)[-1]
    assert last.headers["Range"] == f"bytes={have}-" and last.headers["If-Range"] == validator
    assert last.status == 206 and last.bytes_sent == DEMO_MP3[0].stat().st_size - have
    have, _ = left[demo_cdn.url(no_range)]
    last = _requests(demo_cdn, no_range)[-1]
    assert last.headers["Range"] == f"bytes={have}-"
    assert last.status == 200 and last.bytes_sent == DEMO_MP3[1].stat().st_size
    for guid, mp3 in (("k1", DEMO_MP3[0]), ("k2", DEMO_MP3[1])):
        stored = settings.raw_root / "killed" / guid / "audio" / "episode.mp3"
        assert _sha(stored.read_bytes()) == _sha(mp3.read_bytes())
    assert _staged(settings) == []
