from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from pydantic import ValidationError

from tracker.contract import (
    UsageRecord,
    by_shard,
    encode_batch,
    json_schema,
    parse_record,
    shard_key,
    shard_of,
    validate_batch_json,
    validate_submitted_json,
    validation_errors,
)

GOOD = {
    "record_id": "req-1",
    "agency_id": "in-sbi",
    "occurred_at": "2026-03-01T10:15:00.123456Z",
    "provider": "sarvam",
    "model": "sarvam-m",
    "input_tokens": 10,
    "output_tokens": 5,
}


def errors_of(data: dict[str, object]) -> dict[str, str]:
    with pytest.raises(ValidationError) as info:
        parse_record(data, gateway_id="gw")
    return {e.field: e.reason for e in validation_errors(0, info.value)}


def test_gateway_id_comes_from_credential_not_payload() -> None:
    record = parse_record({**GOOD, "gateway_id": "spoofed"}, gateway_id="real-gw")
    assert record.gateway_id == "real-gw"


def test_timestamp_normalised_to_utc_milliseconds() -> None:
    record = parse_record(
        {**GOOD, "occurred_at": "2026-03-01T12:15:00.123456+02:00"}, gateway_id="g"
    )
    assert record.occurred_at == datetime(2026, 3, 1, 10, 15, 0, 123000, tzinfo=UTC)


@pytest.mark.parametrize("stamp", ["2026-03-01T10:15:00Z", "2026-03-01T10:15:00+00:00"])
def test_utc_timestamps_carry_the_standard_utc_zone(stamp: str) -> None:
    # pydantic parses these into a zone object of its own; later hops compare and encode
    # faster with the standard one, so the validator swaps it in on both paths.
    record = parse_record({**GOOD, "occurred_at": stamp}, gateway_id="g")
    assert record.occurred_at.tzinfo is UTC
    body = orjson.dumps([{**GOOD, "occurred_at": stamp}])
    assert validate_submitted_json(body, "g", 10_000)[0].occurred_at.tzinfo is UTC


@pytest.mark.parametrize(
    ("patch", "field", "fragment"),
    [
        ({"occurred_at": "2026-03-01T10:15:00"}, "occurred_at", "timezone"),
        ({"input_tokens": -1}, "input_tokens", "greater than or equal"),
        ({"request_count": 0}, "request_count", "greater than or equal"),
        ({"cost": "1.5"}, "currency", "currency is required"),
        ({"cost": "1.5", "currency": "usd"}, "currency", "ISO 4217"),
        ({"operation": "dance"}, "operation", "chat"),
        ({"record_id": "x" * 129}, "record_id", "at most 128"),
        ({"status": "maybe"}, "status", "ok"),
        ({"unexpected": 1}, "unexpected", "not permitted"),
        ({"schema_version": 2}, "schema_version", "less than or equal"),
        ({"energy_wh": float("nan")}, "energy_wh", "finite"),
    ],
)
def test_bad_fields_are_named_with_reason(
    patch: dict[str, object], field: str, fragment: str
) -> None:
    errors = errors_of({**GOOD, **patch})
    assert field in errors, errors
    assert fragment in errors[field]


# What pydantic's lax mode would read and the schema does not allow: `true` as a count of 1, a
# count written as text or as a fraction, a Unix time as `occurred_at` (found in review).
@pytest.mark.parametrize(
    ("patch", "field", "fragment"),
    [
        ({"input_tokens": True}, "input_tokens", "valid integer"),
        ({"output_tokens": "12"}, "output_tokens", "valid integer"),
        ({"request_count": 2.0}, "request_count", "valid integer"),
        ({"latency_ms": False}, "latency_ms", "valid integer"),
        ({"schema_version": "1"}, "schema_version", "valid integer"),
        ({"energy_wh": True}, "energy_wh", "valid number"),
        ({"energy_wh": "0.5"}, "energy_wh", "valid number"),
        ({"occurred_at": 1772360100}, "occurred_at", "not a number"),
        ({"occurred_at": 1772360100.5}, "occurred_at", "not a number"),
        ({"occurred_at": "1772360100"}, "occurred_at", "RFC 3339"),
        ({"occurred_at": True}, "occurred_at", "not a number"),
    ],
)
def test_what_lax_parsing_would_read_is_refused(
    patch: dict[str, object], field: str, fragment: str
) -> None:
    test_bad_fields_are_named_with_reason(patch, field, fragment)
    with pytest.raises(ValidationError):
        validate_submitted_json(orjson.dumps([{**GOOD, **patch}]), "gw", 10_000)


