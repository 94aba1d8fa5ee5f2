"""The years a query may span, and times read back from page cursors (callers may craft those).

A cursor is opaque to callers but not tamper-proof (base64 JSON), so a time inside it is caller
input like any other: parsed as ISO 8601, taken as UTC when it has no zone, and kept within the
years a query range may span. Outside them the engine refuses the literal (year 1), or Python
cannot even convert it (year 1 at +14:00 overflows), and either would surface as a 500.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

# Within ClickHouse's DateTime range with room to round to periods; nothing is recorded earlier.
# Every query range the API takes lies within these (api/params.py), so a cursor from one of its
# pages does too.
EARLIEST: Final = datetime(2000, 1, 1, tzinfo=UTC)
LATEST: Final = datetime(2100, 1, 1, tzinfo=UTC)


def as_utc(value: datetime) -> datetime:
    """`value` in UTC; a time without a zone is UTC, as ClickHouse reads it into DateTime('UTC')."""
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def within(when: datetime) -> datetime:
    """`when` in UTC (no zone: UTC); ValueError if it is not within EARLIEST..LATEST."""
    try:
        when = (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC)
    except OverflowError as exc:  # year 1 east of UTC, year 9999 west of it
        raise ValueError("time out of range") from exc
    if not EARLIEST <= when < LATEST:
        raise ValueError("time out of range")
    return when


def cursor_time(text: object) -> datetime:
    """The UTC time in a cursor; ValueError if it is not a time within EARLIEST..LATEST."""
    if not isinstance(text, str):
        raise ValueError("cursor time must be a string")
    return within(datetime.fromisoformat(text))
