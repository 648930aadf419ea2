"""The caller's `response_schema`, made harmless before any call is paid for. Pure.

- No retrieval: `$ref` resolves only inside the schema (a registry that refuses every URI),
  so a schema can't make the server fetch a URL or read a `file://` path.
- Every `$ref` must resolve, and no chain of `$ref`/`allOf`/`anyOf`/... may loop back without
  descending into the answer (that recursed forever after the call was paid).
- Size and nesting are capped; `pattern`s run on the safe regex engine within one budget.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
from jsonschema import ValidationError
from jsonschema._utils import extras_msg
from referencing import Registry
from referencing.exceptions import NoSuchResource, Unresolvable

from offload.core import safe_regex
from offload.core.errors import InputError

MAX_SCHEMA_CHARS = 20_000
MAX_SCHEMA_DEPTH = 32
# Keywords whose subschemas apply to the same instance: a loop through them never ends.
_SAME_INSTANCE = ("allOf", "anyOf", "oneOf", "not", "if", "then", "else", "dependentSchemas")
_DATA_KEYWORDS = frozenset({"enum", "const", "examples", "default"})
_HINT = ' such as {"type": "object", "properties": {...}, "required": [...]}'


def _refuse(uri: str) -> Any:
    raise NoSuchResource(ref=uri)  # type: ignore[call-arg]  # attrs class, untyped __init__


REFUSING: Registry[Any] = Registry(retrieve=_refuse)  # type: ignore[call-arg]


def _pattern(validator: Any, patrn: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not safe_regex.search(patrn, instance):
        yield ValidationError(f"{instance!r} does not match {patrn!r}")


def _pattern_properties(validator: Any, patterns: dict[str, Any], instance: Any, schema: Any) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for k, v in instance.items():
            if safe_regex.search(pattern, k):
                yield from validator.descend(v, subschema, path=k, schema_path=pattern)


def _additional_properties(validator: Any, ap: Any, instance: Any, schema: Any) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    extras = {p for p in instance if p not in properties and not any(safe_regex.search(pat, p) for pat in patterns)}
    if validator.is_type(ap, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], ap, path=extra)
    elif not ap and extras:
        if patterns:
            joined = ", ".join(repr(each) for each in sorted(extras))
            yield ValidationError(f"{joined} do not match any of the regexes: {', '.join(map(repr, sorted(patterns)))}")
        else:
            names, verb = extras_msg(sorted(extras, key=str))
            yield ValidationError(f"Additional properties are not allowed ({names} {verb} unexpected)")


_SAFE = {"pattern": _pattern, "patternProperties": _pattern_properties, "additionalProperties": _additional_properties}


def _walk(schema: Any) -> Iterator[tuple[dict[str, Any], int]]:
    """Every subschema (dict) with its depth, skipping literal data (enum, const, ...)."""
    stack: list[tuple[Any, int]] = [(schema, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_SCHEMA_DEPTH:
            raise InputError(
                f"response_schema nests deeper than {MAX_SCHEMA_DEPTH} levels; send a flatter schema (use $defs)"
            )
        if isinstance(node, dict):
            yield node, depth
            stack.extend((v, depth + 1) for k, v in node.items() if k not in _DATA_KEYWORDS)
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)


def _same_instance_children(node: dict[str, Any], resolve: Any) -> Iterator[Any]:
    for key in ("$ref", "$dynamicRef", "$recursiveRef"):
        if isinstance(node.get(key), str):
            yield resolve(node[key])
    for key in _SAME_INSTANCE:
        value = node.get(key)
        if isinstance(value, list):
            yield from value
        elif isinstance(value, dict):
            yield from (value.values() if key == "dependentSchemas" else (value,))


def compile_schema(schema: dict[str, Any]) -> Any:
    """A validator for `schema`, or InputError saying what to fix (before the call is made)."""
    try:
        size = len(json.dumps(schema))
    except (ValueError, TypeError, RecursionError):
        raise InputError("response_schema is not plain JSON; send a JSON Schema object" + _HINT) from None
    if size > MAX_SCHEMA_CHARS:
        raise InputError(
            f"response_schema is {size:,} characters; the limit is {MAX_SCHEMA_CHARS:,}: send a smaller one"
        )
    nodes = list(_walk(schema))
    cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise InputError(
            f"response_schema is not a valid JSON Schema: {exc.message}; send a JSON Schema object{_HINT}"
        ) from None
    has_pattern_properties = any(isinstance(n.get("patternProperties"), dict) for n, _ in nodes)
    for node, _ in nodes:
        if isinstance(node.get("pattern"), str):
            safe_regex.compile_pattern(node["pattern"], "a response_schema pattern")
        if isinstance(node.get("patternProperties"), dict):
            for pat in node["patternProperties"]:
                safe_regex.compile_pattern(pat, "a response_schema patternProperties key")
        if "unevaluatedProperties" in node and has_pattern_properties:
            raise InputError(
                "response_schema combines unevaluatedProperties with patternProperties, which offload does not "
                "run; use additionalProperties instead"
            )
    safe_cls = jsonschema.validators.extend(cls, {k: v for k, v in _SAFE.items() if k in cls.VALIDATORS})
    validator = safe_cls(schema, registry=REFUSING)
    resolver = validator._resolver

    def resolve(ref: str) -> Any:
        try:
            return resolver.lookup(ref).contents
        except Unresolvable:
            raise InputError(
                f"response_schema $ref {ref!r} does not resolve inside the schema (offload fetches no URLs or "
                "files); put the definition under $defs and refer to it as #/$defs/NAME"
            ) from None

    _check_loops(schema, nodes, resolve)
    return validator


def _check_loops(schema: Any, nodes: list[tuple[dict[str, Any], int]], resolve: Any) -> None:
    """Refuse a cycle of same-instance references: validating it never ends."""
    edges: dict[int, list[Any]] = {}
    for node, _ in nodes:
        edges[id(node)] = [c for c in _same_instance_children(node, resolve) if isinstance(c, dict)]
    state: dict[int, int] = {}  # 1 = on the current path, 2 = done
    for root, _ in nodes:
        if state.get(id(root)):
            continue
        stack: list[tuple[dict[str, Any], Iterator[Any]]] = [(root, iter(edges.get(id(root), ())))]
        state[id(root)] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[id(node)] = 2
                stack.pop()
                continue
            mark = state.get(id(child))
            if mark == 1:
                raise InputError(
                    "response_schema refers to itself without descending into the answer (a $ref/allOf loop); "
                    "validating it would never end: send a schema whose recursion goes through properties or items"
                )
            if mark is None:
                state[id(child)] = 1
                kids = edges.get(id(child))
                if kids is None:  # a target outside the walked nodes (e.g. a boolean schema's parent)
                    kids = [c for c in _same_instance_children(child, resolve) if isinstance(c, dict)]
                    edges[id(child)] = kids
                stack.append((child, iter(kids)))
