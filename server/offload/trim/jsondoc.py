"""Trim parsed JSON: pick fields, drop empties, filter by query, then render within a budget.

Rendering walks the value once per attempt and stops as soon as the output passes the budget,
so each attempt costs at most about `budget` characters of work however large the input is;
a fixed ladder of ever tighter caps (array length, string length, depth) makes it deterministic.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import jmespath
from jmespath.exceptions import JMESPathError

from offload.core.errors import InputError
from offload.trim.query import Query

_MISSING: Any = object()
_SEGMENT = re.compile(r"^([^\[\]]*)((?:\[\d*\])*)$")
_DOTTED = re.compile(r"^[\w\-\[\]]+(\.[\w\-\[\]]+)*$")


# --- fields -------------------------------------------------------------------------------------


def _parse_path(path: str) -> list[tuple[str, Any]]:
    ops: list[tuple[str, Any]] = []
    for seg in path.strip().split("."):
        m = _SEGMENT.match(seg)
        if m is None:
            raise InputError(f"field path {path!r}: cannot read segment {seg!r}; write paths like 'items[].id'")
        if m.group(1):
            ops.append(("key", m.group(1)))
        for idx in re.findall(r"\[(\d*)\]", m.group(2)):
            ops.append(("iter", None) if idx == "" else ("index", int(idx)))
    return ops


def _pick(node: Any, ops: list[tuple[str, Any]]) -> Any:
    if not ops:
        return node
    op, arg = ops[0]
    if op == "key":
        if isinstance(node, list):  # 'items.id' on a list means each item's id
            return _pick(node, [("iter", None), *ops])
        if isinstance(node, dict) and arg in node:
            sub = _pick(node[arg], ops[1:])
            return _MISSING if sub is _MISSING else {arg: sub}
        return _MISSING
    if not isinstance(node, list):
        return _MISSING
    if op == "index":
        if -len(node) <= arg < len(node):
            sub = _pick(node[arg], ops[1:])
            return _MISSING if sub is _MISSING else [sub]
        return _MISSING
    picked = [_pick(e, ops[1:]) for e in node]  # placeholders keep positions aligned for merging
    return _MISSING if all(p is _MISSING for p in picked) else picked


def _merge(a: Any, b: Any) -> Any:
    if a is _MISSING:
        return b
    if b is _MISSING:
        return a
    if isinstance(a, dict) and isinstance(b, dict):
        out = dict(a)
        for k, v in b.items():
            out[k] = _merge(out.get(k, _MISSING), v)
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [_merge(x, y) for x, y in zip(a, b, strict=True)]
    return a


def _drop_missing(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _drop_missing(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_drop_missing(v) for v in node if v is not _MISSING]
    return node


# JMESPath multiselects copy their input once per key, and chained they multiply: 20 chained
# `{a: @, b: @}` built a 300 MB answer. The bounds below cap what an expression can produce.
MAX_JMESPATH_CHARS = 1_000
MAX_JMESPATH_DEPTH = 40
MAX_JMESPATH_GROWTH = 256  # the most copies of its input an expression may make
_ONE_OF = frozenset({"or_expression", "and_expression", "not_expression", "comparator", "literal", "current"})
_SUMS = frozenset({"multi_select_list", "multi_select_dict", "function_expression"})


def _growth(node: Any, depth: int = 0) -> int:
    """An upper bound on how many copies of its input the expression at `node` can produce."""
    if depth > MAX_JMESPATH_DEPTH:
        raise InputError(f"fields nests deeper than {MAX_JMESPATH_DEPTH} levels (the limit); send a simpler expression")
    if not isinstance(node, dict):
        return 1
    kids = [_growth(c, depth + 1) for c in node.get("children", ()) if isinstance(c, dict)]
    if not kids:
        return 1
    kind = node.get("type")
    if kind in _SUMS:
        total = sum(kids)
    elif kind in _ONE_OF or kind == "key_val_pair":
        total = max(kids)
    else:  # a chain (subexpression, pipe, projection, ...): each stage applies to the previous one's output
        total = 1
        for k in kids:
            total *= k
    return min(total, MAX_JMESPATH_GROWTH + 1)  # no need to count further than the limit


def _bounded(fields: str, compiled: Any) -> None:
    if _growth(compiled.parsed) > MAX_JMESPATH_GROWTH:
        raise InputError(
            f"fields {fields[:80]!r} could copy its input more than {MAX_JMESPATH_GROWTH} times (nested or chained "
            "multiselects): the limit; select the keys you need once, e.g. 'items[].{id: id, name: name}'"
        )


def select_fields(value: Any, fields: str | Sequence[str]) -> Any:
    """Apply a JMESPath expression (a string) or dotted paths (a list); _MISSING if nothing matched."""
    if isinstance(fields, str):
        if len(fields) > MAX_JMESPATH_CHARS:
            raise InputError(
                f"fields is {len(fields):,} characters; the limit is {MAX_JMESPATH_CHARS:,}: send a shorter expression"
            )
        try:
            compiled = jmespath.compile(fields)
        except RecursionError:
            raise InputError(f"fields nests too deeply to parse (limit {MAX_JMESPATH_DEPTH} levels)") from None
        except JMESPathError as exc:
            where = getattr(exc, "lex_position", None)
            why = str(exc).splitlines()[0] + (f" at character {where}" if where is not None else "")
            pieces = [p.strip() for p in fields.split(",") if p.strip()]
            if not pieces or not all(_DOTTED.match(p) for p in pieces):
                raise InputError(
                    f"fields {fields!r} is not a valid JMESPath expression ({why}); send e.g. "
                    "'items[].{id: id, name: name}' or a list of dotted paths such as ['items[].id', 'next']"
                ) from None
            fields = pieces
        else:
            _bounded(fields, compiled)
            found = compiled.search(value)
            return _MISSING if found is None else found
    merged: Any = _MISSING
    for path in fields:
        merged = _merge(merged, _pick(value, _parse_path(path)))
    return _MISSING if merged is _MISSING else _drop_missing(merged)


# --- cleaning and query --------------------------------------------------------------------------


def drop_empty(node: Any, counter: list[int]) -> Any:
    """Remove nulls, empty strings and empty containers; counter[0] counts what went."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            # Leaves are tested here, not by a call each: most of a document's values are leaves.
            c = drop_empty(v, counter) if isinstance(v, (dict, list)) else _MISSING if v is None or v == "" else v
            if c is _MISSING:
                counter[0] += 1
            else:
                out[k] = c
        return out if out else _MISSING
    if isinstance(node, list):
        items = []
        for v in node:
            c = drop_empty(v, counter) if isinstance(v, (dict, list)) else _MISSING if v is None or v == "" else v
            if c is _MISSING:
                counter[0] += 1
            else:
                items.append(c)
        return items if items else _MISSING
    if node is None or node == "":
        return _MISSING
    return node


