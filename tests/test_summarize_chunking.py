"""Chunk planning (pure) and the summarize prompt parts that must stay byte-identical."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from offload.core.tokens import approx_tokens
from offload.services.summarize import chunk_prompt, instructions, part_target
from offload.trim.chunking import plan, render, split


def paragraphs(n: int, words: int = 60) -> str:
    return "\n\n".join(f"Paragraph {i}: " + " ".join(f"word{j}" for j in range(words)) for i in range(n))


def test_small_input_is_one_chunk_with_its_label() -> None:
    chunks = split([("a.md", "hello\n")], 1000)
    assert chunks == ["=== a.md ===\nhello"]


def test_chunks_are_balanced_and_cut_on_paragraph_boundaries() -> None:
    text = paragraphs(60)
    total = approx_tokens(text)
    chunks = plan([(None, text)], total // 2 + 10)
    assert len(chunks) in (2, 3)
    sizes = [sum(approx_tokens(p.text) for p in c) for c in chunks]
    assert max(sizes) <= total // 2 + 10
    for c in chunks:
        assert c[0].text.startswith("Paragraph ")  # every chunk starts at a paragraph


def test_a_document_spanning_chunks_is_labelled_continued() -> None:
    docs = [("logs/a.log", paragraphs(30)), ("logs/b.log", paragraphs(30))]
    chunks = plan(docs, approx_tokens(docs[0][1]) // 2)
    rendered = [render(c) for c in chunks]
    assert rendered[0].startswith("=== logs/a.log ===\n")
    assert any(r.startswith("=== logs/a.log (continued) ===") for r in rendered[1:])
    assert any("=== logs/b.log ===" in r for r in rendered)


def test_an_overlong_line_is_cut_hard() -> None:
    chunks = plan([(None, "x" * 10_000)], 500)
    assert all(approx_tokens(p.text) <= 500 for c in chunks for p in c)
    assert "".join(p.text for c in chunks for p in c) == "x" * 10_000


@given(
    st.lists(st.tuples(st.sampled_from([None, "f.txt", "g.md"]), st.text(max_size=3000)), max_size=4),
    st.integers(min_value=20, max_value=2000),
)
def test_plan_keeps_every_character_in_order_within_the_limit(docs: list[tuple[str | None, str]], limit: int) -> None:
    chunks = plan(docs, limit)
    assert "".join(p.text for c in chunks for p in c) == "".join(t for _, t in docs)
    assert all(sum(approx_tokens(p.text) for p in c) <= limit + len(c) for c in chunks)


def test_shared_prefix_is_identical_for_every_chunk_and_has_no_chunk_text() -> None:
    system = instructions("why did checkout fail", ("E1234", "svc-a"))
    assert system == instructions("why did checkout fail", ("E1234", "svc-a"))
    assert "- E1234\n- svc-a" in system and "why did checkout fail" in system
    first, second = chunk_prompt("AAA", 1, 3, 200), chunk_prompt("BBB", 2, 3, 200)
    assert "AAA" in first and "AAA" not in system and "Part 2 of 3" in second


def test_part_target_gives_the_merge_about_twice_the_final_length() -> None:
    assert part_target(600, 1) == 600
    assert part_target(600, 4) == 300
    assert part_target(600, 40) == 150  # floor: a part summary below this says nothing
    assert part_target(100, 2) == 100  # never above the final target
