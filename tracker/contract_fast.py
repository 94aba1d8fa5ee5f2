"""A compiled fast path for batches of records in the contract's common shape.

pydantic (tracker.contract) is the contract: it alone says what is refused and why. This module
only vouches for a batch it can prove pydantic would accept, and builds the very records
pydantic would build (the same values, the same types). For anything else it answers None and
the caller asks pydantic, which accepts or names each refusal as before. So a gap here can cost
speed, never a record's value: `tests/unit/test_contract_fast.py` compares the two on generated
and hand-made batches, valid and not, and checks that the shapes gateways send are vouched for.

Why: each record is validated twice on its way in (the collector, then the pipeline, which does
not trust the topic), and pydantic's validation of a batch from its bytes was ~40% of both
processes' CPU (bench/RESULTS.md). msgspec decodes a batch and checks types, bounds and lengths
in C at ~0.7 us a record against pydantic's ~6. What msgspec cannot check as pydantic does
(pydantic's patterns, its whitespace stripping, its many date-time and decimal forms) is
checked here over the whole batch at once, one regular-expression scan per kind of field, and
only the strict forms are vouched for: an RFC 3339 time stamp with `T` and an offset or `Z`, a
cost as a plain decimal string, a name without surrounding whitespace. Gateways that send
another form (a cost as a JSON number, say) still get exactly the contract, at pydantic's speed.
"""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Final, cast

import msgspec

from tracker import contract
from tracker.contract import (
    EARLIEST,
    ID_PATTERN,
    MAX_COST,
    MAX_ID_LEN,
    MAX_NAME_LEN,
    MAX_REGION_LEN,
    MAX_REQUEST_COUNT,
    MAX_TOKENS,
    SCHEMA_VERSION,
    Operation,
    Status,
    UsageRecord,
    utc_and_plausible,
)

_M = msgspec.Meta
_Id = Annotated[str, _M(min_length=1, max_length=MAX_ID_LEN)]
_Name = Annotated[str, _M(min_length=1, max_length=MAX_NAME_LEN)]


