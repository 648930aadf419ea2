"""The deterministic `query` filter shared by every trimmer: terms, phrases, matching.

A query is a handful of case-insensitive terms; a "quoted phrase" stays one term. Filler words
are dropped so that "why did test_login fail" filters on `test_login` and `fail`, not on "did".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN = re.compile(r'"([^"]+)"|(\S+)')
_STOPWORDS = frozenset(
    """
    a an and are as at be by did do does for from how in is it its of on or show
    the this to was were what when where which who why with find get give me list all any
    """.split()  # noqa: SIM905 - a word list reads better as prose
)


@dataclass(frozen=True)
class Query:
    terms: tuple[str, ...]

    def score(self, text: str) -> int:
        """How many distinct terms occur in `text` (case-insensitive)."""
        low = text.lower()
        return sum(1 for t in self.terms if t in low)

    def hits(self, text: str) -> bool:
        low = text.lower()
        return any(t in low for t in self.terms)


def parse_query(query: str | None) -> Query | None:
    """Split a query into terms; None when there is nothing to filter on."""
    if query is None or not query.strip():
        return None
    phrases: list[str] = []
    words: list[str] = []
    for m in _TOKEN.finditer(query):
        if m.group(1) is not None:
            if m.group(1).strip():
                phrases.append(m.group(1).strip().lower())
        else:
            word = m.group(2).strip("\"'.,;:!?()[]{}").lower()
            if word:
                words.append(word)
    kept = [w for w in words if w not in _STOPWORDS] or words
    terms = tuple(dict.fromkeys(phrases + kept))  # de-duplicated, order kept
    return Query(terms) if terms else None
