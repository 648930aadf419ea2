"""The host's own bill: Claude Code's session transcripts, deduplicated and priced exactly.

Claude Code writes one JSONL file per session under `~/.claude/projects/<encoded cwd>/`. An
assistant API response appears there as several lines (one per content block, and streaming
copies whose `output_tokens` grow), all repeating the same `message.id` and `requestId`, and a
resumed session copies its history into a new file. Summing lines naively over-counts by
1.2-1.9x, so, like ccusage, a response is keyed on (`message.id`, `requestId`) across every
file and the copy kept is the non-sidechain one with the most tokens (the final streaming copy);
a sidechain copy of a main-chain `message.id` under another `requestId` is a replay, not a turn.

Fields relied on (everything else is ignored): `type` == "assistant", `message.id`,
`message.model`, `message.usage.{input_tokens, output_tokens, cache_creation_input_tokens,
cache_read_input_tokens, cache_creation.ephemeral_5m_input_tokens,
cache_creation.ephemeral_1h_input_tokens, speed, server_tool_use.web_search_requests}`,
`requestId`, `sessionId`, `timestamp`, `cwd`, `isSidechain`, `isApiErrorMessage`.

Nothing is ever priced at $0 by accident: a model the price table lacks, and fast-mode turns
(which the table has no rates for), are counted and named as unpriced, and so are web search
requests (billed per request, beside the tokens, which are still priced); a line that is not JSON
or whose usage is not whole non-negative token counts is counted and named as malformed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from offload.core.pricing import PriceTable, Usage

SYNTHETIC_MODEL = "<synthetic>"  # Claude Code's local placeholder messages: never sent, never billed
MAX_NAMED = 20  # problems named in full; the rest are only counted
_TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
_BREAKDOWN_FIELDS = ("ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens")


@dataclass(frozen=True)
class Turn:
    """One assistant API response as a transcript line records it."""

    key: tuple[str, str] | None  # (message.id, requestId); None: no id, so never merged
    session_id: str
    project: str
    ts: datetime
    model: str
    usage: Usage
    sidechain: bool
    fast: bool
    web_searches: int = 0  # billed per request on top of tokens; the price table has no such rate

    @property
    def tokens(self) -> int:
        return self.usage.prompt_tokens + self.usage.output_tokens


class Malformed(ValueError):
    """A line that should be an assistant turn but cannot be read as one; str() says why."""


@dataclass
class SessionBill:
    session_id: str
    project: str
    first_ts: datetime
    last_ts: datetime
    turns: int = 0
    usage: Usage = field(default_factory=Usage)
    cost_pusd: int = 0
    unpriced_turns: int = 0  # turns whose cost is NOT in cost_pusd (see HostBill.unpriced)
    cost_by_model: dict[str, int] = field(default_factory=dict)


@dataclass
class HostBill:
    directory: str
    sessions: list[SessionBill]
    files: int = 0
    duplicates: int = 0  # repeated copies of a response that were merged away
    skipped: int = 0  # synthetic and API-error messages: not billed by the API
    unpriced: dict[str, int] = field(default_factory=dict)  # model -> turns left out of cost_pusd
    unpriced_extras: dict[str, int] = field(default_factory=dict)  # "web search requests" -> count not in cost
    malformed: int = 0
    problems: list[str] = field(default_factory=list)  # the first MAX_NAMED, "file:line: why"

    @property
    def cost_pusd(self) -> int:
        return sum(s.cost_pusd for s in self.sessions)

    @property
    def turns(self) -> int:
        return sum(s.turns for s in self.sessions)

    @property
    def complete(self) -> bool:
        return not self.unpriced and not self.unpriced_extras and not self.malformed


def _count(value: Any, name: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise Malformed(f"usage.{name} is {value!r}, not a whole non-negative token count")
    return value


def _web_searches(raw: Mapping[str, Any]) -> int:
    server = raw.get("server_tool_use")
    if server is None:
        return 0
    if not isinstance(server, Mapping):
        raise Malformed("usage.server_tool_use is not an object")
    return _count(server.get("web_search_requests"), "server_tool_use.web_search_requests")


def _usage(raw: Any) -> tuple[Usage, bool]:
    if not isinstance(raw, Mapping):
        raise Malformed("message.usage is not an object")
    for name in ("input_tokens", "output_tokens"):
        if name not in raw:
            raise Malformed(f"message.usage has no {name}")
    for name in _TOKEN_FIELDS:
        _count(raw.get(name), name)
    breakdown = raw.get("cache_creation")
    if breakdown is not None:
        if not isinstance(breakdown, Mapping):
            raise Malformed("usage.cache_creation is not an object")
        for name in _BREAKDOWN_FIELDS:
            _count(breakdown.get(name), f"cache_creation.{name}")
    return Usage.from_api(raw), raw.get("speed") == "fast"


def _timestamp(value: Any) -> datetime:
    if not isinstance(value, str):
        raise Malformed("no timestamp")
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise Malformed(f"timestamp {value!r} is not ISO 8601") from None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


UNBILLED = "unbilled"  # parse_line: an assistant line the API never billed (synthetic, API error)


def parse_line(text: str, *, session: str, project: str) -> Turn | str | None:
    """The turn a transcript line records; None for other lines (user, tool results, summaries),
    `UNBILLED` for synthetic and API-error messages.

    `session` and `project` stand in when the line lacks `sessionId` / `cwd`. Raises `Malformed`.
    """
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
        raise Malformed("not JSON") from None
    if not isinstance(doc, Mapping) or doc.get("type") != "assistant":
        return None
    message = doc.get("message")
    if not isinstance(message, Mapping) or "usage" not in message:
        return None
    model = message.get("model")
    if model == SYNTHETIC_MODEL or doc.get("isApiErrorMessage") is True:
        return UNBILLED
    if not isinstance(model, str) or not model:
        raise Malformed("assistant message has no model")
    usage, fast = _usage(message["usage"])
    msg_id, req_id = message.get("id"), doc.get("requestId")
    key = (msg_id, req_id if isinstance(req_id, str) else "") if isinstance(msg_id, str) and msg_id else None
    sid, cwd = doc.get("sessionId"), doc.get("cwd")
    return Turn(
        key=key,
        session_id=sid if isinstance(sid, str) and sid else session,
        project=cwd if isinstance(cwd, str) and cwd else project,
        ts=_timestamp(doc.get("timestamp")),
        model=model,
        usage=usage,
        sidechain=doc.get("isSidechain") is True,
        fast=fast,
        web_searches=_web_searches(message["usage"]),
    )


def _better(new: Turn, old: Turn) -> bool:
    # ccusage's rule: the main chain over a sidechain replay, then the copy with the most tokens
    # (streaming copies grow; only the last carries the final output_tokens).
    if new.sidechain != old.sidechain:
        return not new.sidechain
    return new.tokens > old.tokens


def transcript_files(directory: Path) -> list[Path]:
    """Every `*.jsonl` below `directory` (subagent transcripts included), in a stable order."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.rglob("*.jsonl") if p.is_file())


