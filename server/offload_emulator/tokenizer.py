"""Deterministic stand-in tokenizer shared by count_tokens and usage.

Rule (stable; other modules and tests rely on it):

* Text is split by the regex ``\\s?(?:\\w{1,4}|[^\\w\\s])|\\s+`` (Unicode ``\\w``/``\\s``):
  a run of up to 4 word characters, or one punctuation/symbol character, each
  optionally carrying ONE leading whitespace character; any other whitespace run is
  a token of its own. Every character belongs to exactly one token.
  ``count_text(text)`` is the number of pieces.
* Because each piece holds at least one character and every character is at least one
  UTF-8 byte, ``count_text(s) <= len(s.encode())`` always.
* A request costs: the sum of its blocks' tokens (text blocks by their text; tools and
  non-text blocks by the canonical JSON of the block without ``cache_control``)
  + ``MESSAGE_OVERHEAD`` (4) per message and for a system prompt when present
  + ``REQUEST_OVERHEAD`` (8) once.

The real tokenizer is not public; what matters for offload is that the count is
deterministic, never exceeds the byte count, and that count_tokens and usage agree.
"""

from __future__ import annotations

import re

MESSAGE_OVERHEAD = 4
REQUEST_OVERHEAD = 8

_PIECE = re.compile(r"\s?(?:\w{1,4}|[^\w\s])|\s+")


def pieces(text: str) -> list[str]:
    """The token pieces of ``text``; ``"".join(pieces(t)) == t``."""
    return _PIECE.findall(text)


def count_text(text: str) -> int:
    return sum(1 for _ in _PIECE.finditer(text))


def truncate(text: str, max_tokens: int) -> str:
    """The longest prefix of ``text`` holding at most ``max_tokens`` tokens."""
    if max_tokens <= 0:
        return ""
    return "".join(pieces(text)[:max_tokens])
