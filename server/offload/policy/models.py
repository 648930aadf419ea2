"""The routing policy as frozen pydantic models (YAML -> `Policy`, see `loader.py`).

Every model forbids unknown keys, and names the allowed ones when it refuses one, because a
typo in a policy file (`on_exeed: downgrade`) must not silently fall back to a default. Errors
raised here are turned into `ConfigError`s that name the file and field path by the loader.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    StrictInt,
    StrictStr,
    model_validator,
)
from pydantic_core import PydanticCustomError

from offload.core.cache_placement import Placement
from offload.core.money import usd_to_pusd
from offload.core.scopes import SCOPES

DIFFICULTIES: tuple[str, ...] = ("easy", "medium", "hard")
TRIGGERS: tuple[str, ...] = ("max_tokens", "refusal", "schema_invalid", "must_match_failed", "api_error")
DEFAULT_MAX_TOKENS = 4096

Difficulty = Literal["easy", "medium", "hard"]
Trigger = Literal["max_tokens", "refusal", "schema_invalid", "must_match_failed", "api_error"]
Ttl = Literal["5m", "1h"]

_TIER_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,39}$")


def _fail(kind: str, message: str, **ctx: Any) -> PydanticCustomError:
    return PydanticCustomError(kind, message, ctx or None)


def _as_list(value: Any) -> Any:
    """Accept a scalar where a list is expected (`task: classify` == `task: [classify]`)."""
    return [value] if isinstance(value, str) else value


def _as_list_any(value: Any) -> Any:
    return value if isinstance(value, list | tuple) else [value]


def _difficulties(value: Any) -> tuple[str, ...]:
    # Validated by hand so the error sits on `when.difficulty` whether a scalar or a list was given.
    items = _as_list(value)
    if not isinstance(items, list) or not items:
        raise _fail("difficulty", "expected one of easy, medium, hard (or a non-empty list of them)")
    bad = [v for v in items if v not in DIFFICULTIES]
    if bad:
        raise _fail("difficulty", "expected one of easy, medium, hard, got {got}", got=repr(bad[0]))
    return tuple(dict.fromkeys(items))


MAX_USD = Decimal(1_000_000)


def _usd(value: Any) -> Any:
    """Dollar amounts become exact Decimals: a YAML float like 0.1 goes through str(), never float math."""
    if isinstance(value, bool):
        raise _fail("usd", "expected a dollar amount like 2 or 0.50, got {got}", got=repr(value))
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _fail("usd", "expected a finite dollar amount, got {got}", got=repr(value))
        value = str(value)
    if isinstance(value, int | str):
        try:
            dec = Decimal(str(value).strip().lstrip("$"))
        except (InvalidOperation, ValueError):
            raise _fail("usd", "expected a dollar amount like 2 or 0.50, got {got}", got=repr(value)) from None
        if not dec.is_finite() or dec < 0:
            raise _fail("usd", "expected a dollar amount of 0 or more, got {got}", got=repr(value))
        if dec > MAX_USD:  # the ledger stores picodollars in 64-bit integers
            raise _fail(
                "usd",
                "{got} is over the largest amount offload tracks ($1,000,000); omit it for no limit",
                got=f"{dec:.6g}",
            )
        try:
            usd_to_pusd(dec)
        except ValueError:
            raise _fail("usd", "{got} is finer than a picodollar; round it", got=repr(value)) from None
        return dec
    raise _fail("usd", "expected a dollar amount like 2 or 0.50, got {got}", got=repr(value))


def _fraction(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _fail("fraction", "expected a fraction in (0, 1] like 0.8, got {got}", got=repr(value))
    try:
        dec = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise _fail("fraction", "expected a fraction in (0, 1] like 0.8, got {got}", got=repr(value)) from None
    if not dec.is_finite() or not (0 < dec <= 1):
        raise _fail("fraction", "expected a fraction in (0, 1] like 0.8, got {got}", got=repr(value))
    return dec


Usd = Annotated[Decimal, BeforeValidator(_usd)]
Fraction = Annotated[Decimal, BeforeValidator(_fraction)]
PositiveInt = Annotated[StrictInt, Field(gt=0)]
NonNegInt = Annotated[StrictInt, Field(ge=0)]
TierName = StrictStr
ModelId = Annotated[StrictStr, Field(min_length=1)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        # pydantic's own extra_forbidden message does not say what *is* allowed; this one does.
        if isinstance(data, Mapping):
            allowed = list(cls.model_fields)
            for key in data:
                if key not in allowed:
                    raise _fail(
                        "unknown_key",
                        "unknown key {key}; allowed keys here: {allowed}",
                        at=str(key),
                        key=repr(key),
                        allowed=", ".join(allowed),
                    )
        elif data is not None and not isinstance(data, BaseModel):
            raise _fail(
                "mapping",
                "expected a mapping with keys {allowed}, got {got}",
                allowed=", ".join(cls.model_fields),
                got=type(data).__name__,
            )
        return data


class When(_Section):
    """Conditions of one rule; all given conditions must hold. An empty `when` always matches."""

    task: Annotated[tuple[Annotated[StrictStr, Field(min_length=1)], ...], BeforeValidator(_as_list)] | None = None
    difficulty: Annotated[tuple[Difficulty, ...], BeforeValidator(_difficulties)] | None = None
    input_tokens_over: NonNegInt | None = None
    input_tokens_under: PositiveInt | None = None
    prompt_matches: StrictStr | None = None

    _regex: re.Pattern[str] | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _check(self) -> When:
        if self.prompt_matches is not None:
            try:
                self._regex = re.compile(self.prompt_matches)
            except (re.error, RecursionError, OverflowError) as exc:
                raise _fail(
                    "regex", "not a valid regular expression: {why}", at="prompt_matches", why=str(exc)
                ) from None
        lo, hi = self.input_tokens_over, self.input_tokens_under
        if lo is not None and hi is not None and hi <= lo + 1:
            raise _fail(
                "token_range",
                "must be above input_tokens_over ({lo}) + 1, or no prompt can match",
                at="input_tokens_under",
                lo=lo,
            )
        return self

    def matches(self, *, prompt_tokens: int, task: str | None, difficulty: str | None, prompt_text: str) -> bool:
        if self.task is not None and task not in self.task:
            return False
        if self.difficulty is not None and difficulty not in self.difficulty:
            return False
        if self.input_tokens_over is not None and not prompt_tokens > self.input_tokens_over:
            return False
        if self.input_tokens_under is not None and not prompt_tokens < self.input_tokens_under:
            return False
        return not (self._regex is not None and self._regex.search(prompt_text) is None)

    def describe(self) -> str:
        """Compact, YAML-like text of the conditions, for decisions and `policy explain`."""
        parts: list[str] = []
        if self.task is not None:
            parts.append(f"task: [{', '.join(self.task)}]")
        if self.difficulty is not None:
            d = self.difficulty
            parts.append(f"difficulty: {d[0]}" if len(d) == 1 else f"difficulty: [{', '.join(d)}]")
        if self.input_tokens_over is not None:
            parts.append(f"input_tokens_over: {self.input_tokens_over}")
        if self.input_tokens_under is not None:
            parts.append(f"input_tokens_under: {self.input_tokens_under}")
        if self.prompt_matches is not None:
            quoted = self.prompt_matches.replace("'", "''")  # YAML single-quote style, as written in the file
            parts.append(f"prompt_matches: '{quoted}'")
        return "{" + ", ".join(parts) + "}"


class Rule(_Section):
    when: When = When()
    tier: TierName
    name: StrictStr | None = None


class Escalation(_Section):
    ladder: tuple[TierName, ...] = ()
    on: Annotated[tuple[Trigger, ...], BeforeValidator(_as_list)] = ("max_tokens", "refusal")
    max_steps: NonNegInt = 1

    @model_validator(mode="after")
    def _check(self) -> Escalation:
        seen: set[str] = set()
        for i, tier in enumerate(self.ladder):
            if tier in seen:
                raise _fail("ladder", "tier {tier} appears twice in the ladder", at=f"ladder[{i}]", tier=repr(tier))
            seen.add(tier)
        return self


class Budgets(_Section):
    session_usd: Usd | None = None
    daily_usd: Usd | None = None
    monthly_usd: Usd | None = None
    # Team budgets, per calendar month (UTC): per user (HTTP token name or OFFLOAD_USER), per project
    # (CLAUDE_PROJECT_DIR or OFFLOAD_PROJECT), and for everyone on the ledger.
    user_usd: Usd | None = None
    project_usd: Usd | None = None
    team_usd: Usd | None = None
    on_exceed: Literal["refuse", "downgrade"] = "refuse"
    warn_at: Annotated[tuple[Fraction, ...], BeforeValidator(_as_list_any)] = (Decimal("0.8"),)

    def limits_pusd(self) -> dict[str, int]:
        """The limits that are set, as integer picodollars: keys among `SCOPES`."""
        out: dict[str, int] = {}
        for scope in SCOPES:
            usd = getattr(self, f"{scope}_usd")
            if usd is not None:
                out[scope] = usd_to_pusd(usd)
        return out


class Caching(_Section):
    """Where offload places cache breakpoints.

    `adaptive` places one only where reuse is expected to repay the write premium (the prefix's
    reuse history in the ledger, or a fan-out/batch that reuses it by construction) and picks
    5m or 1h by the same arithmetic; `always` places one on every cacheable prefix with `ttl`
    (`batch_ttl` in batches); `never` places none.
    """

    placement: Placement = "adaptive"
    ttl: Ttl = "5m"
    batch_ttl: Ttl = "1h"


class Triage(_Section):
    """A cheap classification call that guesses `difficulty` when the caller gives none."""

    enabled: StrictBool = True
    tier: TierName
    max_tokens: PositiveInt = 8


class Learning(_Section):
    """Learn each task family's starting tier from check results, escalations and the host's verdicts.

    A family starts at the cheapest ladder tier whose recent adequacy (last `window` answers) is
    at least `target` over at least `min_samples` judged answers; a share `explore` of calls that
    can be judged start one tier lower, so a family that moved up can come back down.
    """

    enabled: StrictBool = False
    target: Fraction = Decimal("0.9")
    min_samples: PositiveInt = 5
    window: PositiveInt = 40
    explore: Annotated[Decimal, Field(ge=0, lt=1)] = Decimal("0.05")
    seed: StrictInt | None = None  # fixes the exploration draws (tests, benches)
    # For a host that judges answers (it has used redo_of): start one tier lower whenever the
    # family's record there makes that cheaper on average, counting the redo. Works with
    # `enabled: false` too.
    judged_trials: StrictBool = True
    # Cut a first try at this many times the longest answer the family had accepted lately (after
    # min_samples of them), unless the caller set max_tokens, and only where a cut answer climbs a
    # rung (never on the top one); 0 turns it off.
    output_cap: Annotated[Decimal, Field(ge=0)] = Decimal("2")


class BatchPrefs(_Section):
    prefer_when_downgrading: StrictBool = False
    # Bulk work that no rule matches: mechanical far more often than the unlabelled sync work
    # `default_tier` is set for. None: `default_tier`.
    default_tier: TierName | None = None


class Policy(_Section):
    name: Annotated[StrictStr, Field(min_length=1)]
    description: StrictStr | None = None
    tiers: dict[TierName, ModelId]
    rules: tuple[Rule, ...] = ()
    default_tier: TierName
    escalation: Escalation = Escalation()
    budgets: Budgets = Budgets()
    caching: Caching = Caching()
    baseline: ModelId
    max_tokens: dict[TierName, PositiveInt] = {}
    forced_tiers: tuple[TierName, ...] | None = None
    triage: Triage | None = None
    learning: Learning = Learning()
    batch: BatchPrefs = BatchPrefs()
    store_text: StrictBool = False
    # A call with no task label whose first word is a label the rules test is routed and learned
    # from under it, where that label is what routes it (`engine.inferred_task`): "Classify this
    # ticket: ..." is classification whether or not the host says so.
    infer_task: StrictBool = True

    # Every task label a rule tests, lowercased, to the first spelling a rule gives it (read on every
    # call without a task, so worked out once per loaded policy).
    _labels: dict[str, str] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _index_labels(self) -> Policy:
        for rule in self.rules:
            for label in rule.when.task or ():
                self._labels.setdefault(label.lower(), label)
        return self

    @model_validator(mode="after")
    def _check_tiers(self) -> Policy:
        if not self.tiers:
            raise _fail("tiers", "must name at least one tier, e.g. cheap: claude-haiku-5-5", at="tiers")
        for tier in self.tiers:
            if not _TIER_NAME.match(tier):
                raise _fail(
                    "tier_name",
                    "tier name {tier} must start with a letter and use only letters, digits, _ and -",
                    at="tiers",
                    tier=repr(tier),
                )
        known = ", ".join(self.tiers)
        refs: list[tuple[str, str]] = [(f"rules[{i}].tier", r.tier) for i, r in enumerate(self.rules)]
        refs.append(("default_tier", self.default_tier))
        refs += [(f"escalation.ladder[{i}]", t) for i, t in enumerate(self.escalation.ladder)]
        refs += [(f"forced_tiers[{i}]", t) for i, t in enumerate(self.forced_tiers or ())]
        refs += [(f"max_tokens.{t}", t) for t in self.max_tokens]
        if self.triage is not None:
            refs.append(("triage.tier", self.triage.tier))
        if self.batch.default_tier is not None:
            refs.append(("batch.default_tier", self.batch.default_tier))
        for where, tier in refs:
            if tier not in self.tiers:
                raise _fail(
                    "tier_ref",
                    "unknown tier {tier}; defined tiers are {known}",
                    at=where,
                    tier=repr(tier),
                    known=known,
                )
        return self

    @property
    def forceable(self) -> tuple[str, ...]:
        """Tiers a caller may pick with `tier=` (all of them unless `forced_tiers` narrows it)."""
        return tuple(self.tiers) if self.forced_tiers is None else self.forced_tiers

    def max_tokens_for(self, tier: str, requested: int | None = None) -> int:
        if requested is not None:
            return requested
        return self.max_tokens.get(tier, DEFAULT_MAX_TOKENS)

    @property
    def task_labels(self) -> frozenset[str]:
        """Every task label a rule tests, lowercased."""
        return frozenset(self._labels)

    def task_label(self, word: str) -> str | None:
        """The label a rule tests that `word` names (any case), as the first such rule spells it."""
        return self._labels.get(word.lower())

    def rule_label(self, index: int) -> str:
        rule = self.rules[index]
        name = f" {rule.name}" if rule.name else ""
        return f"rules[{index}]{name} {rule.when.describe()}"

    def models(self) -> tuple[str, ...]:
        """Every model id the policy can send to (tiers and baseline), for price-table checks."""
        return tuple(dict.fromkeys([*self.tiers.values(), self.baseline]))
