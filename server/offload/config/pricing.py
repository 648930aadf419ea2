"""Reading the price table: the shipped `pricing.yaml` (cached) or a file the caller names."""

from __future__ import annotations

import functools
from pathlib import Path

import yaml

from offload.config.settings import shipped
from offload.core.errors import ConfigError
from offload.core.pricing import PriceTable, parse_prices


def load_prices(path: Path | str | None = None) -> PriceTable:
    """The shipped table when `path` is None (read once per process), else the file at `path`."""
    if path is None:
        return _shipped_table()
    return _load(Path(path))


@functools.cache
def _shipped_table() -> PriceTable:
    return _load(shipped("pricing.yaml"))


def _load(path: Path) -> PriceTable:
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read the price table ({exc.strerror})") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML ({exc})") from None
    except ValueError as exc:  # e.g. an integer past Python's 4,300-digit conversion limit
        raise ConfigError(f"{where}: a value cannot be read ({str(exc)[:200]})") from None
    try:
        return parse_prices(doc, where)
    except (ValueError, ArithmeticError) as exc:
        raise ConfigError(f"{where}: a price cannot be used ({str(exc)[:200]})") from None
