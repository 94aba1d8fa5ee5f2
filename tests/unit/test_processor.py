from __future__ import annotations

from decimal import Decimal

import orjson
import pytest

from pipeline.processor import COLUMNS, Processor
from tracker.classify import Classifier
from tracker.contract import encode_batch, parse_record
from tracker.registry import load


@pytest.fixture(scope="module")
def processor() -> Processor:
    return Processor(Classifier(load()[0]))


def record(**patch: object) -> dict[str, object]:
    base: dict[str, object] = {
        "record_id": "r1", "gateway_id": "gw", "agency_id": "in-aiims-delhi",
        "occurred_at": "2026-02-01T00:00:00Z", "provider": "azure_openai", "model": "gpt-4o",
        "region": "centralindia", "cost": "2", "currency": "USD",
    }  # fmt: skip
    return {**base, **patch}


def col(row: tuple[object, ...], name: str) -> object:
    return row[COLUMNS.index(name)]


def test_row_is_classified_and_cost_converted(processor: Processor) -> None:
    out = processor.process_message(orjson.dumps([record()]), partition=3, offset=42)
    assert not out.rejections
    (row,) = out.rows
    assert len(row) == len(COLUMNS)
    assert col(row, "tier") == "onshore"
    assert col(row, "sector") == "health"
    assert col(row, "channel") == "hospital"
    assert col(row, "cost_reporting") == Decimal(2) * 84
    assert col(row, "cost_converted") == 1
    assert (col(row, "source_partition"), col(row, "source_offset")) == (3, 42)
    assert str(col(row, "registry_version")).startswith("r-")


def test_unknown_currency_kept_but_flagged(processor: Processor) -> None:
    (row,) = processor.process_message(orjson.dumps([record(currency="JPY")])).rows
    assert col(row, "cost") == Decimal(2)
    assert (col(row, "cost_reporting"), col(row, "cost_converted")) == (Decimal(0), 0)


def test_bad_records_rejected_good_kept(processor: Processor) -> None:
    body = orjson.dumps(
        [record(), record(record_id="r2", input_tokens=-5), "junk", record(record_id="r3")]
    )
    out = processor.process_message(body, partition=0, offset=7)
    assert [col(r, "record_id") for r in out.rows] == ["r1", "r3"]
    assert {(r.record_index, r.field) for r in out.rejections} == {
        (1, "input_tokens"),
        (2, "record"),
    }
    assert all(r.payload for r in out.rejections)


@pytest.mark.parametrize(
    ("bad", "field"),
    [(b'"energy_wh": 1e400', "energy_wh"), (b'"energy_wh": NaN', "energy_wh"),
     (b'"input_tokens": ' + b"9" * 400, "input_tokens")],
)  # fmt: skip
def test_a_number_orjson_cannot_hold_refuses_its_record_only(
    processor: Processor, bad: bytes, field: str
) -> None:
    # Found in review: orjson refused the whole message over one out-of-range number, and the
    # good record beside it went to the dead letters with it.
    good = orjson.dumps(record())
    other = orjson.dumps(record(record_id="r2"))[:-1] + b", " + bad + b"}"
    out = processor.process_message(b"[" + good + b", " + other + b"]", partition=0, offset=3)
    assert [col(r, "record_id") for r in out.rows] == ["r1"]
    assert [(r.record_index, r.field) for r in out.rejections] == [(1, field)]
    assert out.rejections[0].payload


def test_unreadable_message_is_one_rejection(processor: Processor) -> None:
    out = processor.process_message(b"\x00not json")
    assert not out.rows
    (rej,) = out.rejections
    assert (rej.record_index, rej.field) == (-1, "message")


def test_collector_encoding_is_what_processor_reads(processor: Processor) -> None:
    records = [parse_record(record(record_id=f"r{i}"), gateway_id="gw") for i in range(3)]
    out = processor.process_message(encode_batch(records))
    assert [col(r, "record_id") for r in out.rows] == ["r0", "r1", "r2"]


def test_key_check_admits_only_contract_identifiers() -> None:
    from pipeline.writer import _key_lines

    good = [("gw-1", "req/42@x"), ("gw.2", "r:1_a")]
    assert _key_lines(good) == "gw-1 req/42@x\ngw.2 r:1_a"
    # Quotes would end the TSV literal; a space, tab or newline would split or merge keys.
    # (An empty identifier, or one starting with a symbol, is harmless here; the contract
    # refuses it before a record gets this far.)
    for hostile in ("a'b", "a\\b", "x') OR 1=1 --", "a\tb", "a\nb", "abc\n", "a b", "\nx", "é"):
        for keys in ([("gw", hostile)], [(hostile, "r")], [*good, ("gw", hostile)]):
            with pytest.raises(ValueError, match="contract identifier"):
                _key_lines(keys)


# Variants of one field each, in the shapes a producer other than our collector might write:
# the one-call fast path (validate_batch_json) must accept exactly what the per-record path
# accepts, with equal values, or a message's figures would depend on its neighbours.
VARIANTS: list[dict[str, object]] = [
    {},
    {"cost": 0.1},
    {"cost": 2},
    {"cost": "0.000000001"},
    {"cost": 0.0000000001},
    {"cost": "1e3"},
    {"cost": 1e13},
    {"cost": -1},
    {"cost": None, "currency": None},
    {"cost": "2", "currency": None},
    {"currency": "usd"},
    {"occurred_at": "2026-02-01T05:30:00+05:30"},
    {"occurred_at": "2026-02-01T00:00:00.123456Z"},
    {"occurred_at": "2026-02-01T00:00:00"},
    {"occurred_at": 1769904000},
    {"occurred_at": "2014-12-31T23:59:59Z"},
    {"occurred_at": "2999-01-01T00:00:00Z"},
    {"request_count": "5"},
    {"request_count": 5.0},
    {"request_count": 5.5},
    {"request_count": True},
    {"request_count": 0},
    {"input_tokens": 10**12 + 1},
    {"model": "  padded  "},
    {"model": ""},
    {"endpoint_host": ""},
    {"region": None},
    {"energy_wh": 1.5},
    {"energy_wh": "NaN"},
    {"latency_ms": "12"},
    {"status": "error"},
    {"status": "ERROR"},
    {"operation": "embeddings"},
    {"record_id": "bad id"},
    {"record_id": "x" * 129},
    {"unexpected": 1},
    {"schema_version": 2},
]


@pytest.mark.parametrize(
    "patch", VARIANTS, ids=lambda p: ",".join(f"{k}={v!r}" for k, v in p.items())[:60] or "base"
)
def test_fast_path_accepts_exactly_what_the_record_path_accepts(patch: dict[str, object]) -> None:
    from pydantic import ValidationError

    from tracker.contract import validate_batch_json

    item = record(**patch)
    try:
        slow: object = parse_record(item)
    except ValidationError:
        slow = "refused"
    fast: object
    try:
        (fast,) = validate_batch_json(orjson.dumps([item]))
    except ValidationError:
        fast = "refused"
    assert fast == slow


def test_one_bad_record_falls_back_to_naming_it(processor: Processor) -> None:
    good = [record(record_id=f"r{i}") for i in range(5)]
    bad = record(record_id="r-bad", request_count=0)
    out = processor.process_message(orjson.dumps([*good[:2], bad, *good[2:]]))
    assert [col(r, "record_id") for r in out.rows] == [f"r{i}" for i in range(5)]
    assert [(r.record_index, r.field) for r in out.rejections] == [(2, "request_count")]
    fast = processor.process_message(orjson.dumps(good))
    assert fast.rows == out.rows and not fast.rejections
