"""Capacity index formulas (tracker/capacity.py) and the registry fields behind them, with
hand-computed expected values."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from tracker.capacity import (
    Period,
    PeriodFacts,
    combine,
    domestic_capacity_rph,
    layer_c,
    layer_d,
    layer_s,
    period_ceil,
    period_floor,
    period_next,
    periods_between,
    score,
    sector_capacity_rph,
)
from tracker.registry import RegistryError, load, parse

MINIMAL = """
country: XX
country_name: Testland
reporting_currency: EUR
fx_to_reporting: {EUR: 1}
operators:
  - {id: home, name: Home Cloud, jurisdiction: XX}
  - {id: big, name: Big Cloud, jurisdiction: US}
facilities:
  - {id: home-1, operator: home, country: XX}
  - {id: big-local, operator: big, country: XX}
  - {id: big-us, operator: big, country: US}
providers:
  - {id: homeai, operator: home, default_facility: home-1}
agencies:
  - {id: a1, name: Agency One, sector: health, channel: ministry}
"""

# The version the released registry code gave MINIMAL (computed with the code at HEAD before
# the optional fields existed): adding optional fields must not re-version old registries.
MINIMAL_VERSION = "r-5f3461b125e95d25"


def with_capacity(home: str, local: str, abroad: str) -> str:
    return (
        MINIMAL.replace(
            "{id: home-1, operator: home, country: XX}",
            f"{{id: home-1, operator: home, country: XX{home}}}",
        )
        .replace(
            "{id: big-local, operator: big, country: XX}",
            f"{{id: big-local, operator: big, country: XX{local}}}",
        )
        .replace(
            "{id: big-us, operator: big, country: US}",
            f"{{id: big-us, operator: big, country: US{abroad}}}",
        )
    )


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


# ---- registry -------------------------------------------------------------------------------


def test_registry_without_new_fields_keeps_its_version() -> None:
    registry = parse(MINIMAL, "minimal")
    assert registry.version == MINIMAL_VERSION
    assert registry.targets is None
    dump = registry.model_dump(mode="json")
    assert "targets" not in dump
    assert all("serving_capacity_rph" not in f for f in dump["facilities"])


def test_declared_capacity_changes_the_version() -> None:
    registry = parse(with_capacity(", serving_capacity_rph: 100", "", ""), "cap")
    assert registry.version != MINIMAL_VERSION


def test_domestic_capacity_sums_facilities_on_domestic_soil_only() -> None:
    # 100 (domestic operator) + 50 (foreign operator, onshore) ; 1000 abroad does not count.
    text = with_capacity(
        ", serving_capacity_rph: 100",
        ", serving_capacity_rph: 50",
        ", serving_capacity_rph: 1000",
    )
    assert domestic_capacity_rph(parse(text, "cap")) == 150.0


def test_undeclared_capacity_counts_zero() -> None:
    assert domestic_capacity_rph(parse(MINIMAL, "minimal")) == 0.0


def test_negative_capacity_is_refused() -> None:
    with pytest.raises(RegistryError, match="serving_capacity_rph"):
        parse(with_capacity(", serving_capacity_rph: -1", "", ""), "bad")


def test_target_dates_must_increase() -> None:
    text = MINIMAL + (
        "targets:\n  domestic_share:\n"
        "    - {by: 2028-12-31, domestic_share: 0.5}\n"
        "    - {by: 2027-12-31, domestic_share: 0.4}\n"
    )
    with pytest.raises(RegistryError, match="strictly increasing"):
        parse(text, "bad")


def test_target_share_must_be_a_fraction() -> None:
    text = MINIMAL + "targets:\n  domestic_share:\n    - {by: 2028-12-31, domestic_share: 50}\n"
    with pytest.raises(RegistryError, match="domestic_share"):
        parse(text, "bad")


def test_targets_default_latency_objective() -> None:
    registry = parse(MINIMAL + "targets: {window_closes: 2028-12-31}\n", "t")
    assert registry.targets is not None
    assert registry.targets.latency_objective_ms == 2000
    assert registry.targets.domestic_share == []


def test_shipped_registry_declares_capacity_and_targets() -> None:
    registry, _ = load()
    assert registry.illustrative
    assert domestic_capacity_rph(registry) == 90_000.0
    assert registry.targets is not None
    assert registry.targets.window_closes is not None
    assert registry.targets.window_closes.year == 2028
    assert registry.targets.domestic_share[-1].domestic_share == 0.5


# ---- periods --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("period", "floor", "following"),
    [
        (Period.day, utc(2024, 3, 5), utc(2024, 3, 6)),
        (Period.week, utc(2024, 3, 4), utc(2024, 3, 11)),  # 2024-03-05 is a Tuesday
        (Period.month, utc(2024, 3, 1), utc(2024, 4, 1)),
        (Period.quarter, utc(2024, 1, 1), utc(2024, 4, 1)),
        (Period.year, utc(2024, 1, 1), utc(2025, 1, 1)),
    ],
)
def test_period_floor_and_next(period: Period, floor: datetime, following: datetime) -> None:
    value = utc(2024, 3, 5, 10, 20)
    assert period_floor(value, period) == floor
    assert period_next(floor, period) == following
    assert period_ceil(value, period) == following
    assert period_ceil(floor, period) == floor


def test_month_rolls_over_the_year() -> None:
    assert period_next(utc(2024, 12, 1), Period.month) == utc(2025, 1, 1)
    assert period_next(utc(2024, 10, 1), Period.quarter) == utc(2025, 1, 1)


def test_naive_datetimes_are_read_as_utc() -> None:
    assert period_floor(datetime(2024, 3, 5, 23), Period.day) == utc(2024, 3, 5)


def test_periods_between_covers_whole_periods() -> None:
    starts = periods_between(utc(2024, 1, 15), utc(2024, 4, 1), Period.month)
    assert starts == [utc(2024, 1, 1), utc(2024, 2, 1), utc(2024, 3, 1)]
    assert periods_between(utc(2024, 3, 1), utc(2024, 3, 1), Period.month) == []


# ---- C ----------------------------------------------------------------------------------------


def test_c_is_capacity_over_peak_hour() -> None:
    assert layer_c(90_000, 120_000) == 0.75


def test_c_is_capped_at_one() -> None:
    assert layer_c(90_000, 30_000) == 1.0


def test_c_no_capacity_is_zero() -> None:
    assert layer_c(0, 120_000) == 0.0


def test_c_no_demand_is_undefined() -> None:
    assert layer_c(90_000, 0) is None


def test_sector_capacity_is_pro_rata_of_requests() -> None:
    # education made 160k of the period's 270k requests: 90k * 16/27 = 53 333.3 req/h
    assert sector_capacity_rph(90_000, 160_000, 270_000) == pytest.approx(53_333.333333)
    assert sector_capacity_rph(90_000, 0, 0) == 0.0


# ---- S ----------------------------------------------------------------------------------------


def test_s_is_share_of_domestic_requests_within_objective() -> None:
    assert layer_s(270_000, 200_000, 160_000) == 0.8


def test_s_no_demand_is_undefined() -> None:
    assert layer_s(0, 0, 0) is None


def test_s_demand_but_nothing_domestic_is_zero() -> None:
    assert layer_s(500, 0, 0) == 0.0


# ---- D ----------------------------------------------------------------------------------------


def test_d_weights_activity_by_domestic_share() -> None:
    # 40 registered; active: 50k of 120k domestic, 110k of 110k, 40k of 40k; 37 inactive
    # D = (5/12 + 1 + 1) / 40 = 29/480
    agencies = [(120_000.0, 50_000.0), (110_000.0, 110_000.0), (40_000.0, 40_000.0)]
    agencies += [(0.0, 0.0)] * 37
    assert layer_d(agencies) == pytest.approx(29 / 480)


def test_d_no_active_agency_is_zero() -> None:
    assert layer_d([(0.0, 0.0)] * 4) == 0.0


def test_d_no_registered_agency_is_undefined() -> None:
    assert layer_d([]) is None


def test_d_active_but_all_offshore_counts_zero() -> None:
    assert layer_d([(100.0, 0.0), (100.0, 100.0)]) == 0.5


# ---- I and the asynchrony penalty -------------------------------------------------------------


def test_equal_layers_have_no_penalty() -> None:
    idx = combine(0.5, 0.5, 0.5)
    assert idx.index == 0.125
    assert idx.balanced_index == 0.125
    assert idx.asynchrony_penalty == 0.0
    assert idx.binding == "C"  # tie: first in C, S, D order


def test_uneven_layers_penalty_hand_computed() -> None:
    # I = 1 * 1 * 0.25 = 0.25; m = 0.75, m^3 = 27/64; penalty = 1 - (1/4)/(27/64) = 11/27
    idx = combine(1.0, 1.0, 0.25)
    assert idx.index == 0.25
    assert idx.balanced_index == pytest.approx(27 / 64)
    assert idx.asynchrony_penalty == pytest.approx(11 / 27)
    assert idx.binding == "D"


def test_a_zero_layer_loses_everything() -> None:
    # I = 0 while m = 0.5: the whole balanced capacity is lost to asynchrony
    idx = combine(1.0, 0.5, 0.0)
    assert idx.index == 0.0
    assert idx.asynchrony_penalty == 1.0
    assert idx.binding == "D"


def test_all_zero_layers_penalty_is_zero() -> None:
    idx = combine(0.0, 0.0, 0.0)
    assert idx.index == 0.0
    assert idx.asynchrony_penalty == 0.0


def test_unknown_layer_leaves_index_unknown() -> None:
    idx = combine(None, 0.8, 0.1)
    assert idx.index is None
    assert idx.asynchrony_penalty is None
    assert idx.binding is None
    assert idx.s == 0.8


def test_penalty_never_negative() -> None:
    for c, s, d in [(0.3, 0.3, 0.3000001), (1.0, 1.0, 1.0), (0.1, 0.9, 0.5), (1e-9, 1.0, 1.0)]:
        penalty = combine(c, s, d).asynchrony_penalty
        assert penalty is not None
        assert 0.0 <= penalty <= 1.0


# ---- score: facts -> layers -------------------------------------------------------------------


BASE = PeriodFacts(
    start=utc(2024, 3, 1),
    end=utc(2024, 4, 1),
    requests=160_000.0,
    peak_hour_requests=120_000.0,
    national_requests=270_000.0,
    domestic_requests=90_000.0,
    domestic_within_objective=60_000.0,
    domestic_latency_unmeasured=30_000.0,
    agencies=(
        ("a", 120_000.0, 50_000.0),
        ("b", 40_000.0, 40_000.0),
        *((f"z{i}", 0.0, 0.0) for i in range(8)),
    ),
)


def facts(**overrides: Any) -> PeriodFacts:
    return replace(BASE, **overrides)


def test_score_sector_hand_computed() -> None:
    # C = (90k * 160/270) / 120k = 4/9; S = 60/90 = 2/3; D = (5/12 + 1) / 10 = 17/120
    s = score(facts(), 90_000.0, sector="education")
    assert s.capacity_rph == pytest.approx(160_000 / 270_000 * 90_000)
    assert s.layers.c == pytest.approx(4 / 9)
    assert s.layers.s == pytest.approx(2 / 3)
    assert s.layers.d == pytest.approx(17 / 120)
    assert s.layers.index == pytest.approx(4 / 9 * 2 / 3 * 17 / 120)
    assert s.layers.binding == "D"
    assert s.active_agencies == 2


def test_score_national_uses_full_capacity() -> None:
    s = score(facts(), 90_000.0, sector=None)
    assert s.capacity_rph == 90_000.0
    assert s.layers.c == 0.75


def test_score_empty_period() -> None:
    empty = facts(
        requests=0.0,
        peak_hour_requests=0.0,
        national_requests=0.0,
        domestic_requests=0.0,
        domestic_within_objective=0.0,
        domestic_latency_unmeasured=0.0,
        agencies=(("a", 0.0, 0.0),),
    )
    s = score(empty, 90_000.0, sector=None)
    assert (s.layers.c, s.layers.s, s.layers.d) == (None, None, 0.0)
    assert s.layers.index is None
    assert s.active_agencies == 0
