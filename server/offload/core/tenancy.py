"""Who a tool call acts for: the HTTP principal (token name), or None (stdio, in-process, no auth).

Every batch and handle is stored with its owner and read back only by the same owner, so one
token never sees, reads or resubmits another's work. A context variable, set once per tool call
by the MCP adapter, carries it to the services without threading it through every signature.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_owner: ContextVar[str | None] = ContextVar("offload_owner", default=None)


def current_owner() -> str | None:
    return _owner.get()


@contextmanager
def acting_as(owner: str | None) -> Iterator[None]:
    token = _owner.set(owner)
    try:
        yield
    finally:
        _owner.reset(token)
