"""Must-survive identifiers: extraction from realistic text, presence checks, the restored block."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from offload.trim.identifiers import (
    MAX_RESTORED,
    Identifier,
    extract,
    missing,
    present,
    restore,
)

INCIDENT = """\
# Incident 2291: checkout latency

The p99 went from 250 ms to 3.2 s after deploy; the pod used 3.2 GB of RAM and the bill rose by $40.
Errors: E1234 from the payment client, HTTP 503 from the gateway, then 502 Bad Gateway, and
ECONNREFUSED / ENOENT in the worker (ValueError in server/payments/client.py:88).
Runbook: https://wiki.example.com/runbooks/checkout?id=7. Also see ./scripts/rollback.sh and
/etc/nginx/conf.d/checkout.conf and config.yaml. Dates like 2025/01/02 and and/or, I/O, km/h are prose.
SHA256 and ISO8601 are not error codes. The job ended with exit code 137.

- We decided to pin the payment SDK to 4.2.
- Constraint: the primary database must not be restarted during business hours.
- Do not retry more than 3 times.
Some ordinary sentence that says nothing binding.
"""


def kinds(items: list[Identifier]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for i in items:
        out.setdefault(i.kind, []).append(i.text)
    return out


def test_extracts_each_kind_from_an_incident_note() -> None:
    got = kinds(extract(INCIDENT, keep=["checkout-api", "retry_budget"]))
    assert got["keep"] == ["checkout-api", "retry_budget"]
    assert got["constraint"] == [
        "We decided to pin the payment SDK to 4.2.",
        "Constraint: the primary database must not be restarted during business hours.",
        "Do not retry more than 3 times.",
    ]
    assert {"E1234", "HTTP 503", "502 Bad Gateway", "ECONNREFUSED", "ENOENT", "ValueError", "exit code 137"} <= set(
        got["error"]
    )
    assert "SHA256" not in got["error"] and "ISO8601" not in got["error"]
    assert got["url"] == ["https://wiki.example.com/runbooks/checkout?id=7"]
    assert set(got["path"]) == {
        "server/payments/client.py:88",
        "./scripts/rollback.sh",
        "/etc/nginx/conf.d/checkout.conf",
        "config.yaml",
    }
    assert {"250 ms", "3.2 s", "3.2 GB", "$40"} <= set(got["number"])


def test_paths_inside_urls_are_not_listed_twice() -> None:
    got = kinds(extract("see https://github.com/org/repo/blob/main/src/app.py for details"))
    assert got["url"] == ["https://github.com/org/repo/blob/main/src/app.py"]
    assert "path" not in got


def test_keep_items_are_listed_even_when_absent_from_the_input() -> None:
    assert extract("nothing here", keep=["INC-42"]) == [Identifier("keep", "INC-42")]


def test_presence_ignores_whitespace_but_not_content() -> None:
    assert present(Identifier("number", "250 ms"), "latency was 250ms at p99")
    assert not present(Identifier("number", "250 ms"), "latency was 300 ms")
    assert present(Identifier("error", "E1234"), "client raised E1234.")


def test_a_reworded_constraint_counts_only_with_all_its_words_in_one_sentence() -> None:
    c = Identifier("constraint", "Do not retry more than 3 times.")
    assert present(c, "Retries: do not retry more than 3 times.")
    assert present(c, "Never exceed: more than 3 times you must not retry — do not.")
    # The negation is a significant word: dropping it is a different rule.
    assert not present(c, "Retry more than 3 times.")
    # Words scattered over different sentences do not count.
    assert not present(c, "Do not panic. Retry once more. Three times lucky.")


def test_missing_and_restore_put_keep_first_and_skip_contained_items() -> None:
    items = extract(INCIDENT, keep=["checkout-api"])
    summary = "Checkout latency rose to 3.2 s; E1234 and HTTP 503 seen. We decided to pin the payment SDK to 4.2."
    lost = missing(items, summary)
    lost_texts = {i.text for i in lost}
    assert "E1234" not in lost_texts and "3.2 s" not in lost_texts
    assert {"checkout-api", "ENOENT", "250 ms", "server/payments/client.py:88"} <= lost_texts
    block = restore(lost)
    lines = block.text.splitlines()
    assert lines[0] == "Kept verbatim:"
    assert lines[1] == "- checkout-api"
    assert lines[2].startswith("- Constraint: the primary database must not")
    assert "- server/payments/client.py:88" in lines
    assert block.omitted == 0


def test_restore_caps_other_kinds_but_never_keep_items() -> None:
    keep = [f"keep-{i}" for i in range(60)]
    paths = [Identifier("path", f"src/module_{i}/file_{i}.py") for i in range(200)]
    block = restore([*(Identifier("keep", k) for k in keep), *paths])
    assert all(f"- {k}" in block.text.splitlines() for k in keep)
    restored_paths = [i for i in block.restored if i.kind == "path"]
    assert len(restored_paths) == MAX_RESTORED
    assert block.omitted == 200 - MAX_RESTORED
    assert f"(+{block.omitted} more identifiers" in block.text


def test_nothing_missing_gives_an_empty_block() -> None:
    assert restore([]).text == ""


@given(st.text(max_size=400), st.lists(st.text(min_size=1, max_size=12), max_size=5))
def test_every_identifier_is_present_in_its_own_input_and_restoring_all_keeps_them(text: str, keep: list[str]) -> None:
    items = extract(text, keep)
    assert all(i.text in text for i in items if i.kind != "keep")
    if not any(k.strip() for k in keep):
        # The restored block of everything missing from an empty summary makes every item present.
        block = restore(missing(items, ""))
        assert missing([i for i in items if i in block.restored], block.text) == []


@pytest.mark.parametrize(
    "prose",
    ["and/or", "I/O bound", "km/h", "50/50 split", "2024/01/02", "version 1.2.3"],
)
def test_prose_is_not_taken_for_paths(prose: str) -> None:
    assert "path" not in kinds(extract(prose))
