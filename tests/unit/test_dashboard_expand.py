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
    assert expand("${a:raw},$a", ctx(a=Variable(["0.7"], multi=False))) == "0.7,0.7"
    # the plugin's own default format quotes an array, even of one value
    assert expand("$a", ctx(a=Variable(["0.7"]))) == "'0.7'"


def test_percentencode_as_grafana_formats_it() -> None:
    """formatRegistry.ts (grafana/grafana public/app/features/templating, and grafana/scenes'
    interpolation/formatRegistry.ts alike): encodeURIComponentStrict of the value, of
    '{' + values.join(',') + '}' for an array (a multi-value variable, even with one value)."""
    odd = ["a b", "o'brien", "x,y", "\\", "é", "$__x", "(1)*!~-_."]
    assert expand("${a:percentencode}", ctx(a=Variable(odd))) == (
        "%7Ba%20b%2Co%27brien%2Cx%2Cy%2C%5C%2C%C3%A9%2C%24__x%2C%281%29%2A%21~-_.%7D"
    )
    assert expand("${a:percentencode}", ctx(a=Variable(["p"]))) == "%7Bp%7D"
    assert expand("${a:percentencode}", ctx(a=Variable(["x,y"], multi=False))) == "x%2Cy"
    assert expand("${a:percentencode}", ctx(a=Variable([ALL], ["p", "q"]))) == "%7Bp%2Cq%7D"
    # a custom "All" value is formatted by percentencode (and text), passed as is otherwise
    custom = Variable([ALL], ["p"], all_value="a'b")
    assert expand("${a:percentencode}|${a:raw}", ctx(a=custom)) == "a%27b|a'b"


@pytest.mark.parametrize(
    "sql",
    ["$__timeGroup(t, '1h')", "$undefined", "${x:lucene}", "$__conditionalAll(a, $nope)"],
)
def test_unknown_macros_and_variables_fail_loudly(sql: str) -> None:
    with pytest.raises(ExpansionError):
        expand(sql, ctx(x=Variable(["1"])))


def test_naive_times_are_refused() -> None:
    with pytest.raises(ExpansionError):
        expand("$__fromTime", Context(start=datetime(2026, 1, 1), end=END))
