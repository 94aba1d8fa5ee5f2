"""Outlook: OLS trend, prediction band and target dates (tracker/outlook.py), hand-computed."""

from __future__ import annotations

import math
from datetime import date

import pytest

from tracker.outlook import (
    HORIZON_MONTHS,
    MonthShare,
    Status,
    fit_ols,
    month_index,
    month_start,
    outlook,
    t_quantile,
)
from tracker.registry import TargetPoint, Targets


def history(*shares: float, first: date = date(2026, 1, 1)) -> list[MonthShare]:
    """Monthly shares from `first`, each month 1000 requests."""
    start = month_index(first)
    return [MonthShare(month_start(start + i), 1000.0, s * 1000) for i, s in enumerate(shares)]


def targets(*points: tuple[date, float], window: date | None = None) -> Targets:
    return Targets(
        domestic_share=[TargetPoint(by=d, domestic_share=s) for d, s in points],
        window_closes=window,
    )


FINAL = targets((date(2028, 12, 31), 0.5), window=date(2028, 12, 31))


# ---- t quantiles: published two-sided 95% values ----------------------------------------------


@pytest.mark.parametrize(
    ("dof", "expected"),
    [(1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (10, 2.228), (30, 2.042), (120, 1.980)],
)
def test_t_quantile_matches_tables(dof: int, expected: float) -> None:
    assert t_quantile(0.95, dof) == pytest.approx(expected, abs=5e-4)


def test_t_quantile_refuses_zero_dof() -> None:
    with pytest.raises(ValueError):
        t_quantile(0.95, 0)


# ---- OLS ----------------------------------------------------------------------------------------


def test_fit_hand_computed() -> None:
    # x = 0..3, y = .10 .20 .20 .30: x_mean 1.5, Sxx 5, Sxy 0.3 -> slope 0.06, intercept 0.11;
    # residuals -.01 .03 -.03 .01 -> SSE 0.002, s = sqrt(0.002 / 2) = sqrt(0.001)
    fit = fit_ols([(0, 0.10), (1, 0.20), (2, 0.20), (3, 0.30)])
    assert fit is not None
    assert fit.slope == pytest.approx(0.06)
    assert fit.intercept == pytest.approx(0.11)
    assert fit.sxx == 5
    assert fit.residual_se == pytest.approx(math.sqrt(0.001))
    # at x = 4: s * sqrt(1 + 1/4 + 2.5^2/5) = sqrt(0.001 * 2.5) = 0.05; times t(2) = 4.302653
    assert fit.predict(4) == pytest.approx(0.35)
    assert fit.half_width(4) == pytest.approx(4.302653 * 0.05, abs=1e-6)


def test_fit_two_points_has_no_band() -> None:
    fit = fit_ols([(0, 0.2), (1, 0.3)])
    assert fit is not None
    assert fit.slope == pytest.approx(0.1)
    assert fit.residual_se is None
    assert fit.half_width(5) is None


def test_fit_single_point_is_none() -> None:
    assert fit_ols([(0, 0.2)]) is None
    assert fit_ols([]) is None


def test_fit_perfect_line_has_zero_band() -> None:
    fit = fit_ols([(0, 0.1), (1, 0.2), (2, 0.3)])
    assert fit is not None
    assert fit.residual_se == pytest.approx(0.0, abs=1e-12)
    assert fit.half_width(10) == pytest.approx(0.0, abs=1e-9)


# ---- the outlook --------------------------------------------------------------------------------


def test_no_history() -> None:
    result = outlook([], FINAL)
    assert result.status is Status.no_history
    assert result.fit is None


def test_single_month_below_target_is_insufficient() -> None:
    result = outlook(history(0.3), FINAL)
    assert result.status is Status.insufficient_history
    assert result.fit is None
    assert result.reached is None
    assert result.projection == []
    assert result.final_target is not None
    assert result.final_target.projected is None


def test_single_month_above_target_is_already_met() -> None:
    result = outlook(history(0.62), FINAL)
    assert result.status is Status.already_met
    assert result.reached == date(2026, 1, 1)


def test_already_above_target_with_history() -> None:
    result = outlook(history(0.40, 0.45, 0.55), FINAL)
    assert result.status is Status.already_met
    assert result.reached == date(2026, 3, 1)


def test_flat_trend_is_not_on_current_trend() -> None:
    result = outlook(history(0.3, 0.3, 0.3), FINAL)
    assert result.status is Status.not_on_current_trend
    assert result.fit is not None
    assert result.fit.slope == 0.0
    assert result.reached is None
    assert result.reached_earliest is None
    # projection stays flat at 0.3 with a zero-width band (no residual)
    assert result.window is not None
    assert result.window.value == pytest.approx(0.3)
    assert result.window.lower == pytest.approx(0.3)


def test_falling_trend_is_not_on_current_trend() -> None:
    result = outlook(history(0.4, 0.35, 0.3), FINAL)
    assert result.status is Status.not_on_current_trend
    assert result.reached is None


def test_rising_trend_dates_hand_computed() -> None:
    # y = .10 .22 .28 .40 (Jan..Apr 2026): slope 0.096, intercept 0.106, s^2 = 0.00072 / 2
    # fitted >= 0.5 first at x = 5 (0.586; x = 4 gives 0.490) -> June 2026
    # upper edge at x = 4: 0.490 + 4.302653 * sqrt(0.00036 * 2.5) = 0.619 -> May 2026
    # lower edge: x = 6: 0.682 - 4.302653 * sqrt(0.00036 * 5.3) = 0.4941 (< 0.5);
    #             x = 7: 0.778 - 4.302653 * sqrt(0.00036 * 7.3) = 0.5574 -> August 2026
    result = outlook(history(0.10, 0.22, 0.28, 0.40), FINAL)
    assert result.fit is not None
    assert result.fit.slope == pytest.approx(0.096)
    assert result.fit.intercept == pytest.approx(0.106)
    assert result.reached == date(2026, 6, 1)
    assert result.reached_earliest == date(2026, 5, 1)
    assert result.reached_latest == date(2026, 8, 1)
    assert result.status is Status.on_track
    assert result.last_month == date(2026, 4, 1)


def test_behind_target_when_reached_after_its_date() -> None:
    late = targets((date(2026, 5, 31), 0.5))
    result = outlook(history(0.10, 0.22, 0.28, 0.40), late)
    assert result.reached == date(2026, 6, 1)
    assert result.status is Status.behind_target
    # the May projection: 0.490 < 0.5
    assert result.final_target is not None
    assert result.final_target.met is False
    assert result.final_target.projected is not None
    assert result.final_target.projected.value == pytest.approx(0.49)


def test_wide_band_lower_edge_never_reaches() -> None:
    # y = .10 .20 .20 .30: the lower edge's slope tends to 0.06 - 4.3027 * sqrt(0.001 / 5)
    # = -0.0008 < 0, so it never reaches 0.5; the fitted line does at x = 7 (0.53): Aug 2026
    result = outlook(history(0.10, 0.20, 0.20, 0.30), FINAL)
    assert result.reached == date(2026, 8, 1)
    assert result.reached_earliest == date(2026, 5, 1)  # upper at x = 4: 0.565
    assert result.reached_latest is None
    assert result.status is Status.on_track


def test_projection_is_clipped_and_reaches_the_last_target() -> None:
    result = outlook(history(0.10, 0.20, 0.20, 0.30), FINAL)
    assert result.projection[0].month == date(2026, 5, 1)
    assert result.projection[-1].month == date(2028, 12, 1)
    # Dec 2028 is x = 35: 0.11 + 0.06 * 35 = 2.21, clipped to 1
    assert result.window is not None
    assert result.window.value == 1.0
    for b in result.projection:
        assert b.value is not None and b.lower is not None and b.upper is not None
        assert 0.0 <= b.lower <= b.value <= b.upper <= 1.0


def test_trajectory_uses_observed_months() -> None:
    plan = targets((date(2026, 2, 28), 0.25), (date(2026, 12, 31), 0.5))
    result = outlook(history(0.10, 0.20, 0.20, 0.30), plan)
    first, last = result.trajectory
    assert first.observed == pytest.approx(0.20)
    assert first.met is False  # the observed 0.20 decides a month in history
    assert last.observed is None
    assert last.met is True  # Dec 2026: x = 11, 0.11 + 0.66 = 0.77


def test_no_target_configured() -> None:
    result = outlook(history(0.1, 0.2, 0.3), None)
    assert result.status is Status.no_target
    assert result.final_target is None
    assert len(result.projection) == 12  # a year ahead by default


def test_months_with_no_requests_are_not_observations() -> None:
    months = [
        *history(0.1),
        MonthShare(date(2026, 2, 1), 0.0, 0.0),
        *history(0.3, first=date(2026, 3, 1)),
    ]
    result = outlook(months, FINAL)
    assert result.fit is not None
    assert result.fit.n == 2
    # a gap month keeps its place on the time axis: slope (0.3 - 0.1) / 2 months
    assert result.fit.slope == pytest.approx(0.1)


def test_horizon_bounds_the_search() -> None:
    # slope 1e-5 per month from 0.1: 0.5 needs 40 000 months, beyond the horizon
    result = outlook(history(0.1, 0.10001, 0.10002), FINAL)
    assert result.fit is not None and result.fit.slope > 0
    assert result.status is Status.not_on_current_trend
    assert len(result.projection) <= HORIZON_MONTHS


def test_a_falling_trend_still_dates_the_band_edge_that_reaches_the_target() -> None:
    # Found in review: the edges were searched only for a rising trend, so a band whose upper
    # edge was already at the target in the first projected month gave no earliest date.
    result = outlook(history(0.48, 0.40, 0.47, 0.39), FINAL)
    assert result.fit is not None and result.fit.slope < 0
    assert result.status is Status.not_on_current_trend and result.reached is None
    first = result.projection[0]
    assert first.upper is not None and first.upper >= 0.5
    assert result.reached_earliest == first.month
    assert result.reached_latest is None  # the lower edge falls too


def test_two_months_have_no_band_and_so_no_edge_dates() -> None:
    # Found in review: without a band the edge searches used a half-width of 0 and copied the
    # trend's date into both.
    result = outlook(history(0.30, 0.40), FINAL)
    assert result.reached is not None and result.status is Status.on_track
    assert result.projection[0].upper is None
    assert (result.reached_earliest, result.reached_latest) == (None, None)
