"""Identifiers a summary must not lose, found deterministically, checked, and restored. Pure.

A model asked to summarize paraphrases; a paraphrase of `E1234`, `250 ms` or
`server/app.py:42` is useless to the agent that acts on the summary. So the things an agent
greps for, quotes back or decides on are extracted from the input with regexes, looked for in
the output, and any the model dropped are appended verbatim by `restore`.

Kinds, in the order they are restored when the list must be capped (`keep` is never capped):
keep, constraint (the user's "must …", "do not …", "decided …" sentences), error (codes like
E1234, HTTP statuses, errno names, exception names), path, url, number (with a unit).
"""

from __future__ import annotations

import errno
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

KINDS = ("keep", "constraint", "error", "path", "url", "number")
MAX_RESTORED = 25  # non-`keep` items appended at most; a longer list would defeat the summary
MAX_RESTORED_CHARS = 1600  # ~400 tokens of restored non-`keep` items
MAX_CONSTRAINT_CHARS = 300  # a longer "sentence" is a paragraph, not a stated constraint
MAX_CONTAINMENT_SCANS = 300  # "is it inside a longer item" checks per restore; the rest count as omitted

_URL = re.compile(r"\b(?:https?|ftp|file|s3|gs)://[^\s<>\"'`)\]}]+")
_TRAILING = ".,;:!?'\""
_EXT = (
    r"py|pyi|js|mjs|cjs|ts|tsx|jsx|go|rs|java|kt|c|h|cc|cpp|hpp|rb|php|cs|swift|scala|md|rst|txt|"
    r"json|jsonl|ya?ml|toml|ini|cfg|conf|env|sh|bash|zsh|ps1|sql|html?|css|scss|lock|log|csv|tsv|"
    r"xml|proto|gradle|tf|ipynb|vue|svelte|lua|pl|ex|exs|erl|hs|ml|dart|zig"
)
# A path needs a slash plus an extension, or an explicit anchor (/, ~/, ./, ../), or three
# segments: plain "a/b" is too often prose ("and/or", "I/O", "km/h").
_SEG = r"[\w.@+-]+"
_LINE = r"(?::\d+(?::\d+)?)?"
_PATH = re.compile(
    rf"(?<![\w/.:@+-])(?:"
    rf"(?:~|\.{{1,2}})?/(?:{_SEG}/)*{_SEG}"  # anchored: /etc/x, ~/x, ./x, ../x
    rf"|(?:{_SEG}/)+{_SEG}\.(?:{_EXT})\b"  # relative with an extension: src/app.py
    rf"|(?:{_SEG}/){{2,}}{_SEG}"  # three or more segments: a/b/c
    rf"|[\w-][\w.-]*\.(?:{_EXT})\b"  # a bare file name: app.py
    rf"|(?:Dockerfile|Makefile|Jenkinsfile)\b"
    rf"|[A-Za-z]:\\(?:[^\\\s]+\\)*[^\\\s]+"  # C:\dir\file
    rf"){_LINE}"
)
_ERRNO_NAMES = sorted(set(errno.errorcode.values()), key=len, reverse=True)
_ERRORS = re.compile(
    r"\bCVE-\d{4}-\d{4,}\b"
    r"|\b[A-Z]{2,5}-\d{3,5}\b"  # ORA-00942
    r"|\b[A-Z]{1,4}\d{3,5}\b"  # E1234, TS2304, W0612
    r"|\bHTTP(?:/\d(?:\.\d)?)?\s+[1-5]\d\d\b"
    r"|\b(?:status(?:\s+code)?|exit\s+(?:code|status))[:=\s]+\d{1,3}\b"
    r"|\b[1-5]\d\d\s+(?:Bad Request|Unauthorized|Forbidden|Not Found|Method Not Allowed|Conflict|Gone"
    r"|Payload Too Large|Too Many Requests|Internal Server Error|Bad Gateway|Service Unavailable"
    r"|Gateway Timeout)\b"
    r"|\b(?:" + "|".join(_ERRNO_NAMES) + r")\b"
    r"|\b[A-Z][A-Za-z0-9]*(?:Error|Exception|Fault)\b"
)
# Upper-case-plus-digits words that are names, not error codes.
_NOT_CODES = re.compile(r"^(?:SHA|AES|ISO|UTF|MD|RSA|DES|HMAC|IPV|X|A|B)\d+$")
_UNITS = (
    r"milliseconds?|microseconds?|nanoseconds?|seconds?|minutes?|hours?|days?|weeks?|months?|years?|"
    r"msecs?|secs?|mins?|hrs?|ms|µs|us|ns|s|h|d|"
    r"[KMGTP]iB|[kKMGTP]B|bytes?|B|"
    r"req/s|rps|qps|ops/s|tokens?|GHz|MHz|Gbps|Mbps|°C|°F|USD|EUR|GBP|k|M|x|%"
)
_NUMBER = re.compile(
    r"(?<![\w.$])(?:\$\d[\d,]*(?:\.\d+)?(?:\s?(?:[kKMB]|million|billion|thousand)\b)?"
    rf"|\d[\d,]*(?:\.\d+)?\s?(?:{_UNITS})(?![\w/]))"
)
_CONSTRAINT = re.compile(
    r"\b(?:must|mustn't|do not|don't|never|shall|decided|decision|constraint|requirement|required to|"
    r"we will|we'll|agreed)\b",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(\[])")
_BULLET = re.compile(r"^\s*(?:[-*+>•]|\d+[.)])\s+")
_LETTER = re.compile(r"[^\W\d_]")
_WORD = re.compile(r"[\w'-]+")
_STOP = frozenset(
    [
        "the",
        "and",
        "for",
        "with",
        "that",
        "this",
        "from",
        "into",
        "are",
        "was",
        "were",
        "has",
        "have",
        "had",
        "its",
        "our",
        "your",
        "their",
        "but",
        "can",
        "all",
        "any",
        "who",
        "what",
        "when",
        "which",
        "than",
        "then",
        "them",
        "they",
        "there",
        "here",
        "also",
        "only",
        "such",
    ]
)


@dataclass(frozen=True)
class Identifier:
    kind: str  # one of KINDS
    text: str


def extract(text: str, keep: Sequence[str] = ()) -> list[Identifier]:
    """Everything in `text` a summary must keep, de-duplicated, in first-seen order per kind.

    `keep` items come first and are included whether or not they occur in `text`: the caller
    said they must survive.
    """
    found: dict[str, list[str]] = {k: [] for k in KINDS}
    found["keep"] = [k for k in dict.fromkeys(keep) if k.strip()]
    found["constraint"] = _constraints(text)
    urls = [_strip(m.group()) for m in _URL.finditer(text)]
    found["url"] = urls
    # Paths inside URLs are already covered by the URL; blank the URLs out before looking.
    rest = _URL.sub(" ", text) if urls else text
    # A path with no letter is a date or a fraction (2024/01/02, 1/2/3).
    found["path"] = [p for p in (_strip(m.group()) for m in _PATH.finditer(rest)) if _LETTER.search(p)]
    found["error"] = [m.group() for m in _ERRORS.finditer(rest) if not _NOT_CODES.match(m.group())]
    found["number"] = [m.group() for m in _NUMBER.finditer(rest)]
    seen: set[str] = set()
    out: list[Identifier] = []
    for kind in KINDS:
        for item in found[kind]:
            if item and item not in seen:
                seen.add(item)
                out.append(Identifier(kind, item))
    return out


def _strip(s: str) -> str:
    return s.rstrip(_TRAILING)


def _constraints(text: str) -> list[str]:
    # Search the whole text once and visit only the lines with a marker: on a large log that
    # is a few lines, where splitting every line first would cost more than all other kinds.
    out: list[str] = []
    pos = 0
    for m in _CONSTRAINT.finditer(text):
        if m.start() < pos:
            continue  # another marker on a line already taken
        start = text.rfind("\n", 0, m.start()) + 1
        end = text.find("\n", m.end())
        pos = len(text) if end < 0 else end
        body = _BULLET.sub("", text[start:pos]).strip()
        for sentence in _SENTENCE_END.split(body):
            sentence = sentence.strip()
            if _CONSTRAINT.search(sentence) and len(sentence) <= MAX_CONSTRAINT_CHARS:
                out.append(sentence)
    return out


def _squash(s: str) -> str:
    return "".join(s.split())


def _words(s: str) -> set[str]:
    return {w for w in _WORD.findall(s.lower()) if len(w) >= 3 and w not in _STOP}


class _Output:
    """An output prepared once for many presence checks (inputs can yield 10^5 identifiers)."""

    def __init__(self, output: str) -> None:
        self.text = output
        self.squashed = _squash(output)
        self._sentences: list[set[str]] | None = None

    @property
    def sentences(self) -> list[set[str]]:
        if self._sentences is None:
            self._sentences = [_words(s) for s in re.split(r"(?<=[.!?;])\s+|\n", self.text)]
        return self._sentences


def _present(item: Identifier, out: _Output) -> bool:
    if item.text in out.text or _squash(item.text) in out.squashed:
        return True
    if item.kind != "constraint":
        return False
    needed = _words(item.text)
    return bool(needed) and any(needed <= words for words in out.sentences)


def present(item: Identifier, output: str) -> bool:
    """Whether `output` still carries `item`.

    Whitespace is ignored (`250ms` keeps `250 ms`). A constraint also counts as kept when one
    sentence of the output holds every significant word of it, so a faithful reordering passes
    while a dropped or weakened one ("must not" lost) does not.
    """
    return _present(item, _Output(output))


def missing(items: Iterable[Identifier], output: str) -> list[Identifier]:
    out = _Output(output)
    return [i for i in items if not _present(i, out)]


def _inside_another(text: str, haystack: str) -> bool:
    """Whether `text` occurs in `haystack` beyond its own entry (entries are distinct, NUL-separated)."""
    first = haystack.find(text)
    return first >= 0 and haystack.find(text, first + 1) >= 0


@dataclass(frozen=True)
class Restored:
    text: str  # the block to append ("" when nothing was missing)
    restored: tuple[Identifier, ...]
    omitted: int  # missing items left out by the cap


def restore(lost: Sequence[Identifier]) -> Restored:
    """The "Kept verbatim:" block for identifiers the model dropped.

    Every `keep` item is restored. Others go in kind order (constraints first: they change what
    the reader may do) up to MAX_RESTORED items and MAX_RESTORED_CHARS; an item contained in a
    longer restored one (`app.py` in `src/app.py:3`) is not listed twice.
    """
    ordered = sorted(lost, key=lambda i: KINDS.index(i.kind))
    # One haystack, items separated by NUL (never inside an item): "is this item inside another"
    # is then one C-speed find, not a Python loop over every other item (that was quadratic:
    # 6,800 long URLs took 16 s). Scans are capped too, so a huge input stays linear.
    haystack = "\0".join(i.text for i in ordered if i.kind != "keep")
    chosen: list[Identifier] = []
    n_others = chars = omitted = scans = 0
    for item in ordered:
        if item.kind != "keep" and n_others >= MAX_RESTORED:
            omitted += 1  # counted without the containment scans below: inputs can be huge
            continue
        if any(item.text in c.text for c in chosen):
            continue
        if item.kind != "keep":
            if chars + len(item.text) > MAX_RESTORED_CHARS or scans >= MAX_CONTAINMENT_SCANS:
                omitted += 1
                continue
            scans += 1
            if _inside_another(item.text, haystack):
                continue  # the longer item that holds it is restored (or counted as omitted)
            chars += len(item.text)
            n_others += 1
        chosen.append(item)
    if not chosen:
        return Restored("", (), omitted)
    lines = ["Kept verbatim:", *(f"- {c.text}" for c in chosen)]
    if omitted:
        lines.append(f"(+{omitted} more identifiers from the input not listed)")
    return Restored("\n".join(lines), tuple(chosen), omitted)


__all__ = ["KINDS", "Identifier", "Restored", "extract", "missing", "present", "restore"]
