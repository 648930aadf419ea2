"""Stored time stamps: one fixed width in UTC, so string order is time order (the indexes rely on it)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from offload.infra.ledger import windows as w

ZONES = st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))])
TIMES = st.datetimes(min_value=datetime(1990, 1, 2), max_value=datetime(9998, 12, 30), timezones=ZONES)


@given(TIMES)
def test_a_stamp_is_the_fixed_width_utc_form_of_its_time(t: datetime) -> None:
    stamp = w.iso(t)
    assert stamp == t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # the format every stored row has
    assert len(stamp) == 27
    assert w.day(t) == stamp[:10]


@given(TIMES, TIMES)
def test_stamps_sort_as_their_times_do(a: datetime, b: datetime) -> None:
    assert (w.iso(a) < w.iso(b)) == (a < b)


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        w.iso(datetime(2026, 11, 30, 12, 0))
    with pytest.raises(ValueError, match="naive"):
        w.day(datetime(2026, 11, 30, 12, 0))
