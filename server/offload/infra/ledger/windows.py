"""UTC time stamps and budget windows. Stdlib only: `offload statusline` imports this.

Every stored time has one fixed width ('2026-11-23T11:35:14.000000Z') so that string order is
time order, which is what lets SQL compare stamps and use the indexes.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_SPAN = re.compile(r"^\s*(\d+)\s*([dh])\s*$")


def utcnow() -> datetime:
    return datetime.now(UTC)


def _utc(t: datetime) -> datetime:
    if t.tzinfo is None:
        raise ValueError("naive datetime: pass an aware UTC time")
    return t if t.tzinfo is UTC else t.astimezone(UTC)


def iso(t: datetime) -> str:
    # isoformat, not strftime: a settled call writes about ten stamps, and strftime was a tenth of
    # its Python time. The first 26 characters are the fixed-width stamp; '+00:00' becomes 'Z'.
    return _utc(t).isoformat(timespec="microseconds")[:26] + "Z"


def day(t: datetime) -> str:
    """The UTC day of `t`, 'YYYY-MM-DD': the prefix of its `iso` stamp (spend_rollup's day)."""
    return _utc(t).date().isoformat()


def day_start(t: datetime) -> datetime:
    t = t.astimezone(UTC)
    return datetime(t.year, t.month, t.day, tzinfo=UTC)


def next_day(t: datetime) -> datetime:
    return day_start(t) + timedelta(days=1)


def month_start(t: datetime) -> datetime:
    t = t.astimezone(UTC)
    return datetime(t.year, t.month, 1, tzinfo=UTC)


def next_month(t: datetime) -> datetime:
    t = t.astimezone(UTC)
    return datetime(t.year + (t.month == 12), t.month % 12 + 1, 1, tzinfo=UTC)


def fmt_reset(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def parse_since(text: str | None, now: datetime) -> datetime:
    """`YYYY-MM-DD` (midnight UTC) or a span back from now like `7d` / `24h`; default 30 days."""
    if text is None or not text.strip():
        return now - timedelta(days=30)
    m = _SPAN.match(text)
    if m:
        n = int(m.group(1))
        try:
            return now - (timedelta(days=n) if m.group(2) == "d" else timedelta(hours=n))
        except OverflowError:
            raise ValueError(f"--since {text!r}: too far back; try a date like 2026-11-01") from None
    try:
        d = datetime.strptime(text.strip(), "%Y-%m-%d")
    except ValueError:
        raise ValueError(f"--since {text!r}: expected a date like 2026-11-01 or a span like 7d or 24h") from None
    return d.replace(tzinfo=UTC)
