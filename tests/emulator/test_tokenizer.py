from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from offload_emulator import tokenizer


@given(st.text())
def test_tokens_never_exceed_utf8_bytes(text: str) -> None:
    assert tokenizer.count_text(text) <= len(text.encode())


@given(st.text())
def test_pieces_cover_the_text_exactly(text: str) -> None:
    assert "".join(tokenizer.pieces(text)) == text
    assert len(tokenizer.pieces(text)) == tokenizer.count_text(text)


@given(st.text(), st.integers(min_value=0, max_value=50))
def test_truncate_respects_the_budget(text: str, n: int) -> None:
    cut = tokenizer.truncate(text, n)
    assert text.startswith(cut)
    assert tokenizer.count_text(cut) <= n


def test_rule_is_stable() -> None:
    # Pinned examples: changing the rule silently would shift every recorded usage.
    assert tokenizer.count_text("") == 0
    assert tokenizer.pieces("Hello, world!") == ["Hell", "o", ",", " worl", "d", "!"]
    assert tokenizer.count_text("a  b\n\n") == 4
    assert tokenizer.count_text("héllo wörld") == 4
