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


def test_unreadable_message_is_one_rejection(processor: Processor) -> None:
    out = processor.process_message(b"\x00not json")
    assert not out.rows
    (rej,) = out.rejections
    assert (rej.record_index, rej.field) == (-1, "message")


def test_collector_encoding_is_what_processor_reads(processor: Processor) -> None:
    records = [parse_record(record(record_id=f"r{i}"), gateway_id="gw") for i in range(3)]
    out = processor.process_message(encode_batch(records))
    assert [col(r, "record_id") for r in out.rows] == ["r0", "r1", "r2"]


def test_key_literals_admit_only_contract_identifiers() -> None:
    from pipeline.writer import _literal

    assert _literal("gw-1:req/42@x") == "'gw-1:req/42@x'"
    for hostile in ("a'b", "a\\b", "x') OR 1=1 --", ""):
        with pytest.raises(ValueError, match="contract identifier"):
            _literal(hostile)
