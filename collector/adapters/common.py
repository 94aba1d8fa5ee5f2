"""What every adapter shares: the mapping result, agency fallback, ids and value coercions."""

from __future__ import annotations

import hashlib
import math
import reprlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

import orjson

from tracker.contract import is_identifier
from tracker.gateways import Gateway

T = TypeVar("T")
# Decimal exponent above which a source number is refused before conversion: every count and
# cost the contract takes is far smaller (tokens <= 10**12, cost <= 10**12).
_MAX_DIGITS: Final = 18
# The integers JSON encoding takes (orjson: signed 64 bits). Found in review: a count of 1e30
# became an int that no batch could be encoded with, so `tracker import` crashed; refused here,
# it names its field. Tighter limits are the contract's, checked by the server.
_INT_RANGE: Final = range(-(2**63), 2**63)


@dataclass(frozen=True, slots=True)
class Rejected:
    """A source item that cannot become a record, and the source field to blame."""

    field: str
    reason: str


# A contract-shaped dict, a rejection, or None for "not a usage item" (ignored, not an error).
Mapped = dict[str, Any] | Rejected | None


@dataclass(frozen=True)
class Context:
    """What an adapter may fall back on when the source does not say.

    `default_agency` is the gateway's only agency (push) or the importer's --agency; `agencies`
    are those the gateway may report for, used to recognise an agency named indirectly (a
    LiteLLM team alias); `defaults` fill contract fields the source format has no column for.
    """

    default_agency: str | None = None
    agencies: frozenset[str] = frozenset()
    defaults: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def for_gateway(cls, gateway: Gateway) -> Context:
        only = next(iter(gateway.agencies)) if len(gateway.agencies) == 1 else None
        return cls(default_agency=only, agencies=gateway.agencies)

    def agency(self, *named: Any) -> str:
        """The first agency the source names, else the fallback, else a rejection. Blank is
        not naming one (a CSV cell has no null); a value that is no text (42, a list) is
        refused: put under the fallback, its usage would count for another agency (found in
        review)."""
        for value in named:
            if isinstance(value, str):
                if value.strip():
                    return value.strip()
            elif value is not None:
                raise SourceError(
                    "agency_id",
                    f"an agency is named by a string, not a {type(value).__name__} "
                    f"({reprlib.repr(value)[:40]})",  # reprlib: bounded depth, no recursion
                )
        if self.default_agency is not None:
            return self.default_agency
        raise SourceError(
            "agency_id",
            "the source names no agency and there is no single default agency "
            "(a gateway reporting for one agency, or --agency); see docs/collectors.md",
        )


def canonical_hash(source: Any) -> str:
    """SHA-256 of the source item's canonical JSON (keys sorted at every level), 40 hex chars:
    the same item always gets the same id, whatever order its fields came in."""
    body = orjson.dumps(source, option=orjson.OPT_SORT_KEYS, default=str)
    return hashlib.sha256(body).hexdigest()[:40]


