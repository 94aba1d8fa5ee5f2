"""Outlook: the domestic share's monthly trend against the national target trajectory.

Method (docs/capacity.md): ordinary least squares of the monthly domestic share (by requests)
on the month index, every month with any request one equally weighted observation. The band
is the 95% prediction interval for a single future month,
    y_hat(x) +- t(0.975, n - 2) * s * sqrt(1 + 1/n + (x - x_mean)^2 / Sxx),
with s the residual standard error (n - 2 degrees of freedom). The projected date the target
is reached is the first month whose fitted value reaches it (earliest: the band's upper edge;
latest: its lower edge), searched up to HORIZON_MONTHS after the last observed month.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from clickhouse_connect.driver.client import Client

from tracker.capacity import DOMESTIC_TIERS
from tracker.metrics import ROLLUP, where_clause
from tracker.registry import Targets

HORIZON_MONTHS = 240
LEVEL = 0.95
_EPS = 1e-9  # float slack when comparing a fitted share with a target


class Status(StrEnum):
    no_history = "no_history"
    insufficient_history = "insufficient_history"  # one month: no trend can be fitted
    already_met = "already_met"  # the latest observed month is at or above the final target
    on_track = "on_track"  # trend reaches the final target by its date
    behind_target = "behind_target"  # trend reaches it, but after its date
    not_on_current_trend = "not_on_current_trend"  # flat/falling, or beyond the horizon
    no_target = "no_target"  # no trajectory configured in the registry


# ---- statistics (pure) -------------------------------------------------------------------


def _t_two_sided(t: float, dof: int) -> float:
    """P(|T| <= t) for Student's t with integer dof: the closed-form finite series of
    Abramowitz & Stegun 26.7.3-4 (exact, no special functions needed)."""
    theta = math.atan(t / math.sqrt(dof))
    cos2 = math.cos(theta) ** 2
    total, term = 1.0, 1.0
    if dof % 2 == 1:
        if dof == 1:
            return 2 * theta / math.pi
        for k in range(1, (dof - 3) // 2 + 1):
            term *= cos2 * (2 * k) / (2 * k + 1)
            total += term
        return 2 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)
    for k in range(1, (dof - 2) // 2 + 1):
        term *= cos2 * (2 * k - 1) / (2 * k)
        total += term
    return math.sin(theta) * total


def t_quantile(level: float, dof: int) -> float:
    """The t such that P(|T| <= t) = level (two-sided), by bisection; e.g. 12.706 (dof 1),
    4.303 (dof 2), 2.228 (dof 10) for level 0.95."""
    if dof < 1 or not 0 < level < 1:
        raise ValueError("t_quantile needs dof >= 1 and 0 < level < 1")
    lo, hi = 0.0, 1.0
    while _t_two_sided(hi, dof) < level:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        if _t_two_sided(mid, dof) < level:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


@dataclass(frozen=True)
class Fit:
    n: int
    intercept: float  # fitted value at x = 0
    slope: float  # per month
    x_mean: float
    sxx: float
    residual_se: float | None  # None with n = 2 (a line through two points has no residual)
    t: float | None  # t(0.975, n - 2)

    def predict(self, x: float) -> float:
        return self.intercept + self.slope * x

    def half_width(self, x: float) -> float | None:
        if self.residual_se is None or self.t is None:
            return None
        spread = 1 + 1 / self.n + (x - self.x_mean) ** 2 / self.sxx
        return self.t * self.residual_se * math.sqrt(spread)


def fit_ols(points: Sequence[tuple[float, float]], level: float = LEVEL) -> Fit | None:
    """OLS of y on x; None with fewer than two distinct x."""
    n = len(points)
    if n < 2:
        return None
    x_mean = sum(x for x, _ in points) / n
    y_mean = sum(y for _, y in points) / n
    sxx = sum((x - x_mean) ** 2 for x, _ in points)
    if sxx == 0:
        return None
    sxy = sum((x - x_mean) * (y - y_mean) for x, y in points)
    slope = sxy / sxx
    intercept = y_mean - slope * x_mean
    if n < 3:
        return Fit(n, intercept, slope, x_mean, sxx, None, None)
    sse = sum((y - intercept - slope * x) ** 2 for x, y in points)
    return Fit(n, intercept, slope, x_mean, sxx, math.sqrt(sse / (n - 2)), t_quantile(level, n - 2))


# ---- months ------------------------------------------------------------------------------


def month_index(d: date) -> int:
    return d.year * 12 + d.month - 1


def month_start(index: int) -> date:
    return date(index // 12, index % 12 + 1, 1)


def _clip(v: float | None) -> float | None:
    return None if v is None else min(1.0, max(0.0, v))


# ---- the outlook (pure) ------------------------------------------------------------------


@dataclass(frozen=True)
class MonthShare:
    month: date  # first day of the month
    requests: float
    domestic: float
    records: int = 0  # usage records behind it (public answers withhold small months)

    @property
    def share(self) -> float:
        return self.domestic / self.requests


@dataclass(frozen=True)
class Band:
    month: date
    value: float | None  # fitted/projected share, clipped to [0, 1]
    lower: float | None
    upper: float | None


@dataclass(frozen=True)
class TargetCheck:
    by: date
    target: float
    observed: float | None  # the month's observed share, when that month is in the history
    projected: Band | None
    met: bool | None  # observed (if known) else projected value at or above target


@dataclass
class Outlook:
    status: Status
    fit: Fit | None
    last_month: date | None
    final_target: TargetCheck | None
    reached: date | None = None  # month the fitted trend reaches the final target
    reached_earliest: date | None = None  # ... the band's upper edge
    reached_latest: date | None = None  # ... the band's lower edge (None: not within horizon)
    window: Band | None = None
    trajectory: list[TargetCheck] = field(default_factory=list)
    fitted: list[Band] = field(default_factory=list)
    projection: list[Band] = field(default_factory=list)


def _band(fit: Fit | None, origin: int, index: int) -> Band:
    if fit is None:
        return Band(month_start(index), None, None, None)
    x = index - origin
    value = fit.predict(x)
    hw = fit.half_width(x)
    lower = None if hw is None else value - hw
    upper = None if hw is None else value + hw
    return Band(month_start(index), _clip(value), _clip(lower), _clip(upper))


def _first_month(fit: Fit, origin: int, start: int, goal: float, edge: int) -> date | None:
    """First month index >= start (within the horizon) whose fitted value + edge x half-width
    reaches goal."""
    for index in range(start, start + HORIZON_MONTHS):
        x = index - origin
        hw = fit.half_width(x)
        if hw is None and edge:
            return None  # no band (two months): no edge to reach the goal, not the trend's date
        if fit.predict(x) + edge * (hw or 0.0) >= goal - _EPS:
            return month_start(index)
    return None


def outlook(history: Sequence[MonthShare], targets: Targets | None) -> Outlook:
    """Fit, project and compare with the trajectory. `history` holds months with requests."""
    months = sorted((m for m in history if m.requests > 0), key=lambda m: m.month)
    points = list(targets.domestic_share) if targets else []
    if not months:
        return Outlook(Status.no_history, None, None, None)
    origin = month_index(months[0].month)
    last = month_index(months[-1].month)
    fit = fit_ols([(month_index(m.month) - origin, m.share) for m in months])
    observed = {month_index(m.month): m.share for m in months}

    def check(by: date, target: float) -> TargetCheck:
        idx = month_index(by)
        seen = observed.get(idx)
        projected = _band(fit, origin, idx) if fit is not None else None
        value = seen if seen is not None else (projected.value if projected else None)
        met = None if value is None else value >= target - _EPS
        return TargetCheck(by, target, seen, projected, met)

    trajectory = [check(p.by, p.domestic_share) for p in points]
    final = trajectory[-1] if trajectory else None
    result = Outlook(Status.no_target, fit, month_start(last), final, trajectory=trajectory)
    result.fitted = [_band(fit, origin, month_index(m.month)) for m in months]
    ends = [month_index(p.by) for p in points]
    if targets and targets.window_closes:
        ends.append(month_index(targets.window_closes))
        result.window = _band(fit, origin, month_index(targets.window_closes))
    end = min(max([*ends, last + 12]), last + HORIZON_MONTHS)
    if fit is not None:
        result.projection = [_band(fit, origin, i) for i in range(last + 1, end + 1)]

    if final is None:
        return result
    goal = final.target
    if months[-1].share >= goal - _EPS:
        result.status, result.reached = Status.already_met, month_start(last)
        return result
    if fit is None:
        result.status = Status.insufficient_history
        return result
    if fit.slope > 0:
        result.reached = _first_month(fit, origin, last + 1, goal, 0)
    # The band's edges are searched whatever the trend's direction: a falling or flat trend may
    # still have an upper edge at the goal, which the band published beside it shows (found in
    # review: the dates were null while the first projected month's upper edge was above it).
    result.reached_earliest = _first_month(fit, origin, last + 1, goal, +1)
    result.reached_latest = _first_month(fit, origin, last + 1, goal, -1)
    if result.reached is None:
        result.status = Status.not_on_current_trend
    elif result.reached <= final.by:
        result.status = Status.on_track
    else:
        result.status = Status.behind_target
    return result


# ---- the SQL that feeds it ---------------------------------------------------------------


def monthly_share_sql(filters: dict[str, list[str]]) -> str:
    """Per calendar month: all requests, domestic (sovereign + onshore) requests, and the
    records behind them."""
    return f"""
SELECT toStartOfMonth(hour) AS month,
       sum(requests) AS total_requests,
       sumIf(requests, tier IN {{domestic_tiers:Array(String)}}) AS domestic_requests,
       sum(records) AS records
FROM {ROLLUP}
WHERE {where_clause(filters)}
GROUP BY month
HAVING total_requests > 0
ORDER BY month
""".strip()


def monthly_shares(
    client: Client, start: datetime, end: datetime, sector: str | None = None
) -> list[MonthShare]:
    filters = {"sector": [sector]} if sector else {}
    params: dict[str, Any] = {
        "from_": start,
        "to": end,
        "domestic_tiers": list(DOMESTIC_TIERS),
        **filters,
    }
    rows = client.query(monthly_share_sql(filters), parameters=params).result_rows
    return [MonthShare(m, float(r), float(d), int(n)) for m, r, d, n in rows]
