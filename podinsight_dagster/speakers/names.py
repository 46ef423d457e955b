"""Speaker names: feed voice prints, the feed's podcast:person host and guests, the show notes' guest, else ``Speaker N``."""

from __future__ import annotations

import json
import re
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


# ---- the guest named in the show notes -------------------------------------------------------
# Phrases that introduce the one guest of an episode. Conservative on purpose: a wrong name on a
# voice is worse than "Speaker 2". Each is followed by the name (see _name_at).
_INTRO = re.compile(
    r"(?:\b(?:with|featuring)\s+(?:our\s+|my\s+|special\s+)*guests?\b\s*[:,]?"     # with (special) guest X
    r"|\b(?:my|our)\s+(?:special\s+)?guests?(?:\s+(?:today|this\s+week|this\s+time|on\s+this\s+episode))?"
    r"(?:\s+(?:is|was)|\s*[:,\-–—])"                                                # my guest today, X / is X
    r"|^\s*guests?\s*[:\-–—]"                                                       # Guest: X (a line of its own)
    r"|\b(?:an?\s+)?(?:interview|conversation|chat)\s+with"                          # interview with X
    r"|\b(?:talks?|talking|speaks?|speaking|sits?\s+down)\s+with"                     # talks with X
    r"|\b(?:am|are|is|I'm|we're)\s+joined\s+by"                                     # we are joined by X
    r"|\bfeaturing|\bfeat\."                                                          # featuring X
    r"|\b(?:we|I)\s+welcome(?:\s+back)?)"                                               # we welcome (back) X
    r"\s+", re.IGNORECASE | re.MULTILINE)
_HONORIFICS = {"dr", "prof", "professor", "doctor", "mr", "mrs", "ms", "mx", "sir", "dame"}
_PARTICLES = {"de", "da", "del", "della", "di", "du", "van", "von", "der", "den", "le", "la", "bin", "al", "ter"}
# What may follow a name: the end of the line, punctuation, or one of these words ("Jane Doe, who ...",
# "Jane Doe about her book"). Anything else ("New York Times reporters") means it was not a name.
_AFTER = {"about", "on", "who", "from", "of", "to", "at", "in", "for", "as", "discusses", "discussing",
          "explains", "shares", "joins", "returns", "talks", "this", "today", "here"}
# Capitalised words that are not a person's name (a show, a band, a company after "featuring").
_NOT_A_NAME = {"the", "music", "news", "radio", "podcast", "show", "records", "band", "orchestra", "university",
               "institute", "inc", "ltd", "llc", "group", "team", "company", "times", "press", "media", "studios",
               "studio", "network", "foundation", "society", "club", "sessions", "episode", "season", "part",
               "everyone", "all"}
_WORD = re.compile(r"^[^\W\d_]+(?:['’\-][^\W\d_]+)*$")
_TRAILING = ",.;:!?)]}\"”"


def _name_at(text: str, pos: int) -> tuple[str, str] | None:
    """The person's name that starts at ``pos`` (two to four capitalised words on one line, honorific
    dropped) and the text after it; None when what follows is not such a name."""
    line = text[pos:].split("\n", 1)[0]
    tokens = line.split()
    if tokens and tokens[0].rstrip(".").lower() in _HONORIFICS:
        tokens = tokens[1:]
    words: list[str] = []
    ended_by = None           # the token after the name, when the name did not end with punctuation
    for tok in tokens:
        core = tok.rstrip(_TRAILING)
        if len(core) == 1 and core.isupper() and tok == core + "." and words:
            words.append(tok)                     # a middle initial: "Jane Q. Doe"
            continue
        if core.endswith(("'s", "’s")):
            return None                           # "Jane Doe's colleague": someone else
        if core.lower() in _AFTER or core.lower() in ("and", "with"):
            ended_by = tok                        # also in Title Case: "Talking With Jane Doe About Sleep"
            break
        if _WORD.match(core) and (core[0].isupper() or (core in _PARTICLES and words)):
            words.append(core)
            if core != tok:
                break                             # punctuation ends the name
            continue
        ended_by = tok
        break
    if ended_by is not None and ended_by.lower().rstrip(_TRAILING) not in _AFTER \
            and ended_by.lower() not in ("and", "&", "-", "–", "—") and not ended_by.startswith("("):
        return None
    while words and words[-1].lower() in _PARTICLES:
        words.pop()
    capitalised = [w for w in words if w[0].isupper()]
    if not 2 <= len(capitalised) <= 4 or len(words) > 5:
        return None
    if any(w.lower() in _NOT_A_NAME for w in words) or any(w.isupper() and len(w) > 2 for w in words):
        return None   # a word of an organisation, or an acronym (NASA, BBC)
    name = " ".join(words)
    return name, line[line.find(words[-1], line.find(words[0])) + len(words[-1]):]


def guest_from_show_notes(text: str | None) -> str | None:
    """The one guest the show notes name (``with guest Jane Doe``, ``my guest today, Jane Doe``,
    ``Interview with Jane Doe``, ``featuring ...``), else None.

    None as well when they name several people (``with guests A and B``) or the phrase is not
    followed by a person's name as such (two to four capitalised words, then the end of the
    phrase): whose voice is whose cannot be decided then.
    """
    if not text:
        return None
    found: list[str] = []
    for intro in _INTRO.finditer(text):
        hit = _name_at(text, intro.end())
        if hit is None:
            continue
        name, rest = hit
        clause = re.split(r"[.!?;](?:\s|$)", rest, maxsplit=1)[0]
        if re.match(r"\s*,?\s*(?:and|&)\s+[A-Z]", rest) or (
                clause.lstrip().startswith(",") and re.search(r"\s(?:and|&)\s+(?:Dr\.?\s+)?[A-Z]", clause)):
            return None   # "with guests Jane Doe and John Roe", "Jane Doe, John Roe and Ann Poe": several
        if name not in found:
            found.append(name)
    return found[0] if len(found) == 1 else None


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
    source: str             # voiceprint, intro (the host speaks first), only-guest, show-notes, publisher or none


def name_speakers(centroids: np.ndarray, first_cluster: int | None, persons: list[Person],
                  prints: list[VoicePrint], notes_guest: str | None = None) -> list[SpeakerName]:
    """A name per cluster.

    1. A cluster whose voice matches one of the feed's prints (each print and cluster at most
       once, best matches first) is that person.
    2. With one host listed and not yet found, the cluster that speaks first (the intro) is the host.
    3. With one guest listed and one cluster left unnamed, that cluster is the guest.
    4. With no guest listed, the guest the show notes name (``notes_guest``, see
       ``guest_from_show_notes``) is the one unnamed cluster other than the host's (the cluster
       named as host, else the one that speaks first), when there is exactly one.
    5. Anything else: ``Speaker N`` (N in order of first speech).
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
    if notes_guest and not guests and notes_guest not in used | {p.name for p in persons}:
        named_host = [c for c in range(k) if out[c] is not None and out[c].role in ("host", "co-host")]
        host = named_host[0] if len(named_host) == 1 else first_cluster
        free = [c for c in range(k) if out[c] is None and c != host]
        if len(free) == 1:
            out[free[0]] = SpeakerName(notes_guest, "guest", "show-notes")
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
