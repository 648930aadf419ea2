"""Team budgets (policy budgets.user_usd, project_usd, team_usd) on one shared ledger.

Real parts: in-process and stdio-subprocess MCP servers, the HTTP transport with two tokens, the
SDK to the emulator, real SQLite files, and `offload spend` as a subprocess.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from helpers import VENV_BIN, query, server_env, uvicorn_serving
from offload.config.settings import Settings, shipped
from offload.core.errors import BudgetExceededError
from offload.core.money import usd_json
from offload.core.pricing import Usage
from offload.infra.ledger import windows as w
from offload.infra.ledger.budgets import BudgetLimits, Who, reserve
from offload.infra.ledger.db import Ledger
from offload.infra.ledger.records import Attempt, record
from offload.mcp.http import build_http_app
from offload.mcp.server import build_server
from offload_emulator.server import EmulatorHandle
from reliability.conftest import result_text
from test_tenancy_http import TOKEN_A, TOKEN_B, client

pytestmark = pytest.mark.anyio
OFFLOAD = str(VENV_BIN / "offload")
USD = 10**12
CALL = {"prompt": "Classify: 'great product'", "tier": "cheap", "max_tokens": 64}


def team_policy(tmp_path: Path, budgets: str) -> Path:
    """The shipped default policy with its budgets section replaced (refuse, so the reserve names the budget)."""
    text = shipped("default.yaml").read_text(encoding="utf-8")
    text = re.sub(r"^budgets:\n(?:  .*\n)+", f"budgets:\n{budgets}  on_exceed: refuse\n", text, flags=re.M)
    path = tmp_path / "team.yaml"
    path.write_text(text, encoding="utf-8")
    return path


async def seed(db: Path, key: str, cost: int, *, user: str | None = None, project: str | None = None) -> None:
    """Spend already on the shared ledger (another team member's earlier calls)."""
    led = await Ledger.open(db)
    try:
        attempt = Attempt(
            key, "earlier", "t", "claude-haiku-5-5", Usage(1, 1), cost_pusd=cost, user=user, project=project
        )
        assert await record(led, attempt)
    finally:
        await led.close()


def http_settings(tmp_path: Path, db: Path, policy: Path, api_url: str) -> Settings:
    """An HTTP server for two tokens (token-1, token-2) whose own process user is server-operator."""
    return Settings.from_env(
        {
            "HOME": str(tmp_path),
            "OFFLOAD_DB": str(db),
            "OFFLOAD_ROOTS": str(tmp_path),
            "OFFLOAD_SESSION": "srv",
            "OFFLOAD_USER": "server-operator",
            "OFFLOAD_POLICY": str(policy),
            "OFFLOAD_HTTP_TOKENS": f"{TOKEN_A},{TOKEN_B}",
            "ANTHROPIC_API_KEY": "test-key",
            "ANTHROPIC_BASE_URL": api_url,
        }
    )


def spend_json(db: Path, by: str) -> dict[str, dict[str, Any]]:
    done = subprocess.run(
        [OFFLOAD, "spend", "--by", by, "--json", "--db", str(db)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return {r["key"]: r for r in json.loads(done.stdout)["rows"]}


async def test_each_user_has_their_own_budget_on_one_ledger(
    emulator: EmulatorHandle, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    policy = team_policy(tmp_path, "  user_usd: 1\n  team_usd: 100\n")
    db = tmp_path / "ledger.db"
    await seed(db, "ana-earlier", USD - 10**7, user="ana")  # ana: $0.00001 left, less than any call
    ana = make_settings(emulator.url, policy_path=policy, user="ana", session_id="s-ana")
    bo = make_settings(emulator.url, policy_path=policy, user="bo", session_id="s-bo")
    async with Client(build_server(ana)) as a, Client(build_server(bo)) as b:
        refused = await a.call_tool("routed_complete", CALL)
        answered = await b.call_tool("routed_complete", CALL)
        status = await a.call_tool("budget_status", {})
    text = result_text(refused)
    assert refused.is_error
    assert text.startswith("user budget $1.00 for ana would be exceeded: spent $"), text
    assert "$0.00001 left (budgets.user_usd in the policy); resets 20" in text
    assert not answered.is_error, result_text(answered)
    rows = query(db, "SELECT user_name, cost_pusd FROM attempts WHERE session_id != 'earlier'")
    assert [r["user_name"] for r in rows] and {r["user_name"] for r in rows} == {"bo"}
    # budget_status shows the team scopes that are set, for this server's user.
    scopes = status.structured_content["scopes"]
    assert scopes["user"]["for"] == "ana" and scopes["user"]["limit_usd"] == "1"
    assert scopes["user"]["spent_usd"] == "0.99999" and "project" not in scopes
    bo_cost = sum(int(r["cost_pusd"]) for r in rows)
    assert scopes["team"]["spent_usd"] == usd_json(USD - 10**7 + bo_cost)
    assert "\nuser budget for ana: $1.0000 of $1.00, $0.00001 left\nteam budget: $1.00 of $100.00" in result_text(
        status
    )
    # Exact decimals per user, from the same rows.
    by_user = spend_json(db, "user")
    assert by_user["ana"]["cost_usd"] == "0.99999"
    assert by_user["bo"]["cost_usd"] == usd_json(bo_cost)


async def test_a_token_is_a_user_over_http(running: Callable[..., Any], tmp_path: Path) -> None:
    policy = team_policy(tmp_path, "  user_usd: 0.5\n")
    db = tmp_path / "ledger.db"
    await seed(db, "t1-earlier", USD // 2, user="token-1")  # token-1 spent its whole budget
    with running() as emu:
        settings = http_settings(tmp_path, db, policy, emu.url)
        with uvicorn_serving(build_http_app(settings)) as url:
            async with client(url, TOKEN_A) as a, client(url, TOKEN_B) as b:
                refused = await a.call_tool("routed_complete", CALL)
                answered = await b.call_tool("routed_complete", CALL)
    assert refused.is_error and "user budget $0.50 for token-1 would be exceeded" in result_text(refused)
    assert not answered.is_error, result_text(answered)
    assert {r["user_name"] for r in query(db, "SELECT user_name FROM attempts WHERE session_id != 'earlier'")} == {
        "token-2"
    }


async def test_a_project_budget_refuses_that_project_only(
    emulator: EmulatorHandle, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    policy = team_policy(tmp_path, "  project_usd: 2\n")
    db = tmp_path / "ledger.db"
    await seed(db, "shop-earlier", 2 * USD, project="/home/ana/shop", user="ana")
    shop = make_settings(emulator.url, policy_path=policy, project="/home/ana/shop", user="bo")
    other = make_settings(emulator.url, policy_path=policy, project="/home/ana/blog", user="ana")
    async with Client(build_server(shop)) as s:
        refused = await s.call_tool("routed_complete", CALL)
    async with Client(build_server(other)) as o:
        answered = await o.call_tool("routed_complete", CALL)
    text = result_text(refused)
    assert refused.is_error and text.startswith("project budget $2.00 for /home/ana/shop would be exceeded"), text
    assert "(budgets.project_usd in the policy)" in text
    assert not answered.is_error, result_text(answered)
    by_project = spend_json(db, "project")
    assert by_project["/home/ana/shop"]["cost_usd"] == "2" and by_project["/home/ana/shop"]["calls"] == 1
    assert by_project["/home/ana/blog"]["calls"] >= 1


async def test_holds_count_against_their_user_and_project(ledger: Ledger) -> None:
    now = w.utcnow()
    limits = BudgetLimits(user_pusd=1000, project_pusd=1500)
    await reserve(ledger, "s1", 900, limits, now=now, who=Who("ana", "p"))
    with pytest.raises(BudgetExceededError) as info:
        await reserve(ledger, "s2", 200, limits, now=now, who=Who("ana", "q"))  # ana's hold of 900 counts
    assert info.value.scope == "user" and info.value.remaining_pusd == 100
    await reserve(ledger, "s3", 500, limits, now=now, who=Who("bo", "p"))  # bo: own budget; project p: 1400
    with pytest.raises(BudgetExceededError, match="project budget"):
        await reserve(ledger, "s4", 200, limits, now=now, who=Who("cy", "p"))
    # No user named: those calls share one budget rather than escaping it.
    await reserve(ledger, "s5", 1000, limits, now=now, who=Who(None, "r"))
    with pytest.raises(BudgetExceededError, match=r"user budget .* for calls with no user \(set OFFLOAD_USER\)"):
        await reserve(ledger, "s6", 1, limits, now=now, who=Who(None, "r"))


@pytest.mark.parametrize(
    ("scope", "users", "refusal"),
    [
        ("team", ("ana", "bo"), "team budget $1.00 would be exceeded"),
        ("user", ("ana", "ana"), "user budget $1.00 for ana would be exceeded"),  # one person, two machines
    ],
)
async def test_a_shared_budget_holds_across_two_server_processes(
    emulator: EmulatorHandle, tmp_path: Path, scope: str, users: tuple[str, str], refusal: str
) -> None:
    limit = 1 * USD
    policy = team_policy(tmp_path, f"  {scope}_usd: {usd_json(limit)}\n")
    db = tmp_path / "ledger.db"
    await seed(db, "earlier", limit - 4 * 10**8, user="ana")  # $0.0004 of room: a dozen or so cheap calls
    outcomes: dict[int, list[str]] = {0: [], 1: []}

    async def member(i: int) -> None:
        env = {
            **server_env(tmp_path, emulator.url, f"s-{i}"),
            "OFFLOAD_POLICY": str(policy),
            "OFFLOAD_USER": users[i],
            "OFFLOAD_PROJECT": f"proj-{i}",
            "OFFLOAD_HOST_ID": f"machine-{i}",
        }
        params = StdioServerParameters(command=OFFLOAD, args=["serve"], env=env)
        with (tmp_path / f"{i}.log").open("w") as err:
            async with Client(stdio_client(params, errlog=err), read_timeout_seconds=60) as c:
                for _ in range(60):
                    out = await c.call_tool("routed_complete", CALL)
                    outcomes[i].append(result_text(out) if out.is_error else "ok")
                    if out.is_error:
                        return

    async with anyio.create_task_group() as tg:
        tg.start_soon(member, 0)
        tg.start_soon(member, 1)
    refusals = [o for got in outcomes.values() for o in got if o != "ok"]
    assert len(refusals) == 2, outcomes  # each process ended on a refusal, not the loop's end
    assert all(r.startswith(refusal) for r in refusals), refusals
    assert all(f"(budgets.{scope}_usd in the policy)" in r for r in refusals)
    total = sum(int(r["cost_pusd"]) for r in query(db, "SELECT cost_pusd FROM attempts"))
    assert total <= limit
    served = sum(o.count("ok") for o in outcomes.values())
    assert served >= 2 and len(query(db, "SELECT 1 FROM attempts")) == served + 1
    assert query(db, "SELECT COUNT(*) AS n FROM reservations")[0]["n"] == 0


async def test_downgrade_policy_refusal_names_the_team_budget_with_its_limit_and_spend(
    emulator: EmulatorHandle, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    policy = team_policy(tmp_path, "  user_usd: 1\n")
    policy.write_text(policy.read_text().replace("on_exceed: refuse", "on_exceed: downgrade"))
    db = tmp_path / "ledger.db"
    await seed(db, "ana-earlier", USD - 10**7, user="ana")
    async with Client(build_server(make_settings(emulator.url, policy_path=policy, user="ana"))) as a:
        refused = await a.call_tool("routed_complete", {"prompt": "Summarize the news", "max_tokens": 64})
    text = result_text(refused)
    assert refused.is_error
    assert text.startswith("the user budget for ana ($1.00: spent $1.0000, reserved $0.00) has $0.00001 left"), text
    assert "even tier 'cheap' could cost up to" in text
    assert query(db, "SELECT COUNT(*) AS n FROM attempts")[0]["n"] == 1  # nothing was sent


async def test_budget_warnings_after_a_tool_are_the_callers_own_over_http(
    running: Callable[..., Any], tmp_path: Path
) -> None:
    """Warnings are worked out while the call still acts for its token: token-1 at 85% of its user
    budget is warned, token-2 (no spend) is not, and neither sees the server operator's budget."""
    policy = team_policy(tmp_path, "  user_usd: 1\n")
    db = tmp_path / "ledger.db"
    await seed(db, "t1-earlier", USD * 85 // 100, user="token-1")
    with running() as emu:
        settings = http_settings(tmp_path, db, policy, emu.url)
        bulk = {"template": "Tag: {item}", "items": ["x", "y"]}
        with uvicorn_serving(build_http_app(settings)) as url:
            async with client(url, TOKEN_A) as a, client(url, TOKEN_B) as b:
                warned = result_text(await a.call_tool("batch_submit", bulk))
                quiet = result_text(await b.call_tool("batch_submit", bulk))
    assert "user budget 85% used" in warned, warned
    assert "budget" not in quiet, quiet


async def test_many_calls_at_once_in_one_server_never_overrun_a_user_budget(
    emulator: EmulatorHandle, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """Sixteen premium calls at once over one server and one connection, against a user budget that
    fits only some: every hold is taken in the same transaction as the check, so none slips past."""
    limit = USD // 100  # $0.01
    policy = team_policy(tmp_path, '  user_usd: "0.01"\n')
    settings = make_settings(emulator.url, policy_path=policy, user="ana", session_id="s-ana")
    call = {"prompt": "Explain the retry loop in detail", "tier": "premium", "max_tokens": 200}
    results: list[Any] = []
    async with Client(build_server(settings)) as c:

        async def one() -> None:
            results.append(await c.call_tool("routed_complete", call))

        async with anyio.create_task_group() as tg:
            for _ in range(16):
                tg.start_soon(one)
    refused = [result_text(r) for r in results if r.is_error]
    answered = [r for r in results if not r.is_error]
    spent = sum(r["cost_pusd"] for r in query(settings.db_path, "SELECT cost_pusd FROM attempts"))
    assert refused and answered
    assert all(t.startswith("user budget $0.01 for ana would be exceeded") for t in refused), refused
    assert 0 < spent <= limit
    assert query(settings.db_path, "SELECT COUNT(*) AS n FROM reservations")[0]["n"] == 0