@dataclass
class FileTurns:
    """What one transcript file holds, before deduplication: cacheable while the file is unchanged."""

    path: Path
    turns: list[Turn] = field(default_factory=list)
    skipped: int = 0
    malformed: int = 0
    problems: list[str] = field(default_factory=list)  # the first MAX_NAMED

    def problem(self, text: str) -> None:
        self.malformed += 1
        if len(self.problems) < MAX_NAMED:
            self.problems.append(text)


def read_file(path: Path) -> FileTurns:
    """Every turn `path` records, in file order; bad lines are named on the result."""
    out = FileTurns(path)
    try:
        with path.open(encoding="utf-8", errors="replace") as fh:
            for n, text in enumerate(fh, start=1):
                # Only lines carrying usage can cost anything; skipping the rest unparsed keeps big
                # transcripts (tool results, file contents) cheap to scan.
                if '"usage"' not in text:
                    continue
                try:
                    turn = parse_line(text, session=path.stem, project=path.parent.name)
                except Malformed as exc:
                    out.problem(f"{path}:{n}: {exc}")
                    continue
                if isinstance(turn, Turn):
                    out.turns.append(turn)
                elif turn == UNBILLED:
                    out.skipped += 1
    except OSError as exc:
        out.problem(f"{path}: cannot read ({exc.strerror})")
    return out