def query_filter(node: Any, q: Query, counter: list[int]) -> tuple[bool, Any]:
    """(matched, kept): records in arrays are kept whole when anything inside them matches."""
    if isinstance(node, dict):
        kept: dict[str, Any] = {}
        for k, v in node.items():
            if q.hits(k):
                kept[k] = v
                continue
            hit, sub = query_filter(v, q, counter)
            if hit:
                kept[k] = sub
        return bool(kept), kept
    if isinstance(node, list):
        items = []
        for v in node:
            hit, sub = query_filter(v, q, counter)
            if hit:
                items.append(v if isinstance(v, dict) else sub)
            else:
                counter[0] += 1
        return bool(items), items
    if isinstance(node, str):
        return q.hits(node), node
    return q.hits(json.dumps(node)), node


# --- rendering -----------------------------------------------------------------------------------


class _Over(Exception):
    pass


@dataclass(frozen=True)
class Level:
    cap: int | None = None
    str_cap: int | None = None
    fold: bool = False
    depth: int | None = None


LADDER = (
    Level(),
    Level(cap=50, str_cap=1000),
    Level(cap=20, str_cap=300),
    Level(cap=10, str_cap=200),
    Level(cap=6, str_cap=150, fold=True),
    Level(cap=4, str_cap=120, fold=True),
    Level(cap=3, str_cap=80, fold=True, depth=8),
    Level(cap=2, str_cap=40, fold=True, depth=5),
    Level(cap=1, str_cap=20, fold=True, depth=3),
    Level(cap=1, str_cap=10, fold=True, depth=1),
)