def test_future_timestamp_refused() -> None:
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert "future" in errors_of({**GOOD, "occurred_at": future})["occurred_at"]


def test_missing_fields_all_listed() -> None:
    errors = errors_of({"record_id": "r"})
    assert {"agency_id", "occurred_at", "provider", "model"} <= set(errors)


def test_non_object_record_refused() -> None:
    with pytest.raises(TypeError):
        parse_record([1, 2], gateway_id="g")


def test_batch_encoding_round_trips() -> None:
    record = parse_record({**GOOD, "cost": "0.000123", "currency": "USD"}, gateway_id="g")
    decoded = orjson.loads(encode_batch([record, record]))
    assert len(decoded) == 2
    again = UsageRecord.model_validate(decoded[0])
    assert again == record
    assert again.cost == Decimal("0.000123")


def test_a_records_shard_is_its_identitys_whatever_agency_it_names() -> None:
    records = [
        parse_record({**GOOD, "record_id": f"r{i}", "agency_id": agency}, gateway_id=gateway)
        for i in range(60)
        for agency in ("in-sbi", "in-pnb")
        for gateway in ("gw-a", "gw-b")
    ]
    groups = by_shard(records, 4, per_message=25)
    assert all(len(chunk) <= 25 for _, chunk in groups)
    where: dict[tuple[str, str], set[int]] = {}
    for shard, chunk in groups:
        for r in chunk:
            assert shard == shard_of(r.gateway_id, r.record_id, 4)
            where.setdefault((r.gateway_id, r.record_id), set()).add(shard)
    assert len(where) == 120 and all(len(s) == 1 for s in where.values())
    assert {shard for shard, _ in groups} == {0, 1, 2, 3}
    # In the order they came, within a shard.
    order = [(r.gateway_id, r.record_id, r.agency_id) for r in records]
    for shard, _ in groups:
        mine = [
            (r.gateway_id, r.record_id, r.agency_id) for s, c in groups if s == shard for r in c
        ]
        assert mine == [o for o in order if shard_of(o[0], o[1], 4) == shard]
    # Stable across processes and releases (crc32, not Python's salted hash()): a release that
    # placed an identity elsewhere would give its copies two landers.
    assert [shard_of("gw-a", f"r{i}", 4) for i in range(1, 6)] == [0, 2, 0, 3, 1]
    assert shard_of("gw-b", "r1", 1000) == 50 and shard_key(3) == b"shard:3"


# Submitted items as gateways send them, valid and not: the one-call path must accept exactly
# what parse_record accepts, with the same values, and always the credential's gateway_id.
SUBMITTED = [
    GOOD,
    {**GOOD, "gateway_id": "spoofed"},
    {**GOOD, "gateway_id": "not an id!"},
    {**GOOD, "gateway_id": 42},
    {**GOOD, "occurred_at": "2026-03-01T12:15:00.123456+02:00", "record_id": "  padded  "},
    {**GOOD, "cost": "1.5", "currency": "EUR", "region": "", "endpoint_host": "h.example"},
    {**GOOD, "energy_wh": 0.25, "use_case": "tax", "status": "error", "operation": "audio"},
    {**GOOD, "occurred_at": "2026-03-01T10:15:00"},
    {**GOOD, "cost": "1.5"},
    {**GOOD, "cost": 12345678.123456789, "currency": "INR"},  # 16 digits as a double: refused
    {**GOOD, "cost": 123456.789012345, "currency": "INR"},  # 15 digits: exactly that decimal
    {**GOOD, "model": "gpt\n4o"},
    {**GOOD, "model": " gpt-4o\n", "use_case": "tax\tfiling"},
    {**GOOD, "unexpected": 1},
    {**GOOD, "record_id": "x" * 129},
    {**GOOD, "schema_version": 2},
    {**GOOD, "input_tokens": True},
    {**GOOD, "output_tokens": "12"},
    {**GOOD, "request_count": 2.0},
    {**GOOD, "energy_wh": True},
    {**GOOD, "energy_wh": 3},
    {**GOOD, "occurred_at": 1772360100},
    {**GOOD, "occurred_at": "1772360100"},
    {"record_id": "r"},
    [1, 2],
]


