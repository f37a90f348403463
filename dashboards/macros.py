"""Expand a panel's SQL the way Grafana and the ClickHouse plugin (v4) do.

What Grafana sends to ClickHouse for a panel is the result of three steps,
reproduced here in the same order so the tests and the PNG snapshots run the
very SQL a dashboard runs:

1. ``$__conditionalAll(condition, $var)`` (the plugin's frontend,
   ``applyConditionalAll``): replaced by ``1=1`` when ``$var`` is "All" (or
   empty), else by ``condition``. Innermost-last: the last occurrence is
   expanded first; arguments are split at top-level commas.
2. Template variables (Grafana's ``templateSrv.replace`` with the plugin's
   default format): ``$var`` / ``${var}`` becomes the value as is when one
   value is selected, ``'a','b'`` when several are (All selects every option);
   ``${var:singlequote}`` quotes each value (``'`` escaped as ``\\'``) and joins
   them with commas; ``${var:raw}`` is the value unchanged.
3. The plugin's backend macros (``pkg/macros/macros.go``), with the time range
   ``[start, end]`` and the interval:

   ========================  ==========================================================
   ``$__timeFilter(c)``      ``c >= toDateTime(<from s>) AND c <= toDateTime(<to s>)``
   ``$__timeFilter_ms(c)``   ``c >= fromUnixTimestamp64Milli(<from ms>) AND c <= ...``
   ``$__dateFilter(c)``      ``c >= toDate('<from>') AND c <= toDate('<to>')``
   ``$__dateTimeFilter(d,t)`` ``(dateFilter(d)) AND (timeFilter(t))`` (also ``$__dt``)
   ``$__fromTime``            ``toDateTime(<from s>)``; ``$__toTime`` likewise
   ``$__fromTime_ms``         ``fromUnixTimestamp64Milli(<from ms>)``; ``$__toTime_ms``
   ``$__timeInterval(c)``     ``toStartOfInterval(toDateTime(c), INTERVAL <n> second)``
   ``$__timeInterval_ms(c)``  ``toStartOfInterval(toDateTime64(c, 3), INTERVAL <n> millisecond)``
   ``$__interval_s``          ``<n>`` (the interval in whole seconds, at least 1)
   ========================  ==========================================================

The interval is Grafana's: the time range divided by the panel's maximum
data points, rounded to a "nice" step (:func:`interval_for`).
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from dataclasses import dataclass, field
from typing import Mapping, Sequence, Union

__all__ = ["ALL", "MacroError", "QueryContext", "expand", "interval_for"]

#: the value of a multi-value variable whose "All" option is selected
ALL = "$__all"

_UTC = _dt.timezone.utc

# Grafana's interval steps (rangeutil.roundInterval), in seconds
_NICE_STEPS_S = (
    1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
    7 * 86400, 30 * 86400, 365 * 86400,
)


class MacroError(ValueError):
    """A panel's SQL uses a macro or variable that cannot be expanded."""


Value = Union[str, Sequence[str]]


@dataclass
class QueryContext:
    """What Grafana knows when it runs a panel: the time range, the interval,
    the selected value(s) of every variable and, for "All", every option."""

    start: _dt.datetime
    end: _dt.datetime
    interval_s: int = 60
    #: variable name -> a value, a list of values, or :data:`ALL`
    variables: Mapping[str, Value] = field(default_factory=dict)
    #: variable name -> all its options (what "All" stands for)
    options: Mapping[str, Sequence[str]] = field(default_factory=dict)

    def values(self, name: str) -> list[str]:
        if name not in self.variables:
            raise MacroError(f"the query uses ${name}, which no variable defines")
        value = self.variables[name]
        if isinstance(value, str):
            return list(self.options.get(name, ())) if value == ALL else [value]
        return list(value)

    def is_all(self, name: str) -> bool:
        value = self.variables.get(name, "")
        if isinstance(value, str):
            return value in (ALL, "")
        return list(value) == [ALL]


def interval_for(start: _dt.datetime, end: _dt.datetime, max_data_points: int = 300) -> int:
    """Grafana's panel interval in seconds: range / max data points, rounded up to a nice step."""
    raw = max((end - start).total_seconds() / max(1, max_data_points), 1.0)
    for step in _NICE_STEPS_S:
        if step >= raw:
            return step
    return int(math.ceil(raw))


def _args(sql: str, open_paren: int) -> tuple[list[str], int]:
    """Arguments of the macro call whose ``(`` is at ``open_paren``, split at
    top-level commas, and the index just after its ``)``."""
    depth = 0
    args: list[str] = []
    start = open_paren + 1
    quote = ""
    for i in range(open_paren, len(sql)):
        ch = sql[i]
        if quote:
            if ch == "\\":
                continue
            if ch == quote:
                quote = ""
            continue
        if ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                args.append(sql[start:i])
                return args, i + 1
        elif ch == "," and depth == 1:
            args.append(sql[start:i])
            start = i + 1
    raise MacroError(f"unbalanced parentheses after {sql[max(0, open_paren - 20):open_paren + 1]!r}")


