"""trim(): kind detection, argument errors, per-kind rules, and properties on arbitrary input."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from offload.core.errors import InputError
from offload.trim import jsondoc
from offload.trim.content import trim
from offload.trim.detect import KINDS, detect
from offload.trim.query import parse_query


@pytest.mark.parametrize(
    ("content", "kind"),
    [
        ('{"a": 1}', "json"),
        ('{"a": 1}\n{"a": 2}\n', "json"),
        ("2025-01-01 10:00:00 INFO start\n2025-01-01 10:00:01 ERROR boom\n", "log"),
        ("tests/a.py::t PASSED\ntests/a.py::u FAILED\n", "log"),
        ("a,b,c\n1,2,3\n4,5,6\n", "csv"),
        ("a\tb\n1\t2\n", "tsv"),
        ("# Title\n\nSome prose.\n\n## Part\n\n- item\n", "markdown"),
        ("Just a sentence.\nAnd another one.\n", "text"),
        ("{not json at all\n", "text"),
    ],
)
def test_detect(content: str, kind: str) -> None:
    assert detect(content)[0] == kind


def test_small_content_is_returned_untouched() -> None:
    r = trim("short text", max_tokens=100)
    assert (r.text, r.removed, r.tokens_in, r.tokens_out) == ("short text", (), 3, 3)


def test_bad_arguments_say_what_to_send() -> None:
    with pytest.raises(InputError, match="at least 20"):
        trim("x", max_tokens=5)
    with pytest.raises(InputError, match="one of json, log"):
        trim("x", kind="yaml")
    with pytest.raises(InputError, match=r"not a valid JMESPath.*at character \d+.*items\[\]\.id"):
        trim('{"a": [1]}', fields="a[?")


def test_comma_separated_dotted_paths_are_accepted_as_fields() -> None:
    r = trim('{"a": {"b": 1, "c": 2}, "d": 3}', fields="a.b, d")
    assert json.loads(r.text) == {"a": {"b": 1}, "d": 3}


def test_fields_matching_nothing_say_so_and_list_the_keys() -> None:
    r = trim('{"alpha": 1, "beta": 2}', fields=["gamma"])
    assert json.loads(r.text) == {"alpha": 1, "beta": 2}
    assert any("matched nothing" in n and "alpha, beta" in n for n in r.removed)


def test_forced_json_on_text_degrades_to_text() -> None:
    r = trim("hello\n" * 500, kind="json", max_tokens=50)
    assert r.kind == "text" and r.tokens_out <= 50
    assert any("not valid JSON" in n for n in r.removed)


def test_json_lines_and_shape_folding() -> None:
    rows = [{"id": i, "event": "click", "x": i * 3} for i in range(300)]
    rows += [{"id": 1000 + i, "error": "timeout", "retry": True} for i in range(50)]
    r = trim("\n".join(json.dumps(x) for x in rows), max_tokens=120)
    out = json.loads(r.text)
    shapes = {tuple(sorted(x)) for x in out if isinstance(x, dict)}
    assert ("error", "id", "retry") in shapes  # the rare shape still gets its example
    assert out[-1] == "… 340 more items"
    assert r.removed[0] == "JSON Lines shown as one JSON array"
    tight = json.loads(trim("\n".join(json.dumps(x) for x in rows), max_tokens=50).text)
    assert tight[-1].startswith("… 347 more items: 298 with keys id,event,x; 49 with keys id,error,retry")


def test_query_terms_and_phrases() -> None:
    q = parse_query('why did "rate limit" hit test_login?')
    assert q is not None and q.terms == ("rate limit", "hit", "test_login")
    assert parse_query("   ") is None


def test_js_and_java_traces_fold_to_informative_frames() -> None:
    noise = [f"step {i} ok" for i in range(400)]
    js = [
        "TypeError: Cannot read properties of undefined (reading 'id')",
        "    at render (/app/src/view.js:10:5)",
        *[f"    at fn{i} (/app/node_modules/react/lib{i}.js:1:1)" for i in range(30)],
        "    at main (/app/src/index.js:3:1)",
    ]
    java = [
        'Exception in thread "main" java.lang.IllegalStateException: no config',
        "\tat com.acme.Config.load(Config.java:42)",
        *[f"\tat java.base/java.lang.reflect.Method{i}.invoke(Method.java:1)" for i in range(30)],
        "\tat com.acme.Main.main(Main.java:7)",
    ]
    r = trim("\n".join(noise + js + noise + java + noise), kind="log", max_tokens=300)
    for keep in ("TypeError: Cannot read", "view.js:10", "index.js:3", "IllegalStateException", "Config.java:42"):
        assert keep in r.text
    assert "node_modules/react" not in r.text and "Method3.invoke" not in r.text


def test_text_query_keeps_matching_paragraphs() -> None:
    paras = [f"Paragraph {i} talks about nothing in particular, at length." for i in range(300)]
    paras[150] = "The deploy key rotates every Tuesday at noon."
    r = trim("\n\n".join(paras), query="deploy key", max_tokens=60)
    assert r.query_answered is True
    assert "The deploy key rotates every Tuesday at noon." in r.text


def test_output_is_deterministic() -> None:
    doc = "\n".join(f"line {i} " + "word " * (i % 13) for i in range(3000))
    assert trim(doc, max_tokens=100) == trim(doc, max_tokens=100)


def test_pathologically_nested_json_does_not_raise() -> None:
    deep = "[" * 5000 + "]" * 5000
    r = trim(deep, max_tokens=50)
    assert r.tokens_out <= 50


_settings = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_lines = st.lists(
    st.one_of(
        st.text(max_size=120),
        st.sampled_from(["ERROR x", "Traceback (most recent call last):", '  File "a.py", line 1', "# H", ""]),
        st.from_regex(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (INFO|ERROR) [a-z ]{0,30}", fullmatch=True),
    ),
    max_size=80,
).map("\n".join)


@_settings
@given(
    content=st.one_of(st.text(max_size=3000), _lines),
    kind=st.sampled_from((None, *KINDS)),
    max_tokens=st.integers(min_value=50, max_value=400),
    query=st.one_of(st.none(), st.text(max_size=20), st.just('"error x" info')),
    fields=st.one_of(st.none(), st.just(["a.b", "items[].id"]), st.just("a,b")),
)
def test_never_raises_and_always_fits(
    content: str, kind: str | None, max_tokens: int, query: str | None, fields: list[str] | str | None
) -> None:
    r = trim(content, kind=kind, max_tokens=max_tokens, query=query, fields=fields)
    assert r.tokens_out <= max_tokens
    assert r.tokens_out == (len(r.text) + 3) // 4
    assert r.kind in KINDS
    assert r.query_answered is None or (query is not None and query.strip())


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=200),
    lambda c: st.lists(c, max_size=30) | st.dictionaries(st.text(max_size=10), c, max_size=10),
    max_leaves=300,
)


@_settings
@given(value=_json, max_tokens=st.integers(min_value=50, max_value=300))
def test_json_always_fits(value: object, max_tokens: int) -> None:
    r = trim(json.dumps(value), max_tokens=max_tokens)
    assert r.tokens_out <= max_tokens


_TRICKY_STRINGS = ["plain", 'q"uo\\te', "ctl\x00\x1f\n\t", "é漢字😀", "\ud800", "\u2028"]


@pytest.mark.parametrize("value", [*_TRICKY_STRINGS, None, True, False, 0, -5, 10**30, 1.5, -0.0])
def test_the_renderers_fast_quoting_writes_what_json_dumps_writes(value: object) -> None:
    fast = jsondoc._quoted(value) if isinstance(value, str) else jsondoc._scalar(value)
    assert fast == json.dumps(value, ensure_ascii=False)


@_settings
@given(value=_json, budget=st.integers(min_value=0, max_value=3000))
def test_writing_a_small_document_whole_first_changes_nothing(value: object, budget: int) -> None:
    # The shortcut (json's C encoder writes the uncut level, and shows there is nothing empty to
    # drop) must give exactly what the ladder gives: same text, same notes.
    text = json.dumps(value)
    short = jsondoc.trim_json(value, fields=None, query=None, budget_chars=budget, size_chars=len(text))
    ladder = jsondoc.trim_json(value, fields=None, query=None, budget_chars=budget)
    assert short == ladder
