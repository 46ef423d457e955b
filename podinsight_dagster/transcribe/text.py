"""Text normalisation and word error rate, for scoring transcripts against references.

Whisper writes "forty two" as "42" and "one thousand" as "1,000"; references are
usually spelled out. Both sides are lower-cased, stripped of punctuation and have
their numbers spelled out before words are compared.
"""

from __future__ import annotations

import re
import unicodedata

_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
         "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_SCALES = [(10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"), (100, "hundred")]


def number_to_words(n: int) -> str:
    if n < 0:
        return "minus " + number_to_words(-n)
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    for value, name in _SCALES:
        if n >= value:
            head, rest = divmod(n, value)
            return f"{number_to_words(head)} {name}" + ("" if rest == 0 else " " + number_to_words(rest))
    raise AssertionError("unreachable")


def _year_words(n: int) -> str:
    # 1969 is said "nineteen sixty nine", 2005 "two thousand five".
    if 1100 <= n <= 1999 or 2010 <= n <= 2099:
        hi, lo = divmod(n, 100)
        return number_to_words(hi) + " " + ("hundred" if lo == 0 else ("oh " if lo < 10 else "") + number_to_words(lo))
    return number_to_words(n)


def normalize_text(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    text = text.replace("%", " percent ").replace("&", " and ")
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)  # 1,000 -> 1000

    def spell(m: re.Match) -> str:
        whole, frac = m.group(1), m.group(2)
        n = int(whole)
        words = _year_words(n) if len(whole) == 4 and frac is None else number_to_words(n)
        if frac:
            words += " point " + " ".join(_ONES[int(d)] for d in frac)
        return f" {words} "

    text = re.sub(r"(\d+)(?:\.(\d+))?(?:st|nd|rd|th)?", spell, text)
    text = re.sub(r"[-‐–—/]", " ", text)
    text = re.sub(r"[^\w\s']", " ", text)
    text = text.replace("'", "")
    return " ".join(text.split())


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(edit distance in words, reference length) after normalisation."""
    ref = normalize_text(reference).split()
    hyp = normalize_text(hypothesis).split()
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1], len(ref)


def wer(reference: str, hypothesis: str) -> float:
    errors, n = word_errors(reference, hypothesis)
    return errors / n if n else float(errors > 0)


def agreement(a: str, b: str) -> float:
    """How far two transcripts of one episode agree: 1 - WER of ``b`` against ``a``, floored at 0."""
    return max(0.0, 1.0 - wer(a, b))