# What json.dumps(s, ensure_ascii=False) calls for a str, without building an encoder per value:
# the renderer quotes every key and string of every level it tries, and json.dumps was most of a trim.
_quoted = json.encoder.encode_basestring


def _scalar(node: Any) -> str:
    """json.dumps(node) for a number, boolean or null, the common ones without an encoder."""
    if node is None:
        return "null"
    if node is True:
        return "true"
    if node is False:
        return "false"
    if type(node) is int:
        return int.__repr__(node)
    return json.dumps(node)


@dataclass
class _Renderer:
    level: Level
    budget: int
    parts: list[str] = field(default_factory=list)
    size: int = 0
    capped: list[tuple[str, int, int]] = field(default_factory=list)
    shortened: int = 0
    flattened: int = 0
    # Each array's item shapes, by the array's id: every ladder level asks again of the same arrays.
    shapes: dict[int, list[tuple[str, ...]]] = field(default_factory=dict)

    def put(self, s: str) -> None:
        self.parts.append(s)
        self.size += len(s)
        if self.size > self.budget:
            raise _Over

    def value(self, node: Any, depth: int, path: str) -> None:
        lv = self.level
        if isinstance(node, dict):
            if lv.depth is not None and depth >= lv.depth and node:
                self.flattened += 1
                self.put(json.dumps(f"{{… {len(node)} keys}}", ensure_ascii=False))
                return
            self.put("{")
            for i, (k, v) in enumerate(node.items()):
                self.put(("," if i else "") + _quoted(str(k)) + ":")
                self.value(v, depth + 1, f"{path}.{k}" if path else str(k))
            self.put("}")
        elif isinstance(node, list):
            if lv.depth is not None and depth >= lv.depth and node:
                self.flattened += 1
                self.put(json.dumps(f"[… {len(node)} items]", ensure_ascii=False))
                return
            shown, note = self._choose(node, path)
            self.put("[")
            for i, v in enumerate(shown):
                if i:
                    self.put(",")
                self.value(v, depth + 1, path + "[]")
            if note:
                self.put(("," if shown else "") + json.dumps(note, ensure_ascii=False))
            self.put("]")
        elif isinstance(node, str):
            if lv.str_cap is not None and len(node) > lv.str_cap:
                self.shortened += 1
                node = node[: lv.str_cap] + f"…(+{len(node) - lv.str_cap} chars)"
            self.put(_quoted(node))
        else:
            self.put(_scalar(node))

    def _choose(self, items: list[Any], path: str) -> tuple[list[Any], str]:
        cap = self.level.cap
        if cap is None or (len(items) <= cap and not self.level.fold):
            return items, ""
        # First one example per distinct object shape (up to cap shapes), so a rare record type
        # is not hidden behind a thousand common ones; then fill the remaining slots in order.
        shapes = self.shapes.get(id(items))
        if shapes is None:
            shapes = self.shapes[id(items)] = [
                tuple(e) if isinstance(e, dict) else (f"<{type(e).__name__}>",) for e in items
            ]
        picked: list[int] = []
        seen: set[tuple[str, ...]] = set()
        for i, shape in enumerate(shapes):
            if shape not in seen:
                seen.add(shape)
                picked.append(i)
                if len(picked) == cap:
                    break
        chosen = set(picked)
        for i in range(len(items)):
            if len(picked) >= cap:
                break
            if i not in chosen:
                chosen.add(i)
                picked.append(i)
        shown = [items[i] for i in sorted(picked)]
        hidden = len(items) - len(shown)
        if not hidden:
            return shown, ""
        self.capped.append((path or "(top)", hidden, len(items)))
        if not self.level.fold or (len(seen) == 1 and not isinstance(items[0], dict)):
            return shown, f"… {hidden:,} more items"
        rest: dict[tuple[str, ...], int] = {}
        for i, shape in enumerate(shapes):
            if i not in chosen:
                rest[shape] = rest.get(shape, 0) + 1
        top = sorted(rest.items(), key=lambda kv: -kv[1])
        desc = "; ".join(f"{n:,} with keys {','.join(shape)[:80]}" for shape, n in top[:3])
        if len(top) > 3:
            desc += f"; {sum(n for _, n in top[3:]):,} of {len(top) - 3} other shapes"
        return shown, f"… {hidden:,} more items: {desc}"


