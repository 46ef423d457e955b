"""No leaks in long runs: 2,000 downloads in one process under a 256 file-descriptor limit, resources flat."""

import json
import subprocess
import sys
from pathlib import Path

from tests.support.cdn import PodcastCDN

from .conftest import audio_bytes

ROOT = Path(__file__).resolve().parents[1]
EPISODES = 2000
BATCH = 100   # one Dagster run's worth (BackfillPolicy.multi_run(100))

CHILD = r'''
import json, os, resource, sys, threading
resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
from pathlib import Path
from podinsight_dagster.fetch.download import download_episodes
from podinsight_dagster.services import build_services
from podinsight_dagster.settings import Settings
from podinsight_dagster.store.checkpoints import EpisodeRecord

base, home, n, batch = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
settings = Settings.from_env({"PODINSIGHT_HOME": str(home), "PODINSIGHT_ALLOW_PRIVATE_NETWORKS": "127.0.0.0/8"})
services = build_services(settings)
keys = [f"show/ep{i:05d}" for i in range(n)]
services.checkpoints.register_episodes([EpisodeRecord(partition_key=k, feed_slug="show", guid_key=k.split("/")[1],
                                                      enclosure_url=f"{base}/a/{i % 50}.mp3?n={i}")
                                        for i, k in enumerate(keys)])

def rss_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])

def settle():
    # A new thread's first connection and session close those of finished threads (how the store and the
    # client keep them from piling up); sample after that, so a sample does not depend on timing.
    t = threading.Thread(target=lambda: (services.checkpoints.get(keys[0]), services.http.session))
    t.start()
    t.join()

samples, failures = [], 0
for start in range(0, n, batch):
    for pk, out in download_episodes(services, keys[start:start + batch]):
        failures += not hasattr(out, "sha256")
    settle()
    samples.append({"done": start + batch, "fds": len(os.listdir("/proc/self/fd")),
                    "threads": threading.active_count(), "rss_kb": rss_kb()})
services.close()
print(json.dumps({"samples": samples, "failures": failures}))
'''


def test_two_thousand_downloads_under_256_fds_keep_resources_flat(tmp_path):
    body = audio_bytes("tech-talk", "ep1")[:40_000]  # a real MP3 start: sniffed as audio
    with PodcastCDN(name="leaks") as cdn:
        for i in range(50):
            cdn.add_file(f"/a/{i}.mp3", body, content_type="audio/mpeg")
        out = subprocess.run([sys.executable, "-c", CHILD, cdn.base_url, str(tmp_path / "home"), str(EPISODES),
                              str(BATCH)], capture_output=True, text=True, timeout=600, cwd=ROOT,
                             env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert doc["failures"] == 0
    samples = doc["samples"]
    assert len(samples) == EPISODES // BATCH
    # Flat after the first hundred: no descriptor or thread more than after the first batch, and the
    # second half of the run holds no more memory than the first did (a leak grows with every batch).
    first, rest = samples[0], samples[1:]
    assert max(s["fds"] for s in rest) <= first["fds"] + 2, samples
    assert max(s["threads"] for s in rest) <= first["threads"], samples
    early, late = rest[:len(rest) // 2], rest[len(rest) // 2:]
    assert max(s["rss_kb"] for s in late) <= max(s["rss_kb"] for s in early) + 30_000, samples
    files = list((tmp_path / "home" / "pod-insights-raw" / "show").rglob("episode.mp3"))
    assert len(files) == EPISODES