def _conditional_all(sql: str, ctx: QueryContext) -> str:
    macro = "$__conditionalAll("
    at = sql.rfind(macro)
    while at != -1:
        args, end = _args(sql, at + len(macro) - 1)
        if len(args) != 2:
            raise MacroError(f"$__conditionalAll takes (condition, $variable), got {len(args)} arguments")
        variable = args[1].strip()
        if not variable.startswith("$"):
            raise MacroError(f"$__conditionalAll: second argument must be a $variable, got {variable!r}")
        name = variable.lstrip("$").strip("{}")
        if name not in ctx.variables:
            raise MacroError(f"$__conditionalAll names ${name}, which no variable defines")
        phrase = "1=1" if ctx.is_all(name) else args[0]
        sql = sql[:at] + phrase + sql[end:]
        at = sql.rfind(macro)
    return sql


def _singlequote(value: str) -> str:
    return "'" + value.replace("'", "\\'") + "'"


_VARIABLE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(?!__)(\w+)")


def _variables(sql: str, ctx: QueryContext) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3)
        fmt = match.group(2)
        values = ctx.values(name)
        if fmt == "singlequote":
            return ",".join(_singlequote(v) for v in values)
        if fmt == "raw":
            return ",".join(values)
        if fmt is not None:
            raise MacroError(f"variable format {fmt!r} (in ${{{name}:{fmt}}}) is not supported here")
        # the plugin's default format: several values quoted, one value as is
        return "'" + "','".join(values) + "'" if len(values) != 1 else values[0]

    return _VARIABLE.sub(replace, sql)


def _date_time(t: _dt.datetime) -> str:
    return f"toDateTime({int(t.timestamp())})"


def _date_time64(t: _dt.datetime) -> str:
    return f"fromUnixTimestamp64Milli({int(round(t.timestamp() * 1000))})"


def _date(t: _dt.datetime) -> str:
    return f"toDate('{t.astimezone(_UTC).strftime('%Y-%m-%d')}')"


_MACRO = re.compile(r"\$__(\w+)")


def _backend_macros(sql: str, ctx: QueryContext) -> str:
    start, end, n = ctx.start, ctx.end, max(int(ctx.interval_s), 1)

    def one(name: str, args: list[str]) -> str:
        def need(count: int) -> list[str]:
            if len(args) != count:
                raise MacroError(f"$__{name} expects {count} argument(s), received {len(args)}")
            return [a.strip() for a in args]

        if name == "fromTime":
            return _date_time(start)
        if name == "toTime":
            return _date_time(end)
        if name == "fromTime_ms":
            return _date_time64(start)
        if name == "toTime_ms":
            return _date_time64(end)
        if name == "timeFilter":
            (c,) = need(1)
            return f"{c} >= {_date_time(start)} AND {c} <= {_date_time(end)}"
        if name == "timeFilter_ms":
            (c,) = need(1)
            return f"{c} >= {_date_time64(start)} AND {c} <= {_date_time64(end)}"
        if name == "dateFilter":
            (c,) = need(1)
            return f"{c} >= {_date(start)} AND {c} <= {_date(end)}"
        if name in ("dateTimeFilter", "dt"):
            d, t = need(2)
            return (f"({d} >= {_date(start)} AND {d} <= {_date(end)}) AND "
                    f"({t} >= {_date_time(start)} AND {t} <= {_date_time(end)})")
        if name == "timeInterval":
            (c,) = need(1)
            return f"toStartOfInterval(toDateTime({c}), INTERVAL {n} second)"
        if name == "timeInterval_ms":
            (c,) = need(1)
            return f"toStartOfInterval(toDateTime64({c}, 3), INTERVAL {n * 1000} millisecond)"
        if name == "interval_s":
            return str(n)
        raise MacroError(f"unknown macro $__{name}")

    out: list[str] = []
    pos = 0
    for match in _MACRO.finditer(sql):
        if match.start() < pos:
            continue
        name = match.group(1)
        after = match.end()
        args: list[str] = []
        if after < len(sql) and sql[after] == "(":
            args, after = _args(sql, after)
            if args == [""]:
                args = []
        out.append(sql[pos:match.start()])
        out.append(one(name, args))
        pos = after
    out.append(sql[pos:])
    return "".join(out)


def expand(sql: str, ctx: QueryContext) -> str:
    """The SQL Grafana sends to ClickHouse for ``sql`` in context ``ctx``."""
    return _backend_macros(_variables(_conditional_all(sql, ctx), ctx), ctx)