def compact(value: Any) -> str:
    """What the ladder's first level (cut nothing) renders, written by json's C encoder."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# In compact JSON every null, empty string and empty container shows as one of these; their
# absence proves there is nothing for drop_empty to drop (a string that merely contains one only
# costs the walk that finds out).
_EMPTIES = ("null", '""', "[]", "{}")
# Documents up to this many times the budget are written whole first (see trim_json).
COMPACT_WHOLE_UNDER = 16


def render(value: Any, budget_chars: int, whole: str | None = None) -> tuple[str, list[str]]:
    """Compact JSON of `value` at the first ladder level that fits; notes say what was cut.

    `whole`: `compact(value)`, which the first level (cut nothing) would render, when the caller
    has it: C wrote it in a fraction of the time the renderer takes to find it does not fit."""
    if whole is not None and len(whole) <= budget_chars:
        return whole, []
    r = _Renderer(LADDER[-1], budget_chars)
    shapes: dict[int, list[tuple[str, ...]]] = {}  # `value` lives throughout: ids stay its arrays'
    for level in LADDER if whole is None else LADDER[1:]:
        r = _Renderer(level, budget_chars, shapes=shapes)
        try:
            r.value(value, 0, "")
        except _Over:
            continue
        break
    else:
        # Nothing fits: return the tightest rendering in full; the caller cuts it to size.
        r = _Renderer(LADDER[-1], 1 << 62, shapes=shapes)
        r.value(value, 0, "")
    notes = [f"{p}: {d:,} of {t:,} items" for p, d, t in sorted(r.capped, key=lambda c: (-c[1], c[0]))[:3]]
    if len(r.capped) > 3:
        notes.append(f"{sum(c[1] for c in r.capped[3:]):,} items in {len(r.capped) - 3} other arrays")
    if r.shortened:
        notes.append(f"{r.shortened:,} long strings shortened")
    if r.flattened:
        notes.append(f"{r.flattened:,} deep objects/arrays summarised")
    return "".join(r.parts), notes


def trim_json(
    value: Any,
    *,
    fields: str | Sequence[str] | None,
    query: Query | None,
    budget_chars: int,
    size_chars: int | None = None,
) -> tuple[str, list[str], bool | None]:
    """`size_chars`: the document's length as text, when known."""
    notes: list[str] = []
    if fields is not None and (not isinstance(fields, str) or fields.strip()):
        picked = select_fields(value, fields)
        if picked is _MISSING:
            keys = list(value)[:20] if isinstance(value, dict) else []
            hint = f"; top-level keys: {', '.join(map(str, keys))}" if keys else ""
            notes.append(f"fields {fields!r} matched nothing, showing everything{hint}")
        else:
            value = picked
            notes.append(f"kept only fields {fields!r}")
    answered: bool | None = None
    if query is not None:
        dropped = [0]
        hit, kept = query_filter(value, query, dropped)
        answered = hit
        if hit:
            value = kept
            if dropped[0]:
                notes.append(f"{dropped[0]:,} items not matching the query")
        else:
            notes.append("nothing matched the query, showing everything")
    # A small document is written whole once (C speed): it may fit as it is, and it shows whether
    # there is anything empty to drop. A large one would cost more to write whole than the ladder
    # costs to stop at the budget.
    small = size_chars is not None and size_chars <= COMPACT_WHOLE_UNDER * budget_chars
    whole = compact(value) if small else None
    if whole is None or any(token in whole for token in _EMPTIES):
        empties = [0]
        cleaned = drop_empty(value, empties)
        if cleaned is _MISSING:  # everything was empty: say so with the empty container itself
            cleaned = {} if isinstance(value, dict) else [] if isinstance(value, list) else None
        value, whole = cleaned, None
        if empties[0]:
            notes.append(f"{empties[0]:,} null/empty values")
    text, render_notes = render(value, budget_chars, whole)
    return text, notes + render_notes, answered
