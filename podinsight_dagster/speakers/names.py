"""Speaker names, each only with evidence: voice prints, what is said, the show notes, the one voice left; else ``Speaker N``."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field

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


# ---- who is who: evidence ---------------------------------------------------------------------
# A name goes on a voice only with evidence, and speakers.json records it (``Evidence``). Strength of each
# kind when two names claim one voice (or one name two voices): what a person says of themselves beats a
# voice print, which beats being addressed by name by the voice before or after.
STRENGTH = {"self-introduction": 3.0, "voiceprint": 2.0, "welcomed": 1.0, "thanked": 1.0}
# Evidence good enough to teach the feed a voice print. ``one-left`` (the only unnamed voice for the only
# unmatched listed person) and ``opening`` (the voice that opens the show is its one listed host) are
# deductions that hold only when the count of voices is right, the very thing a print must not inherit
# when it is wrong (one voice split in two would teach a second person's name to that voice).
TEACHES_PRINTS = {"self-introduction", "voiceprint", "welcomed", "thanked"}
OPENING_WINDOW_SEC = 90.0   # "welcome to <show>" counts as the host's opening within the episode's first 90 s


@dataclass
class Evidence:
    source: str             # self-introduction, welcomed, thanked, voiceprint, opening, one-left, show-notes
    detail: str             # the words said (a segment's text), the voice print's similarity, ...
    segment: int | None = None


@dataclass
class SpeakerName:
    name: str
    role: str | None        # host, guest, ... when known
    source: str             # the strongest evidence's source (see Evidence), publisher, or none (``Speaker N``)
    evidence: list[Evidence] = field(default_factory=list)

    def teaches_prints(self) -> bool:
        return any(e.source in TEACHES_PRINTS for e in self.evidence)


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w']+", " ", text.lower().replace("’", "'")).split())


def _forms(name: str, word_counts: dict[str, int]) -> list[str]:
    """How a person may be called: the full name, and the first or the last name when no other candidate
    has that word in their name ("welcome, Tom", "thanks, Dr. Haddad")."""
    full = _norm(name)
    words = full.split()
    parts = {words[0], words[-1]} if len(words) > 1 else set()
    return [full] + sorted(w for w in parts if word_counts.get(w) == 1)


# What precedes a name in a self-introduction ("I'm Priya Raman", "my name is Tom", "I'm your host, Alex").
# "This is Tom" is left out: it introduces someone else as often as oneself.
_SELF = r"(?:\bi'?m|\bi am|\bmy name is|\b(?:this is|it's|here's) your (?:co host|host))(?: your (?:co host|host))?"
# A welcome of the next voice ("welcome, Tom", "welcome to the show Tom", "Tom, welcome", "over to you, Tom").
_WELCOME_BEFORE = r"(?:\bwelcome(?: back)?(?: to the (?:show|podcast|program))?|\bover to you|\bjoining (?:me|us)(?: today)? is)"
_WELCOME_AFTER = r"(?:welcome(?: back)?(?: to the (?:show|podcast|program))?)\b"
# Thanks to the voice that just spoke ("thanks, Priya", "thank you so much Tom", "thanks for having me Alex").
_THANKS = r"(?:\bthanks|\bthank you)(?: (?:so|very) much)?(?: for [a-z' ]{1,30}?)?"


# ASR spells names it does not know as it hears them ("Pria Ramen"): a word of the text this close to a word
# of a candidate's name (difflib ratio, same first letter, names of 5 letters or more) is read as that word.
NAME_SPELLING_RATIO = 0.8
NAME_SPELLING_MIN_LEN = 5


def _heard_as_names(text: str, name_words: set[str]) -> str:
    from difflib import SequenceMatcher

    words = text.split()
    for i, w in enumerate(words):
        if w in name_words or len(w) < NAME_SPELLING_MIN_LEN - 1:
            continue
        close = [n for n in name_words if len(n) >= NAME_SPELLING_MIN_LEN and n[0] == w[0]
                 and SequenceMatcher(None, w, n).ratio() >= NAME_SPELLING_RATIO]
        if len(close) == 1:
            words[i] = close[0]
    return " ".join(words)


def _said(texts: list[str], labels: list[int], candidates: list[tuple[str, str | None]]) -> list[tuple[str, int, Evidence]]:
    """(person, cluster, evidence) for every time the words say who speaks: a self-introduction names the
    voice saying it; a welcome names the next voice (the segment after it is another voice's); thanks
    name the voice before (the segment before is another voice's)."""
    firsts: dict[str, int] = {}
    for name, _ in candidates:
        for word in set(_norm(name).split()):
            firsts[word] = firsts.get(word, 0) + 1
    name_words = {w for name, _ in candidates for w in _norm(name).split()}
    norm = [_heard_as_names(_norm(t or ""), name_words) for t in texts]
    out: list[tuple[str, int, Evidence]] = []
    for name, _ in candidates:
        for form in _forms(name, firsts):
            nm = re.escape(form)
            for i, text in enumerate(norm):
                if not text:
                    continue
                # The name may run on ("I'm Priya Raman" matches "Priya" too): count each kind once per segment.
                if re.search(rf"{_SELF} {nm}\b", text):
                    out.append((name, labels[i], Evidence("self-introduction", texts[i].strip(), i)))
                nxt = i + 1 < len(labels) and labels[i + 1] != labels[i]
                if nxt and (re.search(rf"{_WELCOME_BEFORE} {nm}\b", text) or re.search(rf"\b{nm} {_WELCOME_AFTER}", text)):
                    out.append((name, labels[i + 1], Evidence("welcomed", texts[i].strip(), i)))
                if i > 0 and labels[i - 1] != labels[i] and re.search(rf"{_THANKS} {nm}\b", text):
                    out.append((name, labels[i - 1], Evidence("thanked", texts[i].strip(), i)))
    # One hit per (person, cluster, kind, segment): a full and a first name matching the same words are one.
    seen, unique = set(), []
    for name, c, ev in out:
        key = (name, c, ev.source, ev.segment)
        if key not in seen:
            seen.add(key)
            unique.append((name, c, ev))
    return unique


def _opening(texts: list[str], labels: list[int], starts: list[float], show_words: list[str]) -> dict[int, Evidence]:
    """Clusters that open the show early on: "welcome to <show>", "you're listening to <show>", "I'm your host"."""
    show = " ".join(show_words)
    patterns = [r"\b(?:welcome(?: back)? to|you'?re listening to|this is) (?:the )?(?:show|podcast|program)\b",
                r"\bi'?m your (?:co )?host\b", r"\bi am your (?:co )?host\b"]
    if show:
        patterns.append(rf"\b(?:welcome(?: back)? to|you'?re listening to|this is) (?:the )?{re.escape(show)}\b")
    found: dict[int, Evidence] = {}
    for i, (text, start) in enumerate(zip(texts, starts)):
        if start > OPENING_WINDOW_SEC:
            break
        if any(re.search(p, _norm(text or "")) for p in patterns):
            found.setdefault(labels[i], Evidence("opening", (text or "").strip(), i))
    return found


def name_speakers(centroids: np.ndarray, labels: list[int], persons: list[Person], prints: list[VoicePrint],
                  notes_guest: str | None = None, texts: list[str] | None = None,
                  starts: list[float] | None = None, show_words: list[str] | None = None) -> list[SpeakerName]:
    """A name per cluster, each with its evidence (``Speaker N`` without any).

    Candidates are the feed's hosts and guests (``podcast:person``) and the guest the show notes
    name (``notes_guest``); the feed's voice prints name voices heard before.

    1. Evidence for (person, cluster) pairs: a voice-print match of at least ``VOICEPRINT_MATCH``;
       what is said (``_said``): a self-introduction, a welcome before the voice's turn, thanks after
       it, by full name or a first or last name no other candidate shares, as ASR may spell it. Pairs are taken strongest first
       (``STRENGTH`` summed), each person and cluster once.
    2. ``opening``: with exactly one listed host left unnamed, the one cluster that opens the show
       ("welcome to <show>", "I'm your host") within its first 90 s is that host.
    3. ``one-left``: exactly one cluster left unnamed and exactly one candidate left: that candidate.
    A voice print is never taken from ``opening`` or ``one-left`` alone (``TEACHES_PRINTS``).
    """
    k = len(centroids)
    texts = texts or [""] * len(labels)
    starts = starts or [0.0] * len(labels)
    candidates: dict[str, str | None] = {}
    for p in persons:
        if p.role in ("host", "co-host", "guest"):
            candidates.setdefault(p.name, p.role)
    notes_ev = None
    if notes_guest and notes_guest not in candidates:
        candidates[notes_guest] = "guest"
        notes_ev = Evidence("show-notes", notes_guest)
    roles = {p.name: p.role for p in persons}
    evidence: dict[tuple[str, int], list[Evidence]] = {}
    if prints and k:
        mat = np.stack([p.array() for p in prints])
        sim = centroids @ mat.T
        for c in range(k):
            for j, pr in enumerate(prints):
                if sim[c, j] >= VOICEPRINT_MATCH:
                    evidence.setdefault((pr.name, c), []).append(Evidence("voiceprint", f"{float(sim[c, j]):.3f}"))
                    roles.setdefault(pr.name, pr.role)
    for name, c, ev in _said(texts, labels, list(candidates.items())):
        evidence.setdefault((name, c), []).append(ev)

    def strength(evs: list[Evidence]) -> float:
        return sum(STRENGTH.get(e.source, 0.0) for e in evs)

    out: list[SpeakerName | None] = [None] * k
    used: set[str] = set()
    for (name, c), evs in sorted(evidence.items(), key=lambda kv: -strength(kv[1])):
        if out[c] is None and name not in used:
            evs = evs + ([notes_ev] if notes_ev and name == notes_guest else [])
            best = max(evs, key=lambda e: STRENGTH.get(e.source, 0.0))
            out[c] = SpeakerName(name, candidates.get(name) or roles.get(name), best.source, evs)
            used.add(name)
    hosts = [n for n, r in candidates.items() if r in ("host", "co-host")]
    free_hosts = [n for n in hosts if n not in used]
    if len(hosts) == 1 and free_hosts:
        opened = [c for c in _opening(texts, labels, starts, show_words or []) if out[c] is None]
        if len(opened) == 1:
            ev = _opening(texts, labels, starts, show_words or [])[opened[0]]
            out[opened[0]] = SpeakerName(free_hosts[0], candidates[free_hosts[0]], "opening", [ev])
            used.add(free_hosts[0])
    left = [n for n in candidates if n not in used]
    free = [c for c in range(k) if out[c] is None]
    if len(left) == 1 and len(free) == 1:
        evs = [Evidence("one-left", f"the only voice left unnamed for the only listed person left ({left[0]})")]
        out[free[0]] = SpeakerName(left[0], candidates[left[0]], "one-left",
                                   evs + ([notes_ev] if notes_ev and left[0] == notes_guest else []))
    return [o or SpeakerName(f"Speaker {c + 1}", None, "none") for c, o in enumerate(out)]


def update_prints(prints: list[VoicePrint], centroids: np.ndarray, names: list[SpeakerName],
                  talk_sec: list[float]) -> list[VoicePrint]:
    """The feed's prints with this episode's named voices folded in (a running mean weighted by speech time)."""
    by_name = {p.name: p for p in prints}
    for vec, who, sec in zip(centroids, names, talk_sec):
        if not who.teaches_prints() or sec <= 0:
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
