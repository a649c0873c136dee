"""Cron schedules: next fire times, time zones, and validation at definition time."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

import stepline
from stepline.engine import cron


def _ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def test_next_fire_in_utc_and_in_a_zone() -> None:
    base = _ms(datetime(2026, 1, 1, 0, 1, tzinfo=UTC))
    assert cron.next_fire_ms("*/5 * * * *", base) == _ms(datetime(2026, 1, 1, 0, 5, tzinfo=UTC))
    # 09:00 in Paris is 08:00 UTC in winter.
    assert cron.next_fire_ms("TZ=Europe/Paris 0 9 * * *", base) == _ms(datetime(2026, 1, 1, 8, 0, tzinfo=UTC))


@given(st.integers(min_value=0, max_value=4_000_000_000_000))
def test_next_fire_is_always_strictly_later(after_ms: int) -> None:
    assert cron.next_fire_ms("*/5 * * * *", after_ms) > after_ms


def test_on_cron_validates_at_definition_time() -> None:
    with pytest.raises(stepline.ConfigurationError, match="invalid cron schedule"):
        stepline.on_cron("every day")
    with pytest.raises(stepline.ConfigurationError, match="unknown time zone"):
        stepline.on_cron("0 9 * * *", tz="Mars/Olympus")
    with pytest.raises(stepline.ConfigurationError, match="unknown time zone"):
        stepline.on_cron("0 9 * * *", tz="Z" * 1000)  # longer than a file name may be
    with pytest.raises(stepline.ConfigurationError, match="never fires"):
        stepline.on_cron("0 0 31 2 *")  # valid fields, but February has no 31st
    assert stepline.on_cron("0 9 * * *", tz="Europe/Paris").wire_schedule == "TZ=Europe/Paris 0 9 * * *"
    assert stepline.on_cron("0 0 29 2 *").schedule == "0 0 29 2 *"  # leap years only, but it fires
