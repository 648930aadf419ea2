"""trim() on realistic inputs: large reductions, and what matters survives."""

from __future__ import annotations

import json

import pytest

from fixtures.realistic import (
    FAILING_ERROR,
    FAILING_TEST,
    SUMMARY_LINE,
    api_page,
    ci_log,
    long_markdown,
    wide_csv,
)
from offload.trim.content import TrimResult, trim


@pytest.fixture(scope="module")
def page() -> str:
    return api_page()


@pytest.fixture(scope="module")
def log() -> str:
    return ci_log()


def _fits(r: TrimResult, max_tokens: int) -> None:
    assert r.tokens_out <= max_tokens
    assert len(r.text) <= 4 * max_tokens


def test_api_page_default_trim_keeps_structure_and_next_link(page: str) -> None:
    r = trim(page)
    assert r.kind == "json"
    _fits(r, 800)
    assert r.tokens_out <= r.tokens_in * 0.01
    out = json.loads(r.text)  # still valid JSON
    assert out["links"]["next"] == "https://api.example.com/v2/orders?page=4&per_page=500"
    assert out["meta"]["total"] == 12873
    assert out["data"][0]["id"] == "ord_0300000"
    assert isinstance(out["data"][-1], str) and "more items" in out["data"][-1]
    assert "phone" not in out["data"][0]["customer"]  # nulls dropped
    assert any("of 500 items" in n for n in r.removed)
    assert any("null/empty" in n for n in r.removed)


def test_api_page_dotted_fields(page: str) -> None:
    r = trim(page, fields=["data[].id", "data[].customer.email", "links.next"], max_tokens=2000)
    _fits(r, 2000)
    assert r.tokens_out <= r.tokens_in * 0.10
    out = json.loads(r.text)
    assert set(out) == {"data", "links"}
    assert out["links"] == {"next": "https://api.example.com/v2/orders?page=4&per_page=500"}
    first = out["data"][0]
    assert first == {"id": "ord_0300000", "customer": {"email": "alan.thompson0@example.com"}}
    shown = [d for d in out["data"] if isinstance(d, dict)]
    assert len(shown) >= 20  # small records: many fit


def test_api_page_jmespath_filter_keeps_every_match(page: str) -> None:
    all_ids = [d["id"] for d in json.loads(page)["data"] if d["status"] == "refunded"]
    r = trim(page, fields="data[?status=='refunded'].id", max_tokens=2000)
    assert json.loads(r.text) == all_ids
    assert r.tokens_out <= r.tokens_in * 0.05


def test_api_page_query_keeps_matching_records_whole(page: str) -> None:
    r = trim(page, query="Reykjavik refunded", max_tokens=1500)
    assert r.query_answered is True
    out = json.loads(r.text)
    records = [d for d in out["data"] if isinstance(d, dict)]
    assert records and all(
        d["status"] == "refunded" or d["customer"]["address"]["city"] == "Reykjavik" for d in records
    )
    assert any("not matching the query" in n for n in r.removed)


def test_api_page_query_with_no_match_reports_it(page: str) -> None:
    r = trim(page, query="Timbuktu")
    assert r.query_answered is False
    assert json.loads(r.text)["links"]["next"].endswith("page=4&per_page=500")


def test_ci_log_keeps_failure_error_and_summary(log: str) -> None:
    r = trim(log)
    assert r.kind == "log"
    _fits(r, 800)
    assert r.tokens_out <= r.tokens_in * 0.01
    assert FAILING_TEST in r.text
    assert FAILING_ERROR in r.text
    assert SUMMARY_LINE in r.text
    assert "Process completed with exit code 1." in r.text
    # The stack trace keeps our own frames and drops the site-packages / stdlib ones.
    assert "billing/rounding.py" in r.text and "billing/invoice.py" in r.text
    assert "pluggy/_hooks.py" not in r.text and "decimal.py" not in r.text
    assert "RoundingMismatch: 10.01 != 10.00" in r.text
    assert any("repeated lines" in n for n in r.removed)


def test_ci_log_survives_a_tight_budget(log: str) -> None:
    r = trim(log, max_tokens=200)
    _fits(r, 200)
    assert SUMMARY_LINE in r.text
    assert FAILING_TEST in r.text


def test_ci_log_repeats_are_counted(log: str) -> None:
    r = trim(log, query="heartbeat", max_tokens=300)
    beats = [ln for ln in r.text.splitlines() if "heartbeat" in ln]
    assert len(beats) == 1  # 1,151 lines equal up to numbers fold into one, with the count
    assert beats[0].endswith(f"[×{log.count('heartbeat'):,} similar]")


def test_ci_log_query(log: str) -> None:
    r = trim(log, query="DeprecationWarning", max_tokens=300)
    assert r.query_answered is True
    assert "DeprecationWarning: old API" in r.text


def test_wide_csv_columns_and_rows() -> None:
    table = wide_csv()
    r = trim(table, fields="id, email, plan")
    assert r.kind == "csv"
    _fits(r, 800)
    assert r.tokens_out <= r.tokens_in * 0.10
    lines = r.text.splitlines()
    assert lines[0] == "id,email,plan"
    assert lines[1].startswith("acct_00000,")
    assert lines[-1].startswith("[… ") and "lines cut" in lines[-1]
    assert any("of 2,000 rows" in n for n in r.removed)


def test_wide_csv_query_selects_rows_and_keeps_header() -> None:
    r = trim(wide_csv(), query="Iceland", fields=["id", "country", "customer_name"])
    assert r.query_answered is True
    header, *rows = [ln for ln in r.text.splitlines() if not ln.startswith("[…")]
    assert header == "id,country,customer_name"
    assert rows and all(",Iceland," in row for row in rows)
    assert '"Lovelace, Ada"' in r.text or any('"' in row for row in rows)  # quoted cells stay quoted


def test_markdown_query_keeps_the_section_with_its_headings() -> None:
    doc = long_markdown()
    r = trim(doc, query='"rate limits"', max_tokens=400)
    assert r.kind == "markdown"
    assert r.query_answered is True
    assert r.tokens_out <= r.tokens_in * 0.05
    assert "### 9.7 Rate limits and retries" in r.text
    assert "honours the retry-after header" in r.text
    assert "## 9. Troubleshooting" in r.text
    assert r.text.index("## 9. Troubleshooting") < r.text.index("### 9.7 Rate limits")


def test_markdown_without_query_is_outline_head_and_tail() -> None:
    doc = long_markdown()
    r = trim(doc, max_tokens=600)
    _fits(r, 600)
    assert r.tokens_out <= r.tokens_in * 0.10
    assert r.text.startswith("# offload operator guide")
    for top in ("## 1. Installation", "## 6. Caching", "## 12. Testing"):
        assert top in r.text
    assert "# a shell comment, not a heading" not in r.text.split("\n[")[0]
    assert "lines cut …]" in r.text
    last_line = doc.rstrip("\n").splitlines()[-1]
    assert r.text.rstrip("\n").endswith(last_line)
