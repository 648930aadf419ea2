"""Environment and flags, read once into one frozen `Settings`.

Nothing else reads `os.environ`; everything downstream takes a `Settings`.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import platformdirs

from offload.core.errors import ConfigError

APP = "offload"

_PACKAGE = Path(__file__).resolve().parent.parent  # server/offload (or site-packages/offload)


def shipped_dir() -> Path:
    """Where the shipped policies and price table live: inside the wheel, or the repo checkout."""
    installed = _PACKAGE / "_shipped"
    if installed.is_dir():
        return installed
    return _PACKAGE.parent.parent / "policies"


def shipped(name: str) -> Path:
    return shipped_dir() / name


def _xdg(env: Mapping[str, str], var: str, fallback: str) -> Path:
    return Path(env.get(var) or Path(env.get("HOME") or Path.home()) / fallback) / APP


def user_data_dir(env: Mapping[str, str]) -> Path:
    """Where offload keeps its ledger: the platform's data directory (XDG on Linux)."""
    if sys.platform in ("darwin", "win32"):
        return Path(platformdirs.user_data_dir(APP, appauthor=False))
    # Read XDG from `env`, not os.environ, so a host's (or a test's) environment decides.
    return _xdg(env, "XDG_DATA_HOME", ".local/share")


def user_config_dir(env: Mapping[str, str]) -> Path:
    """Where `offload init` writes the policy the user owns: the platform's config directory."""
    if sys.platform in ("darwin", "win32"):
        return Path(platformdirs.user_config_dir(APP, appauthor=False))
    return _xdg(env, "XDG_CONFIG_HOME", ".config")


def default_db_path(env: Mapping[str, str]) -> Path:
    return user_data_dir(env) / "offload.db"


PG_SCHEMES = ("postgresql://", "postgres://")


def is_pg_url(target: object) -> bool:
    """Whether a ledger location (OFFLOAD_DB, --db) names a PostgreSQL database, not a file."""
    return isinstance(target, str) and target.startswith(PG_SCHEMES)


def pg_spool_path(url: str, env: Mapping[str, str]) -> Path:
    """This host's journal anchor for a PostgreSQL ledger (journal.py): one per database URL."""
    return user_data_dir(env) / f"pg-{hashlib.sha256(url.encode('utf-8')).hexdigest()[:12]}.db"


def ledger_location(raw: str | None, env: Mapping[str, str]) -> tuple[Path, str | None]:
    """(db_path, db_url) for OFFLOAD_DB / --db: a file (no URL), or a postgresql:// URL and its spool."""
    if raw and is_pg_url(raw):
        return pg_spool_path(raw, env), raw
    return Path(raw or default_db_path(env)).expanduser(), None


def _new_session_id() -> str:
    # One stdio process is one session unless OFFLOAD_SESSION (or the host) names it.
    return f"s-{os.getpid()}-{secrets.token_hex(3)}"


def _first(env: Mapping[str, str], *names: str) -> str | None:
    """The first of `names` that is set to a real value.

    A host config written as `"OFFLOAD_SESSION": "${CLAUDE_CODE_SESSION_ID}"` reaches the server
    as that literal text when the variable is unset; that names no session, so it is skipped.
    """
    for name in names:
        value = (env.get(name) or "").strip()
        if value and not (value.startswith("${") and value.endswith("}")):
            return value
    return None


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
    # Recorded on every attempt, for `offload spend --by project|user`; None when nobody said.
    project: str | None = None
    user: str | None = None
    pricing_path: Path | None = None  # OFFLOAD_PRICING: merged over the shipped price table
    # How long and how many requests stay in memory for `redo_of` (never on disk).
    redo_ttl_s: int = 3600
    redo_max_items: int = 256
    # A server's lease on its holds and batch claims (OFFLOAD_LEASE_S); a heartbeat renews it every
    # third. OFFLOAD_HOST_ID names the machine where the host name, boot id and pid namespace can't.
    lease_s: int = 90
    host_id: str | None = None
    # OFFLOAD_DB=postgresql://...: the shared ledger; db_path is then only this host's journal anchor.
    db_url: str | None = field(default=None, repr=False)

    @property
    def ledger_target(self) -> Path | str:
        """What `Ledger.open` takes: the PostgreSQL URL, else the SQLite file."""
        return self.db_url or self.db_path

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
        db_path, db_url = ledger_location(env.get("OFFLOAD_DB"), env)
        base = cls(
            db_url=db_url,
            policy_path=Path(env.get("OFFLOAD_POLICY") or shipped("default.yaml")).expanduser(),
            db_path=db_path,
            # Claude Code (>= 2.1.154) puts its own session id and project root in a stdio
            # server's environment; OFFLOAD_* still win for anyone who wants to group differently.
            session_id=_first(env, "OFFLOAD_SESSION", "CLAUDE_CODE_SESSION_ID") or _new_session_id(),
            project=_first(env, "OFFLOAD_PROJECT", "CLAUDE_PROJECT_DIR"),
            user=_first(env, "OFFLOAD_USER"),
            pricing_path=Path(pricing).expanduser() if (pricing := _first(env, "OFFLOAD_PRICING")) else None,
            roots=roots,
            api_key=env.get("ANTHROPIC_API_KEY") or None,
            base_url=env.get("ANTHROPIC_BASE_URL") or None,
            max_file_bytes=_int_env(env, "OFFLOAD_MAX_FILE_BYTES", 2_000_000),
            max_total_bytes=_int_env(env, "OFFLOAD_MAX_TOTAL_BYTES", 20_000_000),
            http_tokens=tuple(t.strip() for t in tokens),
            redo_ttl_s=_int_env(env, "OFFLOAD_REDO_TTL_S", 3600),
            redo_max_items=_int_env(env, "OFFLOAD_REDO_MAX_ITEMS", 256),
            lease_s=_int_env(env, "OFFLOAD_LEASE_S", 90),
            host_id=_first(env, "OFFLOAD_HOST_ID"),
        )
        return replace(base, **{k: v for k, v in overrides.items() if v is not None})
