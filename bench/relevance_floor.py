"""The relevance floor of ``podrun search --meaning``: cosine similarities of questions that an archive answers
and of questions it does not, on the demo's nine transcripts and the test suite's five topic episodes.

Not a test. Run from the repository root: ``.venv/bin/python bench/relevance_floor.py``. For each question
that one episode answers: the best similarity of that episode's passages (and whether it ranks first); for
each question no episode answers: the best similarity of any passage. The floor (``MEANING_FLOOR`` in
archive/meaning.py) lies between the two groups. Writes bench/out/relevance_floor.json.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import harness  # noqa: E402  (bench/: paths)

from podinsight_dagster.archive.index import EpisodeDoc, TranscriptIndex  # noqa: E402
from tests.chapters.synthetic import TOPICS  # noqa: E402

TEXTS = harness.CONTENT / "texts"
ANSWERED = {  # question -> the episode (partition key) that answers it
    "why do we need sleep": "science-weekly/ep1",
    "what happens in the brain at night": "science-weekly/ep1",
    "how far away are the stars": "science-weekly/ep2",
    "speed of light": "science-weekly/ep2",
    "germs and microbes": "science-weekly/ep3",
    "how did ancient Rome grow": "history-hour/ep1",
    "life of sailors on long sea voyages": "history-hour/ep2",
    "how were books made before printing": "history-hour/ep3",
    "why do data pipelines fail": "tech-talk/ep1",
    "writing good unit tests": "tech-talk/ep2",
    "how computers turn speech into text": "tech-talk/ep3",
    "Which insects make something sweet that we can eat?": "show/beekeeping",
    "How do I borrow money to buy a house?": "show/mortgages",
    "Looking at planets from my garden at night": "show/telescopes",
    "preparing for a long distance race": "show/marathon",
    "baking a loaf at home": "show/sourdough",
}
UNANSWERED = [
    "how to change a car tyre", "best recipes for vegan curry", "football transfer rumours",
    "income tax deductions for freelancers", "how to knit a scarf", "volcano eruptions in Iceland",
    "learning to play the guitar", "wedding dress fashion trends", "fixing a leaking kitchen tap",
    "the rules of cricket",
]


def docs() -> list[EpisodeDoc]:
    out = []
    for path in sorted(TEXTS.glob("*/ep*.txt")):
        sentences = [s for s in re.split(r"(?<=[.!?])\s+", path.read_text().strip()) if s]
        segs = [{"text": s, "start_sec": 5.0 * i, "end_sec": 5.0 * i + 5} for i, s in enumerate(sentences)]
        pk = f"{path.parent.name}/{path.stem}"
        out.append(EpisodeDoc(pk, path.parent.name, path.stem, None, None, None, None, None, segs))
    for topic, lines in TOPICS.items():
        segs = [{"text": t, "start_sec": 10.0 * i, "end_sec": 10.0 * i + 9} for i, t in enumerate(lines)]
        out.append(EpisodeDoc(f"show/{topic}", "show", topic, None, None, None, None, None, segs))
    return out


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        index = TranscriptIndex(Path(tmp) / "index.sqlite")
        index.index(docs())
        answered = []
        for question, pk in ANSWERED.items():
            ranking = index.meaning_ranking(question, depth=10_000)
            own = max(s for r, s in ranking if index.conn.execute(
                "SELECT partition_key FROM episodes WHERE id = ?", (r >> 20,)).fetchone()[0] == pk)
            first = index.conn.execute("SELECT partition_key FROM episodes WHERE id = ?",
                                       (ranking[0][0] >> 20,)).fetchone()[0]
            answered.append({"question": question, "episode": pk, "best": round(own, 3), "first": first == pk})
        unanswered = [{"question": q, "best": round(index.meaning_ranking(q, depth=1)[0][1], 3)} for q in UNANSWERED]
        index.close()
    result = {"answered": answered, "unanswered": unanswered,
              "answered_min": min(a["best"] for a in answered), "unanswered_max": max(u["best"] for u in unanswered)}
    out = harness.OUT
    out.mkdir(parents=True, exist_ok=True)
    (out / "relevance_floor.json").write_text(json.dumps(result, indent=2))
    for a in answered:
        print(f"answered   {a['best']:.3f} {'first' if a['first'] else 'NOT FIRST'}  {a['question']}")
    for u in unanswered:
        print(f"unanswered {u['best']:.3f}  {u['question']}")
    print(f"answered min {result['answered_min']}, unanswered max {result['unanswered_max']}")


if __name__ == "__main__":
    main()
