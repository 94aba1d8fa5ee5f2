"""Expand a panel's SQL as Grafana and the ClickHouse plugin would, so tests can run it.

Grafana runs a ClickHouse panel query in three steps, and this module follows each:
1. the plugin's frontend replaces `$__conditionalAll(condition, $var)` by `1=1` when `$var` is
   "All" (or empty), else by the condition (CHDatasource.applyConditionalAll);
2. Grafana's template service replaces `$var`, `${var}` and `${var:format}`; the dashboards use
   `percentencode` only (see `_percent_encode`); singlequote, csv, raw and the plugin's own
   default (arrays quoted and joined) are kept so tests can show what they would do;
3. the plugin's backend expands time macros (pkg/macros/macros.go): `$__fromTime` ->
   toDateTime(<unix s>), `$__toTime_ms` -> fromUnixTimestamp64Milli(<unix ms>),
   `$__timeFilter(c)` -> c >= toDateTime(from) AND c <= toDateTime(to) (inclusive), the `_ms`
   variants, `$__timeInterval(c)` -> toStartOfInterval(toDateTime(c), INTERVAL <s> second)
   and `$__interval_s`.
Anything left that still looks like a macro or variable is an error, not a silent pass.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import quote

ALL = "$__all"


class ExpansionError(ValueError):
    """The SQL uses a macro or variable this expander (and so the dashboards) does not know."""


@dataclass(frozen=True)
class Variable:
    """A template variable's state: selected values (or [ALL]) and, for "All", every option's
    value. `multi`: Grafana hands a multi-value variable to a format as an array (even with one
    value selected) and a single-value one (query variable with multi off, textbox) as a
    string; some formats differ between the two (percentencode wraps arrays in braces)."""

    selected: Sequence[str]
    options: Sequence[str] = ()
    all_value: str | None = None
    multi: bool = True

    @property
    def is_all(self) -> bool:
        # The plugin tests `current.value.toString()` against "" and "$__all".
        return ",".join(self.selected) in ("", ALL)

    def values(self) -> list[str]:
        return list(self.options) if list(self.selected) == [ALL] else list(self.selected)


@dataclass(frozen=True)
class Context:
    start: datetime
    end: datetime
    interval: timedelta = timedelta(hours=1)
    variables: Mapping[str, Variable] = field(default_factory=dict)


def _unix(t: datetime) -> int:
    if t.tzinfo is None:
        raise ExpansionError("time range bounds must be timezone-aware")
    return math.floor(t.timestamp())


def _unix_ms(t: datetime) -> int:
    if t.tzinfo is None:
        raise ExpansionError("time range bounds must be timezone-aware")
    return math.floor(t.timestamp() * 1000)


def _macro_args(sql: str, open_paren: int) -> tuple[list[str], int]:
    """Comma-separated arguments of the call whose "(" is at open_paren, respecting nested
    parentheses; returns them and the index just past ")"."""
    depth, args, start = 0, [], open_paren + 1
    for i in range(open_paren, len(sql)):
        ch = sql[i]
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                args.append(sql[start:i])
                return args, i + 1
        elif ch == "," and depth == 1:
            args.append(sql[start:i])
            start = i + 1
    raise ExpansionError(f"unbalanced parentheses after position {open_paren}")


_VAR_REF = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def conditional_all(sql: str, variables: Mapping[str, Variable]) -> str:
    macro = "$__conditionalAll("
    index = sql.rfind(macro)
    while index != -1:
        args, end = _macro_args(sql, index + len(macro) - 1)
        if len(args) != 2:
            raise ExpansionError(f"$__conditionalAll takes 2 arguments, got {len(args)}")
        ref = _VAR_REF.search(args[1].strip())
        if ref is None:
            raise ExpansionError(f"$__conditionalAll: no variable in {args[1]!r}")
        name = ref.group(1) or ref.group(2)
        if name not in variables:
            raise ExpansionError(f"$__conditionalAll: unknown variable {name!r}")
        phrase = "1=1" if variables[name].is_all else args[0]
        sql = sql[:index] + phrase + sql[end:]
        index = sql.rfind(macro)
    return sql


def _percent_encode(value: str) -> str:
    """Grafana's encodeURIComponentStrict: encodeURIComponent (UTF-8, upper-case %XX; leaves
    A-Z a-z 0-9 - _ . ! ~ * ' ( )) with !'()* encoded as well, so only A-Z a-z 0-9 - _ . ~
    stay. That is Python's quote() with nothing extra marked safe. JavaScript throws on a lone
    surrogate; so does this (UnicodeEncodeError)."""
    try:
        return quote(value, safe="")
    except UnicodeEncodeError as exc:
        raise ExpansionError(f"value not encodable as UTF-8: {exc}") from exc


def _format(var: Variable, fmt: str | None) -> str:
    """One variable in one format, as Grafana's format registry renders it: the templating
    service's public/app/features/templating/formatRegistry.ts (grafana/grafana) and, for
    dashboards rendered with Scenes, packages/scenes/src/variables/interpolation/formatRegistry.ts
    (grafana/scenes); both define percentencode the same way:
        isArray(value) ? encodeURIComponentStrict('{' + value.join(',') + '}')
                       : encodeURIComponentStrict(value)
    A custom "All" value passes unformatted, except through `text` and `percentencode`
    (TemplateSrv: "skip formatting of custom all values unless format set to text or
    percentencode"; Scenes' CustomAllValue.formatter does the same)."""
    is_all = list(var.selected) == [ALL]
    if var.all_value is not None and is_all:
        if fmt == "text":
            return "All"
        if fmt == "percentencode":
            return _percent_encode(var.all_value)
        return var.all_value
    values = var.values()
    array = var.multi or is_all
    if not array and len(values) != 1:
        raise ExpansionError("a single-value variable holds exactly one value")
    if fmt == "percentencode":
        return _percent_encode("{" + ",".join(values) + "}" if array else values[0])
    if fmt == "singlequote":
        return ",".join("'" + v.replace("'", "\\'") + "'" for v in values)
    if fmt == "csv":
        return ",".join(values)
    if fmt in ("raw", "text"):
        return ",".join(values)
    if fmt is None:  # the plugin's own formatter: arrays quoted and joined, scalars raw
        return "'" + "','".join(values) + "'" if array else values[0]
    raise ExpansionError(f"variable format {fmt!r} is not supported by the expander")


_TEMPLATE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)")