@pytest.mark.parametrize("item", SUBMITTED, ids=range(len(SUBMITTED)))
def test_submitted_batch_path_accepts_what_the_record_path_accepts(item: object) -> None:
    try:
        expected = parse_record(item, gateway_id="real-gw")
    except (TypeError, ValidationError):
        with pytest.raises(ValidationError):
            validate_submitted_json(orjson.dumps([GOOD, item]), "real-gw", 10_000)
        return
    got = validate_submitted_json(orjson.dumps([GOOD, item]), "real-gw", 10_000)
    assert [r.gateway_id for r in got] == ["real-gw", "real-gw"]
    assert got[1].model_dump() == expected.model_dump()
    assert encode_batch(got) == encode_batch([parse_record(GOOD, gateway_id="real-gw"), expected])


@pytest.mark.parametrize("body", [b"{}", b"not json", b'{"record_id": "r"}', b"[1]"])
def test_submitted_batch_path_refuses_what_is_not_an_array_of_records(body: bytes) -> None:
    with pytest.raises(ValidationError):
        validate_submitted_json(body, "gw", 10_000)


def test_submitted_batch_path_refuses_a_gateway_id_that_is_no_identifier() -> None:
    with pytest.raises(ValueError, match="not an identifier"):
        validate_submitted_json(orjson.dumps([GOOD]), "bad gw", 10_000)


def test_committed_json_schema_is_generated_from_model() -> None:
    committed = Path(__file__).resolve().parents[2] / "docs" / "usage-record.schema.json"
    assert json.loads(committed.read_text()) == json_schema(), (
        "docs/usage-record.schema.json is stale: run `tracker schema`"
    )


def test_a_cost_is_never_rounded_on_the_way_in() -> None:
    # Found in review: 12345678.123456789 sent as a JSON number was stored as 12345678.12345679
    # (a double holds ~16 digits); the contract promises refusal, never silent alteration.
    body = b'[{"record_id": "c", "agency_id": "in-sbi", "occurred_at": "2026-03-01T10:00:00Z",'
    body += b' "provider": "p", "model": "m", "currency": "INR", "cost": 12345678.123456789}]'
    with pytest.raises(ValidationError) as info:
        validate_submitted_json(body, "gw", 10_000)
    assert "send it as a string" in str(info.value)
    errors = errors_of({**GOOD, "cost": 12345678.123456789, "currency": "INR"})
    assert "more than 15 significant digits" in errors["cost"]
    as_text = parse_record({**GOOD, "cost": "12345678.123456789", "currency": "INR"},
                           gateway_id="gw")  # fmt: skip
    assert as_text.cost == Decimal("12345678.123456789")
    fifteen = parse_record({**GOOD, "cost": 123456.789012345, "currency": "INR"}, gateway_id="gw")
    assert fifteen.cost == Decimal("123456.789012345")
    assert parse_record({**GOOD, "cost": 0.1, "currency": "INR"}, gateway_id="g").cost == Decimal(
        "0.1"
    )


@pytest.mark.parametrize("field", ["provider", "model", "endpoint_host", "region", "use_case"])
def test_names_carry_no_control_characters(field: str) -> None:
    # Found in review: a model name with a line break split the auditor's CSV export row.
    assert field in errors_of({**GOOD, field: "a\nb"})
    assert field in errors_of({**GOOD, field: "a\x00b"})
    kept = parse_record({**GOOD, field: " a-b \n"}, gateway_id="gw")  # outer spaces stripped
    assert getattr(kept, field) == "a-b"


def test_a_batch_of_bad_records_stops_the_one_call_validation_at_the_first() -> None:
    # Found in review: pydantic collected five errors for every `{}` of a 1.4M-item body (4 KiB
    # gzipped): 2.7 GiB and 10 s before the collector's batch-size check refused it. The
    # callers go record by record to name the refusals anyway.
    body = b"[" + b",".join([b"{}"] * 20_000) + b"]"
    with pytest.raises(ValidationError) as submitted:
        validate_submitted_json(body, "gw", 100_000)
    with pytest.raises(ValidationError) as batch:
        validate_batch_json(body)
    assert submitted.value.error_count() <= 10 and batch.value.error_count() <= 10


def test_a_batch_over_the_limit_stops_the_one_call_validation_there() -> None:
    good = orjson.dumps({k: v for k, v in GOOD.items() if k != "record_id"})[1:-1]
    items = [b'{"record_id": "r%d", ' % i + good + b"}" for i in range(101)]
    body = b"[" + b",".join(items) + b"]"
    assert len(validate_submitted_json(body, "gw", 101)) == 101
    with pytest.raises(ValidationError) as info:
        validate_submitted_json(body, "gw", 100)
    assert [e["type"] for e in info.value.errors()] == ["too_long"]
