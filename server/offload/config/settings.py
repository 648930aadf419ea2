"""Environment and flags, read once into one frozen `Settings`.

Nothing else reads `os.environ`; everything downstream takes a `Settings`.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from offload.core.errors import ConfigError

_PACKAGE = Path(__file__).resolve().parent.parent  # server/offload (or site-packages/offload)


def shipped_dir() -> Path:
    """Where the shipped policies and price table live: inside the wheel, or the repo checkout."""
    installed = _PACKAGE / "_shipped"
    if installed.is_dir():
        return installed
    return _PACKAGE.parent.parent / "policies"


def shipped(name: str) -> Path:
    return shipped_dir() / name


def default_db_path(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_DATA_HOME") or str(Path(env.get("HOME") or Path.home()) / ".local" / "share")
    return Path(base) / "offload" / "offload.db"


def _new_session_id() -> str:
    # One stdio process is one session unless OFFLOAD_SESSION names it.
    return f"s-{os.getpid()}-{secrets.token_hex(3)}"


def _default_roots() -> tuple[Path, ...]:
    # A desktop host often starts servers in `/`; "everything readable" is no default for a
    # tool a model steers. There, file tools refuse until OFFLOAD_ROOTS names directories.
    cwd = Path.cwd().resolve()
    return () if cwd == Path(cwd.anchor) else (cwd,)


def _int_env(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r}: expected a whole number") from None
    if value <= 0:
        raise ConfigError(f"environment variable {name}={raw!r}: must be positive")
    return value


@dataclass(frozen=True)
class Settings:
    policy_path: Path
    db_path: Path
    session_id: str
    roots: tuple[Path, ...]
    api_key: str | None = field(default=None, repr=False)
    base_url: str | None = None
    max_file_bytes: int = 2_000_000
    max_total_bytes: int = 20_000_000
    http_tokens: tuple[str, ...] = field(default=(), repr=False)
    # How long and how many requests stay in memory for `redo_of` (never on disk).
    redo_ttl_s: int = 3600
    redo_max_items: int = 256

    @property
    def has_api_key(self) -> bool:
        return bool(self.api_key)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if env is None else env
        roots_raw = env.get("OFFLOAD_ROOTS")
        roots = (
            tuple(Path(p).expanduser().resolve() for p in roots_raw.split(os.pathsep) if p)
            if roots_raw
            else _default_roots()
        )
        tokens: list[str] = [t for t in (env.get("OFFLOAD_HTTP_TOKENS") or "").split(",") if t.strip()]
        token_file = env.get("OFFLOAD_HTTP_TOKEN_FILE")
        if token_file:
            try:
                lines = Path(token_file).read_text().splitlines()
            except OSError as exc:
                raise ConfigError(f"OFFLOAD_HTTP_TOKEN_FILE={token_file}: cannot read ({exc.strerror})") from None
            tokens += [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
        base = cls(
            policy_path=Path(env.get("OFFLOAD_POLICY") or shipped("default.yaml")).expanduser(),
            db_path=Path(env.get("OFFLOAD_DB") or default_db_path(env)).expanduser(),
            session_id=env.get("OFFLOAD_SESSION") or _new_session_id(),
            roots=roots,
            api_key=env.get("ANTHROPIC_API_KEY") or None,
            base_url=env.get("ANTHROPIC_BASE_URL") or None,
            max_file_bytes=_int_env(env, "OFFLOAD_MAX_FILE_BYTES", 2_000_000),
            max_total_bytes=_int_env(env, "OFFLOAD_MAX_TOTAL_BYTES", 20_000_000),
            http_tokens=tuple(t.strip() for t in tokens),
            redo_ttl_s=_int_env(env, "OFFLOAD_REDO_TTL_S", 3600),
            redo_max_items=_int_env(env, "OFFLOAD_REDO_MAX_ITEMS", 256),
        )
        return replace(base, **{k: v for k, v in overrides.items() if v is not None})