def source_id(prefix: str, value: Any, fallback: Any) -> str:
    """The source's own request id when it is usable as a record_id as is; otherwise a stable
    hash of that id, or, without one, of `fallback` (the whole source item)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and value:
        if is_identifier(value):
            return value
        return f"{prefix}:{hashlib.sha256(value.encode()).hexdigest()[:40]}"
    return f"{prefix}:{canonical_hash(fallback)}"


def host_of(url: Any) -> str | None:
    """Host name of a URL (or a bare host[:port]); None when there is none."""
    if not isinstance(url, str) or not url.strip():
        return None
    text = url.strip()
    try:
        parts = urlsplit(text if "//" in text else f"//{text}")
        return parts.hostname or None
    except ValueError as exc:  # e.g. "http://[::1": named by the caller's field (coerce)
        raise ValueError(f"not a URL ({exc}): {text[:80]!r}") from None


def as_int(value: Any) -> int | None:
    """Integers as sources write them: 12, 12.0, "12"; None for empty; ValueError otherwise."""
    number = _as_int(value)
    if number is not None and number not in _INT_RANGE:
        raise ValueError(f"number out of range: {str(value)[:40]!r}")
    return number


def _as_int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"expected a whole number, got {value}")
        return int(value)
    if isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation as exc:
            raise ValueError(f"expected a number, got {value!r}") from exc
        if not number.is_finite():
            raise ValueError(f"expected a number, got {value!r}")
        # Before int(): "1e1000000" is a short string and a million-digit integer (~22 s of
        # CPU). Every count the contract takes is far below 10**18.
        if number.adjusted() > _MAX_DIGITS:
            raise ValueError(f"number out of range: {value[:40]!r}")
        if number != number.to_integral_value():
            raise ValueError(f"expected a whole number, got {value!r}")
        return int(number)
    raise ValueError(f"expected a number, got {type(value).__name__}")


def as_time(value: Any, *, assume_utc: bool = False) -> datetime:
    """A timestamp from epoch seconds/milliseconds/nanoseconds or an ISO 8601 string.

    A naive string is refused unless the source format is documented to write UTC without a
    zone (`assume_utc`): guessing a zone would silently shift records across hours."""
    if isinstance(value, bool) or value is None or value == "":
        raise ValueError("timestamp missing")
    if isinstance(value, str):
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            number = None
        if number is None:
            try:
                parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError as exc:
                raise ValueError(f"not an ISO 8601 timestamp: {value!r}") from exc
            if parsed.tzinfo is None:
                if not assume_utc:
                    raise ValueError("timestamp has no timezone (write it in UTC with Z)")
                parsed = parsed.replace(tzinfo=UTC)
            return _utc(parsed)
        value = number
    if isinstance(value, int | float):
        seconds = float(value)
        if not math.isfinite(seconds):
            raise ValueError(f"timestamp out of range: {value!r}")
        if seconds > 1e17:  # nanoseconds
            seconds /= 1e9
        elif seconds > 1e14:  # microseconds
            seconds /= 1e6
        elif seconds > 1e11:  # milliseconds
            seconds /= 1e3
        try:
            return datetime.fromtimestamp(seconds, tz=UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise ValueError(f"timestamp out of range: {value!r}") from exc
    if isinstance(value, datetime):
        moment: datetime = value
        if moment.tzinfo is None:
            if not assume_utc:
                raise ValueError("timestamp has no timezone")
            moment = moment.replace(tzinfo=UTC)
        return _utc(moment)
    raise ValueError(f"unsupported timestamp {type(value).__name__}")


def _utc(moment: datetime) -> datetime:
    try:
        return moment.astimezone(UTC)
    except OverflowError as exc:  # year 1 east of UTC, year 9999 west of it
        raise ValueError(f"timestamp out of range: {moment.isoformat()}") from exc


def drop_none(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if v is not None}


class SourceError(ValueError):
    """Raised inside an adapter: the item is refused, blaming one source field."""

    def __init__(self, field_name: str, reason: str) -> None:
        super().__init__(f"{field_name}: {reason}")
        self.field = field_name
        self.reason = reason


def coerce(field_name: str, func: Callable[..., T], value: Any, **kwargs: Any) -> T:
    """Run one coercion; its ValueError names the source field it came from."""
    try:
        return func(value, **kwargs)
    except SourceError:
        raise
    except (ValueError, ArithmeticError) as exc:  # ArithmeticError: overflow, bad Decimal
        raise SourceError(field_name, str(exc) or type(exc).__name__) from exc
    except RecursionError as exc:  # str() or repr() of a value nested ~1,000 deep
        raise SourceError(field_name, "value nested too deep to read") from exc


def run(mapper: Callable[[Any, Context], dict[str, Any] | None], item: Any, ctx: Context) -> Mapped:
    """Apply an adapter's mapping to one item, turning its SourceError into a Rejected."""
    try:
        return mapper(item, ctx)
    except SourceError as exc:
        return Rejected(exc.field, exc.reason)
    except (ArithmeticError, TypeError, ValueError) as exc:
        # A value no coercion named (e.g. nesting too deep to hash): this item is refused,
        # and the good items beside it still land; never a 500 for the whole request.
        return Rejected("record", f"unreadable item: {str(exc)[:200] or type(exc).__name__}")
    except RecursionError:
        # str() or repr() of a value nested ~1,000 deep (found in review: the whole request
        # was a 500, and the good items beside it were lost).
        return Rejected("record", "unreadable item: a value is nested too deep to read")


def require_object(item: Any) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise SourceError("record", f"expected a JSON object, got {type(item).__name__}")
    return item


_NANO: Final = Decimal("0.000000001")


def as_cost(value: Any) -> Decimal | None:
    """A cost rounded to the contract's 9 decimal places (sources often send binary floats
    such as 0.00022500000000000002)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation as exc:
        raise ValueError(f"expected a number, got {value!r}") from exc
    if not number.is_finite():
        raise ValueError("cost must be a finite number")
    if number.adjusted() > _MAX_DIGITS:  # quantize would overflow the context's precision
        raise ValueError(f"cost out of range: {value!r}"[:80])
    return number.quantize(_NANO)


def as_float(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"expected a number, got {value!r}") from exc
    if not math.isfinite(number):
        # `inf`, `nan`, `1e400`: JSON has no such number, so the importer's encoder wrote
        # null and the record landed without the value, while a push was refused (found in
        # review).
        raise ValueError(f"expected a finite number, got {str(value)[:40]!r}")
    return number


def dig(item: Any, *path: str) -> Any:
    """item[path[0]][path[1]]...; None as soon as a step is missing or not an object."""
    for key in path:
        if not isinstance(item, dict):
            return None
        item = item.get(key)
    return item


def first(*values: Any) -> Any:
    """The first value that is neither None nor an empty string."""
    for value in values:
        if value is not None and value != "":
            return value
    return None
