"""``podrun fetch --dry-run``'s plan: episodes, hosts, sizes (HEAD), projected time and cost; writes nothing."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from podinsight_dagster.fetch.http import FetchError
from podinsight_dagster.fetch.limits import registrable_domain
from podinsight_dagster.store.checkpoints import EpisodeRecord

if TYPE_CHECKING:
    from podinsight_dagster.services import Services

# Run-book §3.4: 1,000 episodes cost $4.85 of Fargate Spot CPU; NAT processing is $0.045 per GB.
FETCH_CPU_USD_PER_EPISODE = 4.85 / 1000
NAT_USD_PER_GB = 0.045
ASSUMED_MB_PER_S_PER_CONNECTION = 5.0


def fetch_plan_lines(services: Services, recs: list[EpisodeRecord]) -> list[str]:
    """The plan for downloading ``recs``: sizes from HEAD (else the feed's length), per host, time and cost."""

    def size(rec: EpisodeRecord) -> int | None:
        try:
            length = services.http.head(rec.download_url or rec.enclosure_url).get("Content-Length")
            return int(length) if length else rec.enclosure_length
        except (FetchError, ValueError):
            return rec.enclosure_length

    with ThreadPoolExecutor(max_workers=16) as pool:
        sizes = list(pool.map(size, recs))
    hosts: dict[str, list[int]] = {}
    for rec, n in zip(recs, sizes):
        hosts.setdefault(urlsplit(rec.download_url or rec.enclosure_url or "").hostname or "?", []).append(n or 0)
    total = sum(n or 0 for n in sizes)
    limit_for = services.http.limiter.limit_for
    # Each host's share moves at its concurrency limit; hosts proceed in parallel.
    seconds = max((sum(v) / 1e6 / (limit_for(h) * ASSUMED_MB_PER_S_PER_CONNECTION) for h, v in hosts.items()),
                  default=0.0)
    cost = len(recs) * FETCH_CPU_USD_PER_EPISODE + total / 1e9 * NAT_USD_PER_GB
    lines = [f"DRY RUN: would download {len(recs)} episodes, {total / 1e6:.1f} MB "
             f"({sum(1 for n in sizes if n is None)} of unknown size)",
             f"{'host':<40} {'episodes':>8} {'MB':>10} {'limit':>6}"]
    for host, v in sorted(hosts.items(), key=lambda kv: -sum(kv[1])):
        lines.append(f"{host:<40} {len(v):>8} {sum(v) / 1e6:>10.1f} {limit_for(host):>6}  ({registrable_domain(host)})")
    lines.append(f"projected time: {seconds / 60:.1f} min at {ASSUMED_MB_PER_S_PER_CONNECTION:g} MB/s per connection;"
                 f" projected cost: ${cost:.2f} (CPU ${FETCH_CPU_USD_PER_EPISODE * 1000:.2f}/1000 episodes,"
                 f" NAT ${NAT_USD_PER_GB}/GB)")
    lines.append("nothing was written (dry run: no checkpoints, partitions, manifests or audio)")
    return lines
