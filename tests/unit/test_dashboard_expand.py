"""The macro expander follows the ClickHouse plugin's documented expansions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dashboards.expand import ALL, Context, ExpansionError, Variable, expand

# The plugin's documentation examples use these instants (1415792726 .. 1447328726).
START = datetime.fromtimestamp(1415792726, UTC)
END = datetime.fromtimestamp(1447328726.5, UTC)


def ctx(**variables: Variable) -> Context:
    return Context(start=START, end=END, interval=timedelta(minutes=5), variables=variables)


def test_time_macros_as_the_plugin_documents_them() -> None:
    assert expand("$__timeFilter(time)", ctx()) == (
        "time >= toDateTime(1415792726) AND time <= toDateTime(1447328726)"
    )
    assert expand("$__timeFilter_ms(t)", ctx()) == (
        "t >= fromUnixTimestamp64Milli(1415792726000) AND t <= fromUnixTimestamp64Milli(1447328726500)"
    )
    assert expand("$__fromTime $__toTime", ctx()) == (
        "toDateTime(1415792726) toDateTime(1447328726)"
    )
    assert expand("$__toTime_ms", ctx()) == "fromUnixTimestamp64Milli(1447328726500)"
    assert expand("$__timeInterval(ts) / $__interval_s", ctx()) == (
        "toStartOfInterval(toDateTime(ts), INTERVAL 300 second) / 300"
    )


def test_conditional_all_drops_the_condition_only_for_all() -> None:
    sql = "x AND $__conditionalAll(a IN (${a:singlequote}), $a) AND $__conditionalAll(b = 1, $b)"
    out = expand(sql, ctx(a=Variable([ALL], options=["p", "q"]), b=Variable(["1"])))
    assert out == "x AND 1=1 AND b = 1"
    out = expand(sql, ctx(a=Variable(["p", "q"]), b=Variable([""])))
    assert out == "x AND a IN ('p','q') AND 1=1"


def test_all_expands_to_every_option_outside_conditional_all() -> None:
    assert expand("IN (${a:singlequote})", ctx(a=Variable([ALL], ["p", "q"]))) == "IN ('p','q')"
    assert expand("${a}", ctx(a=Variable([ALL], ["p"], all_value="*"))) == "*"


def test_singlequote_escapes_quotes() -> None:
    assert expand("${a:singlequote}", ctx(a=Variable(["o'brien"]))) == "'o\\'brien'"
    assert expand("${a:raw},$a", ctx(a=Variable(["0.7"]))) == "0.7,0.7"


@pytest.mark.parametrize(
    "sql",
    ["$__timeGroup(t, '1h')", "$undefined", "${x:percentencode}", "$__conditionalAll(a, $nope)"],
)
def test_unknown_macros_and_variables_fail_loudly(sql: str) -> None:
    with pytest.raises(ExpansionError):
        expand(sql, ctx(x=Variable(["1"])))


def test_naive_times_are_refused() -> None:
    with pytest.raises(ExpansionError):
        expand("$__fromTime", Context(start=datetime(2026, 1, 1), end=END))