def template_variables(sql: str, variables: Mapping[str, Variable]) -> str:
    def replace(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(3)
        if name.startswith("__") or name not in variables:
            return m.group(0)  # Grafana leaves what it does not know (macros) untouched
        return _format(variables[name], m.group(2))

    return _TEMPLATE.sub(replace, sql)


def _backend_macros(ctx: Context) -> dict[str, Callable[[list[str]], str]]:
    f, t = _unix(ctx.start), _unix(ctx.end)
    fm, tm = _unix_ms(ctx.start), _unix_ms(ctx.end)
    seconds = max(int(ctx.interval.total_seconds()), 1)

    def one(args: list[str]) -> str:
        if len(args) != 1:
            raise ExpansionError(f"expected 1 argument, received {len(args)}")
        return args[0].strip()

    return {
        "fromTime": lambda a: f"toDateTime({f})",
        "toTime": lambda a: f"toDateTime({t})",
        "fromTime_ms": lambda a: f"fromUnixTimestamp64Milli({fm})",
        "toTime_ms": lambda a: f"fromUnixTimestamp64Milli({tm})",
        "timeFilter": lambda a: f"{one(a)} >= toDateTime({f}) AND {one(a)} <= toDateTime({t})",
        "timeFilter_ms": lambda a: (
            f"{one(a)} >= fromUnixTimestamp64Milli({fm}) AND "
            f"{one(a)} <= fromUnixTimestamp64Milli({tm})"
        ),
        "timeInterval": lambda a: (
            f"toStartOfInterval(toDateTime({one(a)}), INTERVAL {seconds} second)"
        ),
        "interval_s": lambda a: str(seconds),
    }


_MACRO = re.compile(r"\$__(\w+)")


def backend_macros(sql: str, ctx: Context) -> str:
    macros = _backend_macros(ctx)
    out, pos = [], 0
    for m in _MACRO.finditer(sql):
        if m.start() < pos:
            continue
        name = m.group(1)
        if name not in macros:
            raise ExpansionError(f"unknown macro $__{name}")
        end, args = m.end(), list[str]()
        if end < len(sql) and sql[end] == "(":
            args, end = _macro_args(sql, end)
        out.append(sql[pos : m.start()])
        out.append(macros[name](args))
        pos = end
    out.append(sql[pos:])
    return "".join(out)


def expand(sql: str, ctx: Context) -> str:
    """The SQL ClickHouse receives for this panel query in this dashboard state."""
    sql = conditional_all(sql, ctx.variables)
    sql = template_variables(sql, ctx.variables)
    sql = backend_macros(sql, ctx)
    leftover = re.search(r"\$\{?\w+", sql)
    if leftover:
        raise ExpansionError(f"unexpanded reference {leftover.group(0)!r}")
    return sql
