"""How a member beside others tells whether its batch is in a rollup month (rollups.restore_batch):
every way of explaining the month's total must agree, or the month is read again."""

from __future__ import annotations

from decimal import Decimal

from tracker.rollups import Totals, _explanations


def t(records: int, requests: int = 0, tokens: int = 0, cost: str = "0") -> Totals:
    return records, requests, tokens, Decimal(cost)


LANDED = t(100, 150, 9_000, "12.5")
MINE = t(62, 90, 4_000, "3.25")
OTHER = t(10, 20, 700, "0.5")


def test_present_absent_and_in_flight_batches_are_told_apart() -> None:
    def plus(*xs: Totals) -> Totals:
        out = t(0)
        for x in xs:
            out = (out[0] + x[0], out[1] + x[1], out[2] + x[2], out[3] + x[3])
        return out

    assert _explanations(LANDED, MINE, [], plus(LANDED, MINE)) == {True}
    assert _explanations(LANDED, MINE, [], LANDED) == {False}
    # Another member's batch in flight: its part may or may not be visible yet.
    assert _explanations(LANDED, MINE, [OTHER], plus(LANDED, OTHER)) == {False}
    assert _explanations(LANDED, MINE, [OTHER], plus(LANDED, OTHER, MINE)) == {True}
    assert _explanations(LANDED, MINE, [OTHER], plus(LANDED, MINE)) == {True}


def test_an_ambiguous_or_unexplained_month_decides_nothing() -> None:
    # An in-flight batch with exactly this batch's totals: present or absent fit alike.
    twin = MINE
    assert _explanations(LANDED, MINE, [twin], (162, 240, 13_000, Decimal("15.75"))) == {
        True,
        False,
    }
    # A total no combination explains (a landed batch short, say): nothing to act on.
    assert _explanations(LANDED, MINE, [OTHER], t(1)) == set()
    # Totals equal in records but not in cost are not equal.
    assert _explanations(LANDED, MINE, [], (162, 240, 13_000, Decimal("15.76"))) == set()
