from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from pydantic import ValidationError

from tracker.contract import UsageRecord, encode_batch, json_schema, parse_record, validation_errors

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


def test_committed_json_schema_is_generated_from_model() -> None:
    committed = Path(__file__).resolve().parents[2] / "docs" / "usage-record.schema.json"
    assert json.loads(committed.read_text()) == json_schema(), (
        "docs/usage-record.schema.json is stale: run `tracker schema`"
    )
