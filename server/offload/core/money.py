"""Money as integer picodollars (pusd).

Every published rate (USD per million tokens, down to $0.005/MTok at batch rates) times every
multiplier we apply is a whole number of picodollars per token, so sums are exact integers and
no float ever touches a cost.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

PUSD_PER_USD = 10**12
PUSD_PER_MTOK_USD = 10**6  # $1 per million tokens == 1_000_000 pusd per token
TINY_USD = Decimal("0.0001")  # fmt_usd: below this, significant digits instead of 4 places
FLOOR_USD = Decimal("0.000001")  # fmt_usd: below this, "<$0.000001"


def usd_to_pusd(amount: Decimal | str | int) -> int:
    """Convert a dollar amount (never a float) to picodollars, refusing sub-picodollar residue."""
    if isinstance(amount, float):  # pragma: no cover - guarded by the type, kept for callers outside mypy
        raise TypeError("money must not be a float; pass a str or Decimal")
    value = Decimal(amount) * PUSD_PER_USD
    if value != value.to_integral_value():
        raise ValueError(f"{amount} USD is not a whole number of picodollars")
    return int(value)


def to_usd(pusd: int) -> Decimal:
    return Decimal(pusd) / PUSD_PER_USD


def fmt_usd(pusd: int, *, places: int | None = None) -> str:
    """Short dollar string: 4 decimals under a dollar (so small calls are visible), else cents.

    A nonzero amount never prints as zero: under $0.0001 (a typical Haiku call) it gets two
    significant digits (`$0.000023`), and under a millionth of a dollar it reads `<$0.000001`.
    """
    usd = to_usd(pusd)
    sign = "-" if usd < 0 else ""
    if places is None and pusd and abs(usd) < TINY_USD:
        if abs(usd) < FLOOR_USD:
            return f"{sign}<${FLOOR_USD:f}"
        two_digits = Decimal(1).scaleb(abs(usd).adjusted() - 1)
        return f"{sign}${abs(usd).quantize(two_digits, rounding=ROUND_HALF_EVEN).normalize():f}"
    if places is None:
        places = 2 if abs(usd) >= 1 else 4
    q = Decimal(1).scaleb(-places)
    rounded = usd.quantize(q, rounding=ROUND_HALF_EVEN)
    sign = "-" if rounded < 0 else ""
    return f"{sign}${abs(rounded):,.{places}f}"


def usd_json(pusd: int) -> str:
    """Exact decimal string for structured output and --json (no float rounding for scripts)."""
    return format(to_usd(pusd).normalize(), "f")
