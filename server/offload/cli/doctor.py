"""`offload doctor`: one line per check, each failure with its fix; exit 1 if any failed.

Nothing here spends: the API check lists models (free), and the ledger check opens the file the
way the server would (creating it if needed, which the server would do on its first start).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from offload.cli.hosts import claude_code_user_config, claude_desktop_config, find_registrations
from offload.cli.serve import one_line
from offload.config.policy import load_policy
from offload.config.pricing import load_prices
from offload.config.settings import Settings
from offload.core.errors import OffloadError, UpstreamError
from offload.infra.claude import ClaudeClient
from offload.infra.ledger.db import Ledger

DEFAULT_API = "https://api.anthropic.com"
API_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool | None  # None: not checked (because an earlier check failed)
    detail: str

    def line(self) -> str:
        mark = {True: "ok  ", False: "FAIL", None: "skip"}[self.ok]
        return f"{mark} {self.name:<8} {self.detail}"


def check_key(settings: Settings) -> Check:
    if settings.has_api_key:
        return Check("key", True, "ANTHROPIC_API_KEY is set")
    return Check(
        "key",
        False,
        "ANTHROPIC_API_KEY is not set: export it here to check, and give it to the server "
        "(claude mcp add ... -e ANTHROPIC_API_KEY=...)",
    )


async def check_api(settings: Settings) -> Check:
    url = settings.base_url or DEFAULT_API
    if not settings.has_api_key:
        return Check("api", None, f"{url}: needs ANTHROPIC_API_KEY")
    client = ClaudeClient.from_settings(settings, max_retries=0, timeout=API_TIMEOUT_S)
    try:
        models = await client.list_models()
    except UpstreamError as exc:
        if exc.status in (401, 403):
            return Check("api", False, f"{url} rejected the key ({exc.status} {exc.kind}): check ANTHROPIC_API_KEY")
        if exc.kind == "connection_error":
            return Check("api", False, f"cannot reach {url}: check ANTHROPIC_BASE_URL and the network")
        return Check("api", False, f"{url}: {exc}")
    finally:
        await client.close()
    return Check("api", True, f"{url} answered with {len(models)} models (models list: nothing spent)")


def check_policy(settings: Settings) -> Check:
    try:
        prices = load_prices(overlay=settings.pricing_path)
        policy = load_policy(settings.policy_path, known_models=prices.models)
    except OffloadError as exc:
        return Check("policy", False, f"{one_line(exc)} (check it with `offload policy check FILE`)")
    tiers = ", ".join(f"{t}={m}" for t, m in policy.tiers.items())
    extra = f", prices + {settings.pricing_path}" if settings.pricing_path else ""
    return Check("policy", True, f"{settings.policy_path}: {policy.name!r} ({tiers}); every model priced{extra}")


async def check_ledger(settings: Settings) -> Check:
    try:
        ledger = await Ledger.open(settings.ledger_target, spool=settings.db_path)
    except OffloadError as exc:
        return Check("ledger", False, one_line(exc))
    where = "the PostgreSQL ledger" if settings.db_url else str(settings.db_path)
    await ledger.close()
    return Check("ledger", True, f"{where} is writable")


def check_roots(settings: Settings) -> Check:
    if not settings.roots:
        return Check("roots", False, "no readable roots (started in /): set OFFLOAD_ROOTS to your project directories")
    for root in settings.roots:
        if not root.is_dir():
            return Check("roots", False, f"{root} is not a directory: fix OFFLOAD_ROOTS")
        if root == Path(root.anchor):
            return Check(
                "roots", False, f"{root} opens every file to the model: set OFFLOAD_ROOTS to project directories"
            )
    return Check("roots", True, "file tools may read under " + ", ".join(str(r) for r in settings.roots))


def check_registration() -> Check:
    found = find_registrations()
    if not found:
        return Check(
            "hosts",
            False,
            f"offload is not registered in {claude_code_user_config()}, ./.mcp.json or {claude_desktop_config()}: "
            "run `offload init`",
        )
    broken = [r for r in found if not r.command_found()]
    if broken:
        r = broken[0]
        return Check("hosts", False, f"{r.where}: command {r.command!r} not found; re-run `offload init`")
    return Check("hosts", True, "; ".join(f"{r.where}: {r.shown}" for r in found))


async def _io_checks(settings: Settings) -> tuple[Check, Check]:
    return await check_api(settings), await check_ledger(settings)


def run_checks(settings: Settings) -> list[Check]:
    api, ledger = asyncio.run(_io_checks(settings))
    return [check_key(settings), api, check_policy(settings), ledger, check_roots(settings), check_registration()]


def cmd_doctor(settings: Settings, *, out: Callable[[str], None] = print) -> int:
    checks = run_checks(settings)
    for c in checks:
        out(c.line())
    return 1 if any(c.ok is False for c in checks) else 0
