"""Reading the price table: the shipped `pricing.yaml` (cached), a file the caller names, or a
user's file (`OFFLOAD_PRICING`) merged over the shipped one."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml

from offload.config.settings import shipped
from offload.core.errors import ConfigError
from offload.core.pricing import PriceTable, parse_prices


def load_prices(path: Path | str | None = None, *, overlay: Path | str | None = None) -> PriceTable:
    """The shipped table when `path` is None (read once per process), else the file at `path`.

    `overlay` (a user's `OFFLOAD_PRICING` file) is merged over it: each model it lists replaces
    or adds that whole model entry, its aliases join the shipped ones, and its batch_multiplier
    (if any) wins. The merged table passes the same exactness checks, and errors name the overlay.
    """
    if overlay is None:
        return _shipped_table() if path is None else _load(Path(path))
    base = _read_doc(Path(path) if path is not None else shipped("pricing.yaml"))
    extra_path = Path(overlay)
    extra = _read_doc(extra_path)
    if not isinstance(extra, dict) or not isinstance(base, dict):
        raise ConfigError(f"{extra_path}: expected a mapping with models (and optionally aliases, batch_multiplier)")
    return _parse(_merge(base, extra, str(extra_path)), f"{extra_path} (over the shipped pricing.yaml)")


def _merge(base: dict[str, Any], extra: dict[str, Any], where: str) -> dict[str, Any]:
    merged = dict(base)
    for key in ("models", "aliases"):
        if key in extra:
            if not isinstance(extra[key], dict):
                raise ConfigError(f"{where}: {key}: expected a mapping")
            merged[key] = {**(base.get(key) or {}), **extra[key]}
    for key, value in extra.items():
        if key not in ("models", "aliases"):
            merged[key] = value  # unknown keys are refused by parse_prices, naming the file
    # A model the user prices directly is no longer an alias of a shipped one.
    aliases = merged.get("aliases")
    if isinstance(aliases, dict):
        merged["aliases"] = {a: t for a, t in aliases.items() if a not in (extra.get("models") or {})}
    return merged


@functools.cache
def _shipped_table() -> PriceTable:
    return _load(shipped("pricing.yaml"))


def _read_doc(path: Path) -> Any:
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read the price table ({exc.strerror})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML ({exc})") from None
    except ValueError as exc:  # e.g. an integer past Python's 4,300-digit conversion limit
        raise ConfigError(f"{where}: a value cannot be read ({str(exc)[:200]})") from None


def _load(path: Path) -> PriceTable:
    return _parse(_read_doc(path), str(path))


def _parse(doc: Any, where: str) -> PriceTable:
    try:
        return parse_prices(doc, where)
    except (ValueError, ArithmeticError) as exc:
        raise ConfigError(f"{where}: a price cannot be used ({str(exc)[:200]})") from None
