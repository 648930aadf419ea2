"""Policy YAML -> `Policy`, with errors a person can fix, and cheap hot reload.

Every failure becomes a `ConfigError` naming the file, the field path (`rules[2].when.difficulty`)
and what is allowed there. `PolicyHolder` re-reads the file only when its stat signature changes,
so `check_reload()` can run before every tool call; a broken edit keeps the last good policy.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from offload.core.errors import ConfigError
from offload.policy.models import Policy

log = logging.getLogger("offload.policy")

_MAX_LISTED_ERRORS = 8
_MAX_INPUT_REPR = 60

# Rephrasings of pydantic's generic messages into "what is allowed here".
_TYPE_HINTS = {
    "missing": "required field is missing",
    "int_type": "expected a whole number",
    "int_parsing": "expected a whole number",
    "bool_type": "expected true or false",
    "string_type": "expected text",
    "dict_type": "expected a mapping (key: value)",
    "list_type": "expected a list",
    "tuple_type": "expected a list",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
}


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_INPUT_REPR else text[: _MAX_INPUT_REPR - 3] + "..."


def _field_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == "[key]":
            out += " (key)"
        else:
            out += f".{part}" if out else str(part)
    return out


def _describe(err: ErrorDetails) -> tuple[str, str]:
    """(field path, message) for one pydantic error."""
    ctx = err.get("ctx") or {}
    loc = tuple(err["loc"])
    at = ctx.get("at")
    if at:
        loc = (*loc, at)
    kind = err["type"]
    if kind == "literal_error":
        expected = str(ctx.get("expected", "")).replace("'", "").replace(" or ", ", ")
        msg = f"expected one of {expected}, got {_short(err['input'])}"
    elif kind in _TYPE_HINTS:
        msg = _TYPE_HINTS[kind]
        if kind != "missing":
            msg += f", got {_short(err['input'])}"
    elif kind in ("greater_than", "greater_than_equal", "too_short", "string_too_short"):
        msg = f"{err['msg'][0].lower()}{err['msg'][1:]}, got {_short(err['input'])}"
    else:
        msg = err["msg"].removeprefix("Value error, ")
    return _field_path(loc) or "(top level)", msg


def validation_message(path: str, exc: ValidationError) -> str:
    problems = [_describe(e) for e in exc.errors()]
    if len(problems) == 1:
        where, msg = problems[0]
        return f"policy {path}: {where}: {msg}"
    lines = [f"policy {path} has {len(problems)} problems:"]
    lines += [f"  {where}: {msg}" for where, msg in problems[:_MAX_LISTED_ERRORS]]
    if len(problems) > _MAX_LISTED_ERRORS:
        lines.append(f"  ... and {len(problems) - _MAX_LISTED_ERRORS} more")
    return "\n".join(lines)


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans: only true/false are booleans.

    YAML 1.1 also reads on/off/yes/no as booleans, which would turn `escalation: {on: [...]}`
    into the key True.
    """


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _parse_yaml(text: str, path: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(f"policy {path}: YAML syntax error{where}: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"policy {path}: not valid YAML: {exc}") from None
    except ValueError as exc:  # e.g. an integer past Python's 4,300-digit conversion limit
        raise ConfigError(f"policy {path}: a value cannot be read: {str(exc)[:200]}") from None


def parse_policy(text: str, path: str = "<policy>", *, known_models: Collection[str] | None = None) -> Policy:
    """Validate policy YAML text; `path` is only used in messages."""
    try:
        doc = _parse_yaml(text, path)
        if not isinstance(doc, Mapping):
            got = "an empty file" if doc is None else f"a {type(doc).__name__}"
            raise ConfigError(
                f"policy {path}: expected a mapping of policy fields (name, tiers, rules, default_tier, "
                f"baseline, ...) at the top level, got {got}"
            )
        try:
            policy = Policy.model_validate(doc)
        except ValidationError as exc:
            raise ConfigError(validation_message(path, exc)) from None
    except RecursionError:
        raise ConfigError(f"policy {path}: nested too deeply to be a policy") from None
    if known_models is not None:
        _check_models(policy, path, known_models)
    return policy


def _check_models(policy: Policy, path: str, known_models: Collection[str]) -> None:
    refs = [(f"tiers.{tier}", model) for tier, model in policy.tiers.items()]
    refs.append(("baseline", policy.baseline))
    for where, model in refs:
        if model not in known_models:
            raise ConfigError(
                f"policy {path}: {where}: model {model!r} has no price in pricing.yaml; "
                f"use a priced model ({', '.join(sorted(known_models))}) or add its prices to pricing.yaml"
            )


def _read(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"policy {path}: file not found (set OFFLOAD_POLICY or --policy to a policy YAML)") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"policy {path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"policy {path}: cannot read ({exc.strerror or exc})") from None


def load_policy(path: Path | str, *, known_models: Collection[str] | None = None) -> Policy:
    p = Path(path)
    return parse_policy(_read(p), str(p), known_models=known_models)


_Signature = tuple[int, int, int, int, int]


def _signature(path: Path) -> _Signature | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    # ctime too: it moves on any rewrite, which helps when a same-size edit lands in the same mtime tick.
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino, st.st_dev)


class PolicyHolder:
    """The last good policy from one file, reloaded when the file changes.

    The initial load must succeed (raises `ConfigError`): the server cannot route without one.
    """

    def __init__(self, path: Path | str, known_models: Collection[str] | None = None) -> None:
        self.path = Path(path)
        self._known = known_models
        self._lock = threading.Lock()
        sig = _signature(self.path)
        self._current = load_policy(self.path, known_models=known_models)
        self._sig = sig
        self._error: str | None = None

    @property
    def current(self) -> Policy:
        return self._current

    @property
    def error(self) -> str | None:
        """Why the latest edit of the file was not applied, or None when the file is in use as is."""
        return self._error

    def check_reload(self) -> bool:
        """Reload if the file changed since the last look. True when a new policy was applied."""
        sig = _signature(self.path)
        if sig == self._sig:
            return False
        with self._lock:
            if sig == self._sig:  # another thread got here first
                return False
            if sig is None:
                self._sig = None
                self._set_error(f"policy {self.path}: file is missing or unreadable; still using the last good policy")
                return False
            try:
                text = _read(self.path)
                policy = parse_policy(text, str(self.path), known_models=self._known)
            except ConfigError as exc:
                # Only remember the signature if the file held still while we read it; a file caught
                # mid-write is read again on the next call.
                if _signature(self.path) == sig:
                    self._sig = sig
                self._set_error(str(exc))
                return False
            self._sig = sig if _signature(self.path) == sig else None
            self._current = policy
            self._error = None
            log.info("policy %s reloaded: %s", self.path, policy.name)
            return True

    def _set_error(self, message: str) -> None:
        if message != self._error:
            log.warning("%s (keeping the last good policy %r)", message, self._current.name)
        self._error = message