class _Record(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """UsageRecord's fields in its order, typed as msgspec checks them in C. Strings whose
    pattern or form msgspec cannot check are plain `str` here and checked by the scans below."""

    record_id: _Id
    gateway_id: _Id
    agency_id: _Id
    occurred_at: Annotated[str, _M(max_length=40)]
    provider: _Name
    model: _Name
    operation: Operation = Operation.chat
    endpoint_host: Annotated[str, _M(max_length=253)] | None = None
    region: Annotated[str, _M(max_length=MAX_REGION_LEN)] | None = None
    request_count: Annotated[int, _M(ge=1, le=MAX_REQUEST_COUNT)] = 1
    input_tokens: Annotated[int, _M(ge=0, le=MAX_TOKENS)] = 0
    output_tokens: Annotated[int, _M(ge=0, le=MAX_TOKENS)] = 0
    cost: Annotated[str, _M(max_length=40)] | None = None
    currency: str | None = None
    latency_ms: Annotated[int, _M(ge=0, le=86_400_000)] | None = None
    status: Status = Status.ok
    energy_wh: Annotated[float, _M(ge=0, le=1e12)] | None = None
    use_case: Annotated[str, _M(max_length=64)] | None = None
    schema_version: Annotated[int, _M(ge=SCHEMA_VERSION, le=SCHEMA_VERSION)] = SCHEMA_VERSION


class _Submitted(_Record, forbid_unknown_fields=True, kw_only=True):
    """A record as a gateway submits it: its gateway_id, whatever it is, is replaced by the
    credential's (contract._Submitted)."""

    # Not decoded: whatever it holds is replaced. Kept raw to see that it is no array or
    # object, which pydantic's reader refuses past ~200 levels and msgspec reads to ~1,000
    # (found in review); only a scalar or nothing is vouched for.
    gateway_id: msgspec.Raw = msgspec.Raw(b"null")  # type: ignore[assignment]


_FIELDS: Final = tuple(UsageRecord.model_fields)
if _Record.__struct_fields__ != _FIELDS:  # a field added to the contract and not here
    raise RuntimeError("tracker.contract_fast._Record must have UsageRecord's fields, in order")

# Each scan runs over the batch's values of a kind joined by a separator that no accepted value
# holds, so one C-level match checks them all. ASCII classes only: `\d` would also take other
# scripts' digits, which Decimal() and fromisoformat() read.
_ID: Final = ID_PATTERN.removeprefix("^").removesuffix("$")  # the contract's, unanchored
_IDS: Final = re.compile(rf"(?:{_ID}\n)*{_ID}")
_STAMP: Final = (
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?"
    # An offset of at most 23:59: fromisoformat also takes minutes of 60-99 (+00:99 as 99
    # minutes), which pydantic refuses (found in review).
    r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
)
_STAMPS: Final = re.compile(rf"(?:{_STAMP}\n)*{_STAMP}")
# At most 9 decimals (the contract's decimal_places) and 13 integer digits (bounded below by
# MAX_COST, checked on the value); no sign, exponent or surrounding space.
_COST: Final = r"[0-9]{1,13}(?:\.[0-9]{1,9})?"
_COSTS: Final = re.compile(rf"(?:{_COST}\n)*{_COST}")
_CURRENCIES: Final = re.compile(r"(?:[A-Z]{3}\n)*[A-Z]{3}")
# The contract's printable pattern refuses these; NUL is the separator of the joined names.
_CONTROL: Final = re.compile(r"[\x01-\x1f\x7f]")


def _all_match(pattern: re.Pattern[str], values: list[str]) -> bool:
    """Every value matches `pattern`'s one item. The separator is outside the item's classes,
    and a value holding it is caught by the count (it would pass as two values)."""
    if not values:
        return True
    text = "\n".join(values)
    return text.count("\n") == len(values) - 1 and pattern.fullmatch(text) is not None


def _plain_names(values: list[str]) -> bool:
    """No control character and nothing pydantic's whitespace stripping would change (str.strip
    takes every character Rust's trim() takes, and a few controls besides)."""
    text = "\x00".join(values)
    return (
        _CONTROL.search(text) is None
        and text.count("\x00") == len(values) - 1
        and list(map(str.strip, values)) == values
    )


def _nested(raws: bytes) -> bool:
    """Whether any of the NUL-separated raw JSON values is an array or object (JSON text holds
    no raw NUL, so one only separates)."""
    return b"\x00[" in raws or b"\x00{" in raws


@functools.lru_cache(maxsize=16)
def _decoder(submitted: bool, max_records: int | None) -> msgspec.json.Decoder[Any]:
    item: Any = _Submitted if submitted else _Record
    if max_records is None:
        return msgspec.json.Decoder(list[item])
    return msgspec.json.Decoder(Annotated[list[item], _M(max_length=max_records)])


_new = object.__new__
_set = object.__setattr__
_asdict = msgspec.structs.asdict
_from_iso = datetime.fromisoformat


def decode_values(
    body: bytes, *, gateway_id: str | None = None, max_records: int | None = None
) -> list[dict[str, Any]] | None:
    """The field values of each record of a JSON array `body`, as pydantic would validate them
    (a dict per record, UsageRecord's fields in order), or None when this path cannot vouch for
    the batch (then ask tracker.contract). `gateway_id`: the batch is a gateway's submission,
    each record's gateway_id set to this one (checked by the caller); else each record must
    carry its own. More than `max_records` records: None."""
    try:
        wires: list[_Record] = _decoder(gateway_id is not None, max_records).decode(body)
    except (msgspec.MsgspecError, ValueError, RecursionError):  # bad UTF-8 is a ValueError
        return None
    if not wires:
        return None  # the contract's own path answers an empty batch (it is no hot path)
    ids = [w.record_id for w in wires] + [w.agency_id for w in wires]
    if gateway_id is None:
        ids += [w.gateway_id for w in wires]
    elif _nested(b"\x00" + b"\x00".join([w.gateway_id for w in cast(list[_Submitted], wires)])):
        return None
    names = [w.provider for w in wires] + [w.model for w in wires]
    names += [v for w in wires for v in (w.endpoint_host, w.region, w.use_case) if v]
    costs = [w.cost for w in wires if w.cost is not None]
    currencies = [w.currency for w in wires if w.currency is not None]
    if not (
        _all_match(_IDS, ids)
        and _all_match(_STAMPS, [w.occurred_at for w in wires])
        and _all_match(_COSTS, costs)
        and _all_match(_CURRENCIES, currencies)
        and _plain_names(names)
    ):
        return None
    batch: list[dict[str, Any]] = []
    # Read once for the batch: a record this refuses by it is left to pydantic, which reads the
    # bound again (a second later at most it has grown, unless the clock was set back).
    latest = contract.latest_plausible()
    # One object per distinct text of the fields that repeat from record to record, as
    # pydantic's reader gives (it caches short strings): msgspec makes a new one each time, and
    # a pipeline batch of 200,000 rows held ~85 MB more for them (measured).
    shared: dict[str, str] = {}
    one = shared.setdefault
    try:
        for wire in wires:
            values = _asdict(wire)
            values["gateway_id"] = gateway_id or one(wire.gateway_id, wire.gateway_id)
            values["agency_id"] = one(wire.agency_id, wire.agency_id)
            values["provider"] = one(wire.provider, wire.provider)
            values["model"] = one(wire.model, wire.model)
            stamp = _from_iso(wire.occurred_at)
            # The contract's timestamp rule, inline for the common case (UTC, whole
            # milliseconds, in range); anything else is given to the rule itself.
            if not (
                stamp.tzinfo is UTC and not stamp.microsecond % 1000 and EARLIEST <= stamp <= latest
            ):
                stamp = utc_and_plausible(stamp)
            values["occurred_at"] = stamp
            if wire.cost is not None:
                cost = values["cost"] = Decimal(wire.cost)
                if cost > MAX_COST or wire.currency is None:
                    return None
            if wire.currency is not None:
                values["currency"] = one(wire.currency, wire.currency)
            # The contract's empty-to-null rule for the three optional texts.
            text = wire.endpoint_host
            values["endpoint_host"] = one(text, text) if text else None
            text = wire.region
            values["region"] = one(text, text) if text else None
            text = wire.use_case
            values["use_case"] = one(text, text) if text else None
            batch.append(values)
    except ValueError:  # a date fromisoformat or the contract's timestamp rule refuses
        return None
    return batch


def decode_batch(
    body: bytes, *, gateway_id: str | None = None, max_records: int | None = None
) -> list[UsageRecord] | None:
    """decode_values' records as UsageRecord instances, or None (then ask tracker.contract).
    One difference from pydantic's: `model_fields_set` names every field, not only those the
    body sent (which msgspec does not tell); nothing in the tracker reads it."""
    batch = decode_values(body, gateway_id=gateway_id, max_records=max_records)
    if batch is None:
        return None
    fields_set = set(_FIELDS)  # shared: frozen records never change it (copies copy it)
    # The classes pydantic's path builds: a submission's records are contract._Submitted.
    kind = UsageRecord if gateway_id is None else contract._Submitted
    records: list[UsageRecord] = []
    for values in batch:
        # What BaseModel.model_construct does, without its per-field Python loop: every value
        # is what the contract's validation would have produced.
        record = _new(kind)
        _set(record, "__dict__", values)
        _set(record, "__pydantic_fields_set__", fields_set)
        _set(record, "__pydantic_extra__", None)
        _set(record, "__pydantic_private__", None)
        records.append(record)
    return records


def validate_submitted_json(body: bytes, gateway_id: str, max_records: int) -> list[UsageRecord]:
    """contract.validate_submitted_json, by the fast path when it vouches for the batch."""
    if contract.is_identifier(gateway_id):
        records = decode_batch(body, gateway_id=gateway_id, max_records=max_records)
        if records is not None:
            return records
    return contract.validate_submitted_json(body, gateway_id, max_records)