def _problem(bill: HostBill, text: str) -> None:
    bill.malformed += 1
    if len(bill.problems) < MAX_NAMED:
        bill.problems.append(text)


def merge(parts: Iterable[FileTurns], bill: HostBill, since: datetime | None = None) -> list[Turn]:
    """Deduplicated turns (since `since`) across files; problems and duplicates are tallied on `bill`."""
    kept: dict[tuple[str, str], Turn] = {}
    loose: list[Turn] = []
    for part in parts:
        bill.files += 1
        bill.skipped += part.skipped
        bill.malformed += part.malformed
        bill.problems += part.problems[: max(0, MAX_NAMED - len(bill.problems))]
        for turn in part.turns:
            if since is not None and turn.ts < since:
                continue
            if turn.key is None:
                loose.append(turn)
                continue
            old = kept.get(turn.key)
            if old is not None:
                bill.duplicates += 1
                if not _better(turn, old):
                    continue
            kept[turn.key] = turn
    # Sidechain logs (/btw) can replay a main-chain response under a new requestId; ccusage
    # falls back to message.id alone for them, and so do we.
    main_ids = {t.key[0] for t in kept.values() if t.key is not None and not t.sidechain}
    replays = [k for k, t in kept.items() if t.sidechain and k[0] in main_ids]
    for k in replays:
        del kept[k]
    bill.duplicates += len(replays)
    return [*kept.values(), *loose]


def read_turns(files: Iterable[Path], bill: HostBill, since: datetime | None = None) -> list[Turn]:
    """Deduplicated turns from `files`; problems and duplicates are tallied on `bill`."""
    return merge((read_file(p) for p in files), bill, since)


def host_files(directory: Path, bill: HostBill) -> list[Path]:
    """`transcript_files` that really lie under `directory`; links leading out are named on `bill`."""
    root, inside = directory.resolve(), []
    for path in transcript_files(directory):
        # The dashboard shows what is read here: a link must not pull in a file from elsewhere.
        if path.resolve().is_relative_to(root):
            inside.append(path)
        else:
            _problem(bill, f"{path}: links outside {directory}; not read")
    return inside


def price_turns(turns: Iterable[Turn], prices: PriceTable, bill: HostBill) -> None:
    """Fill `bill.sessions` with each session's exact cost; unpriceable turns are named, not zeroed."""
    sessions: dict[str, SessionBill] = {}
    for t in sorted(turns, key=lambda t: t.ts):
        s = sessions.get(t.session_id)
        if s is None:
            s = sessions[t.session_id] = SessionBill(t.session_id, t.project, t.ts, t.ts)
        s.last_ts = t.ts
        s.turns += 1
        s.usage = s.usage + t.usage
        name = f"{t.model} (fast mode)" if t.fast else t.model
        if t.fast or not prices.has(t.model):
            s.unpriced_turns += 1
            bill.unpriced[name] = bill.unpriced.get(name, 0) + 1
            continue
        if t.web_searches:
            extra = "web search requests"
            bill.unpriced_extras[extra] = bill.unpriced_extras.get(extra, 0) + t.web_searches
        cost = prices.cost(t.model, t.usage)
        s.cost_pusd += cost
        s.cost_by_model[t.model] = s.cost_by_model.get(t.model, 0) + cost
    bill.sessions = sorted(sessions.values(), key=lambda s: s.last_ts, reverse=True)


def read_host_bill(directory: Path, prices: PriceTable, *, since: datetime | None = None) -> HostBill:
    """The host's bill from every transcript under `directory`, newest session first."""
    bill = HostBill(str(directory), [])
    turns = read_turns(host_files(directory, bill), bill, since)
    price_turns(turns, prices, bill)
    return bill
