"""Speaker names: feed voice prints, the feed's podcast:person host and guests, else ``Speaker N``."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np

# A cluster is a known voice when its mean voice is this close (cosine) to the feed's print of it.
# The same synthetic voice across episodes measures 0.97-0.99; two different espeak voices up to 0.93
# (docs/BENCHMARKS.md). Real voices are much further apart.
VOICEPRINT_MATCH = 0.95
PRINT_MAX_WEIGHT_SEC = 3600.0   # a print stops moving much once an hour of speech backs it


@dataclass
class Person:
    """A ``podcast:person`` of an episode (or of the channel, for all its episodes)."""

    name: str
    role: str = "host"          # podcast:person's default role is host
    group: str | None = None
    href: str | None = None
    img: str | None = None


def persons_from_json(text: str | None) -> list[Person]:
    if not text:
        return []
    try:
        items = json.loads(text)
    except ValueError:
        return []
    return [Person(**{k: v for k, v in it.items() if k in Person.__dataclass_fields__})
            for it in items if isinstance(it, dict) and it.get("name")]


def persons_to_json(persons: list[Person]) -> str | None:
    return json.dumps([asdict(p) for p in persons]) if persons else None


def speakers_listed(persons: list[Person]) -> int:
    """How many people the feed says speak: hosts, co-hosts and guests (not producers, editors, ...)."""
    return len({p.name for p in persons if p.role in ("host", "co-host", "guest")})


@dataclass
class VoicePrint:
    name: str
    role: str | None
    vector: list[float]
    weight_sec: float
    episodes: int

    def array(self) -> np.ndarray:
        v = np.asarray(self.vector, dtype=np.float32)
        return v / (np.linalg.norm(v) + 1e-12)


@dataclass
class SpeakerName:
    name: str
    role: str | None        # host, guest, ... when known
    source: str             # voiceprint, intro (the host speaks first), only-guest, publisher or none


def name_speakers(centroids: np.ndarray, first_cluster: int | None, persons: list[Person],
                  prints: list[VoicePrint]) -> list[SpeakerName]:
    """A name per cluster.

    1. A cluster whose voice matches one of the feed's prints (each print and cluster at most
       once, best matches first) is that person.
    2. With one host listed and not yet found, the cluster that speaks first (the intro) is the host.
    3. With one guest listed and one cluster left unnamed, that cluster is the guest.
    4. Anything else: ``Speaker N`` (N in order of first speech).
    """
    k = len(centroids)
    out: list[SpeakerName | None] = [None] * k
    used: set[str] = set()
    if prints and k:
        mat = np.stack([p.array() for p in prints])
        sim = centroids @ mat.T
        pairs = sorted(((float(sim[c, j]), c, j) for c in range(k) for j in range(len(prints))), reverse=True)
        for score, c, j in pairs:
            if score < VOICEPRINT_MATCH:
                break
            if out[c] is None and prints[j].name not in used:
                out[c] = SpeakerName(prints[j].name, prints[j].role, "voiceprint")
                used.add(prints[j].name)
    hosts = [p for p in persons if p.role in ("host", "co-host") and p.name not in used]
    if len([p for p in persons if p.role in ("host", "co-host")]) == 1 and len(hosts) == 1 \
            and first_cluster is not None and out[first_cluster] is None:
        out[first_cluster] = SpeakerName(hosts[0].name, hosts[0].role, "intro")
        used.add(hosts[0].name)
    guests = [p for p in persons if p.role == "guest"]
    free = [c for c in range(k) if out[c] is None]
    if len(guests) == 1 and guests[0].name not in used and len(free) == 1:
        out[free[0]] = SpeakerName(guests[0].name, "guest", "only-guest")
    return [o or SpeakerName(f"Speaker {c + 1}", None, "none") for c, o in enumerate(out)]


def update_prints(prints: list[VoicePrint], centroids: np.ndarray, names: list[SpeakerName],
                  talk_sec: list[float]) -> list[VoicePrint]:
    """The feed's prints with this episode's named voices folded in (a running mean weighted by speech time)."""
    by_name = {p.name: p for p in prints}
    for vec, who, sec in zip(centroids, names, talk_sec):
        if who.source == "none" or sec <= 0:
            continue
        old = by_name.get(who.name)
        if old is None:
            by_name[who.name] = VoicePrint(who.name, who.role, [round(float(x), 6) for x in vec], round(sec, 3), 1)
            continue
        w = min(old.weight_sec, PRINT_MAX_WEIGHT_SEC)
        mixed = old.array() * w + np.asarray(vec) * sec
        mixed /= np.linalg.norm(mixed) + 1e-12
        by_name[who.name] = VoicePrint(who.name, old.role or who.role, [round(float(x), 6) for x in mixed],
                                       round(old.weight_sec + sec, 3), old.episodes + 1)
    return list(by_name.values())
