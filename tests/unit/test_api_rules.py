"""Pure rules behind the read API: suppression, rate limiting, cursors, scoping, SQL shape."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import orjson
import pytest
from fastapi import HTTPException

from api import auth as auth_module
from api.auth import RateLimiter
from api.params import min_records, outside_registry, scope
from tracker import registry as registry_mod
from tracker.access import PUBLIC, Identity, Role, hash_key, new_key
from tracker.disclosure import hidden, suppressed, suppressed_nested
from tracker.metrics import Basis
from tracker.queries import Dimension, Interval, breakdown_sql, series_sql
from tracker.settings import ApiSettings
from tracker.usage_export import Cursor, CursorError, select_sql


def test_primary_suppression() -> None:
    assert suppressed([30, 40, 50], 10) == set()
    assert suppressed([4, 7, 30, 50], 10) == {0, 1}  # 11 together: not a small cell
    assert hidden(9, 10) and not hidden(10, 10) and not hidden(0, 10)


def test_small_cells_hidden_together_take_more_until_they_are_not_small() -> None:
    # Found in review: two cells of one record each were withheld, and the total minus the
    # shown cells gave back their 2-record sum, one hospital's whole usage.
    assert suppressed([30, 1, 1], 10) == {0, 1, 2}
    assert suppressed([3, 6, 30, 50], 10) == {0, 1, 2}
    assert suppressed([3, 6, 1, 30, 50], 10) == {0, 1, 2}  # 10 together: enough
    assert suppressed([1, 1], 10) == {0, 1}  # nothing else to take


def test_a_lone_small_cell_takes_the_next_smallest_with_it() -> None:
    assert suppressed([30, 3, 12, 50], 10) == {1, 2}
    # Nothing to pair with: the table is the cell itself.
    assert suppressed([3], 10) == {0}
    assert suppressed([3, 0], 10) == {0}


def test_cells_left_out_past_a_limit_count_as_hidden() -> None:
    # Found in review: with limit=2 a 3-record cell left out alone was total - the two shown.
    assert suppressed([30, 12, 3], 10, withheld=[2]) == {1, 2}
    # Several left out, or one that is not small: nothing more to hide.
    assert suppressed([30, 12, 3, 11], 10, withheld=[2, 3]) == {2, 3}
    assert suppressed([30, 12, 11], 10, withheld=[2]) == {2}
    assert suppressed([30, 3, 11], 10, withheld=[2]) == {1, 2}


def test_nested_tables_are_suppressed_group_by_group() -> None:
    # Found in review: sarvam 30 and krutrim 3 domestic, openai 12 foreign, with the origins'
    # totals published: hiding openai beside krutrim left krutrim = domestic - sarvam.
    records, groups = [30, 3, 12], ["domestic", "domestic", "foreign"]
    assert suppressed_nested(records, groups, 10) == {0, 1}
    # A group hidden in its own table keeps a cell hidden, or its cells would add up to it.
    assert suppressed_nested([20, 20, 3], ["domestic", "domestic", "foreign"], 10,
                             hidden_groups={"domestic", "foreign"}) == {0, 2}  # fmt: skip
    assert suppressed_nested([20, 20], ["domestic", "domestic"], 10) == set()
    # Cells left out past a limit count as withheld within their own group only: the foreign
    # 3 left out alone takes openai 12 with it; the domestic cells stay shown.
    groups = ["domestic", "domestic", "foreign", "foreign"]
    assert suppressed_nested([30, 20, 12, 3], groups, 10, withheld={3}) == {2, 3}
    assert suppressed_nested([30, 20, 12, 30], groups, 10, withheld={3}) == {3}


def test_rate_limiter_bursts_then_refills() -> None:
    limiter = RateLimiter()
    t = 1000.0
    # 12/minute: bursts of max(5, 12 / 6) = 5, then one token every 5 seconds.
    allowed = [limiter.take("ip:a", 12, now=t) == 0 for _ in range(7)]
    assert allowed == [True] * 5 + [False] * 2
    wait = limiter.take("ip:a", 12, now=t)
    assert 4.9 < wait <= 5.0
    assert limiter.take("ip:a", 12, now=t + 4.0) > 0
    assert limiter.take("ip:a", 12, now=t + 5.01) == 0
    assert limiter.take("ip:b", 12, now=t) == 0  # buckets are per key
    big = RateLimiter()
    assert sum(big.take("k", 600, now=t) == 0 for _ in range(200)) == 100  # 600 / 6


def test_rate_limiter_table_stays_bounded_whatever_the_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Found in review: the table was pruned only on a refusal, so one allowed request from
    # each of many addresses grew it without bound.
    monkeypatch.setattr(auth_module, "_MAX_BUCKETS", 1000)
    limiter = RateLimiter()
    t = 1000.0
    for i in range(5000):  # all within one second: none idle
        assert limiter.take(f"ip:{i}", 60, now=t + i / 5000) == 0
        assert len(limiter._buckets) <= 1000
    assert "ip:4999" in limiter._buckets and "ip:0" not in limiter._buckets  # newest kept
    # Limiting still works for a key seen since the prune: a burst of 10, then refused.
    assert [limiter.take("ip:busy", 60, now=t + 2) == 0 for _ in range(11)][-2:] == [True, False]


def test_cursor_round_trip_and_garbage() -> None:
    c = Cursor("in-sbi", datetime(2026, 6, 1, 9, 30, 0, 123000, tzinfo=UTC), "gw", "r,1")
    assert Cursor.decode(c.encode()) == c
    for bad in ("", "!!!", "W10", "WyJhIiwiYiIsImMiLCJkIl0"):  # [], ["a","b","c","d"]
        with pytest.raises(CursorError):
            Cursor.decode(bad)


def crafted(*fields: object) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(fields))).decode().rstrip("=")


@pytest.mark.parametrize(
    "when",
    [
        "0001-01-01T00:00:00+14:00",  # cannot even be converted to UTC (OverflowError)
        "0001-01-01T00:00:00",  # converts, but the engine refuses the literal
        "1999-12-31T23:59:59Z",
        "2100-01-01T00:00:00Z",
        "9999-12-31T23:59:59-14:00",
        "2026-13-01T00:00:00Z",
    ],
)
def test_a_crafted_cursor_time_outside_the_query_years_is_not_a_cursor(when: str) -> None:
    with pytest.raises(CursorError, match="not a cursor returned by this API"):
        Cursor.decode(crafted("in-sbi", when, "gw", "r1"))


def test_a_cursor_time_is_read_as_utc() -> None:
    naive = Cursor.decode(crafted("in-sbi", "2026-06-01T09:30:00", "gw", "r1"))
    assert naive.occurred_at == datetime(2026, 6, 1, 9, 30, tzinfo=UTC)
    shifted = Cursor.decode(crafted("in-sbi", "2026-06-01T15:00:00+05:30", "gw", "r1"))
    assert shifted.occurred_at == datetime(2026, 6, 1, 9, 30, tzinfo=UTC)
    assert shifted.occurred_at.tzinfo is UTC


def test_agency_scope() -> None:
    agency = Identity(Role.agency, "k", "in-sbi")
    assert scope(agency, {}) == {"agency_id": ["in-sbi"]}
    assert scope(agency, {"agency_id": ["in-sbi"], "tier": ["onshore"]})["agency_id"] == ["in-sbi"]
    with pytest.raises(HTTPException) as exc:
        scope(agency, {"agency_id": ["in-sbi", "in-cbse"]})
    assert exc.value.status_code == 403
    assert scope(PUBLIC, {"tier": ["x"]}) == {"tier": ["x"]}


def test_only_public_answers_are_suppressed() -> None:
    s = ApiSettings(min_cell_records=7)
    assert min_records(PUBLIC, s) == 7
    for role in (Role.agency, Role.auditor, Role.admin):
        assert min_records(Identity(role, "k"), s) == 0
    assert PUBLIC.audited is False and Identity(Role.agency, "k", "a").audited


def test_vocabulary_is_the_registry() -> None:
    # What is then looked up in the landed usage (check_vocabulary) is tested on a real store:
    # test_api_queries.py::test_an_agency_removed_from_the_registry_keeps_its_history_selectable.
    registry = registry_mod.load()[0]
    assert outside_registry(registry, {"sector": ["health"], "agency_id": ["in-sbi"]}) == {}
    assert outside_registry(
        registry, {"channel": ["carrier_pigeon", "ministry"], "agency_id": ["in-sbi", "in-x"]}
    ) == {"channel": ["carrier_pigeon"], "agency_id": ["in-x"]}


def test_sql_binds_values_and_rejects_unknown_names() -> None:
    sql = breakdown_sql(Basis.tokens, Dimension.sector, {"agency_id": ["x' OR 1=1 --"]})
    assert "x' OR" not in sql and "{agency_id:Array(String)}" in sql
    assert "toMonday" in series_sql(Basis.requests, Interval.week, {})
    with pytest.raises(ValueError):
        select_sql({"payload": ["x"]}, None, limited=True)


def test_keys_are_random_and_hashed() -> None:
    a, b = new_key(), new_key()
    assert a != b and a.startswith("tka_") and len(a) > 40
    assert hash_key(a) != a and len(hash_key(a)) == 64
