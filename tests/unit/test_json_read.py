"""tracker.json_read: the numbers orjson will not hold are read; nothing else orjson refuses is."""

from __future__ import annotations

import json
import math

import orjson
import pytest

from pipeline.processor import Processor
from tracker import json_read
from tracker.classify import Classifier
from tracker.registry import load


def test_numbers_orjson_refuses_are_read() -> None:
    assert json_read.loads(b"[1e400]") == [math.inf]
    assert math.isnan(json_read.loads(b'{"x": NaN}')["x"])
    assert json_read.loads(b"[" + b"9" * 400 + b"]") == [int("9" * 400)]
    assert json_read.loads(b'{"a": [1, 2]}') == {"a": [1, 2]}  # orjson's own path


@pytest.mark.parametrize(
    "body",
    [
        b"[1,]",  # not JSON
        b'["gw\\ud800"]',  # a lone surrogate: could not be encoded again (found in review)
        "[1]".encode("utf-16"),  # not UTF-8: the standard library would guess the encoding
        b"\xff[1]",
        b"[" * 100_000 + b"]" * 100_000,  # deeper than either reader goes
    ],
    ids=["syntax", "surrogate", "utf-16", "bad-utf-8", "deep"],
)
def test_what_orjson_refuses_for_other_reasons_stays_refused(body: bytes) -> None:
    with pytest.raises(json_read.JSONError):
        json_read.loads(body)


def test_a_lone_surrogate_refuses_its_record_not_a_crash_and_not_the_message() -> None:
    # Found in the second review: read by the standard library, the surrogate reached the
    # dead-letter write, which could not encode it, and the pipeline stopped on every restart.
    # Found in a later review: the whole message was then refused, not only that record.
    good = {"record_id": "ok", "gateway_id": "gw", "agency_id": "in-sbi", "provider": "sarvam",
            "model": "m", "occurred_at": "2026-01-01T00:00:00Z"}  # fmt: skip
    bad = b'{"record_id": "r", "gateway_id": "gw\\ud800", "agency_id": "in-sbi"}'
    body = b"[" + orjson.dumps(good) + b", " + bad + b"]"
    out = Processor(Classifier(load()[0])).process_message(body, partition=0, offset=1)
    assert len(out.rows) == 1 and "ok" in out.rows[0]
    (rejection,) = out.rejections
    assert (rejection.record_index, rejection.field) == (1, "gateway_id")
    assert "lone surrogate" in rejection.reason
    rejection.payload.encode("utf-8")
    assert json.loads(rejection.payload)["gateway_id"] == "gw\ud800"  # kept, escaped
    rejection.gateway_id.encode("utf-8")


def test_items_with_a_lone_surrogate_are_named_by_the_field_holding_it() -> None:
    body = b'[{"a": 1}, {"m": {"k": ["x", "\\udc00"]}}, {"\\ud83d": 1}, "\\ud83d", {"b": 2}]'
    items = json_read.loads(body, items=True)
    assert items[0] == {"a": 1} and items[4] == {"b": 2}
    fields = [i.field for i in items[1:4]]
    assert fields == ["m.k.1", "<key>", "record"]
    for item in items[1:4]:
        assert isinstance(item, json_read.Unencodable)
        item.payload.encode("utf-8")
    # Outside a batch's items, the document is refused, naming the field.
    with pytest.raises(json_read.JSONError, match=r"^m\.k\.1: a lone surrogate"):
        json_read.loads(b'{"m": {"k": ["x", "\\udc00"]}}', items=True)
    # A valid pair is a character: read as such, by orjson.
    assert json_read.loads(b'["\\ud83d\\ude00"]', items=True) == ["\U0001f600"]


def test_an_integer_past_pythons_digit_limit_refuses_its_record_only() -> None:
    # Found in review: 4,301 digits is past what Python converts to an int, and the whole
    # document was refused ("number is infinity when parsed as double"), the good records
    # beside it lost. It reads as infinity, which the contract refuses in that record.
    assert json_read.loads(b"[" + b"9" * 4301 + b", -" + b"9" * 5000 + b"]") == [
        math.inf, -math.inf,
    ]  # fmt: skip
    assert json_read.loads(b"[" + b"9" * 4300 + b"]") == [int("9" * 4300)]
    good = {"record_id": "ok", "gateway_id": "gw", "agency_id": "in-sbi", "provider": "sarvam",
            "model": "m", "occurred_at": "2026-01-01T00:00:00Z"}  # fmt: skip
    bad = orjson.dumps({**good, "record_id": "big"})[:-1] + b', "input_tokens": ' + b"1" * 4301
    body = b"[" + orjson.dumps(good) + b", " + bad + b"}]"
    out = Processor(Classifier(load()[0])).process_message(body, partition=0, offset=1)
    assert len(out.rows) == 1 and "ok" in out.rows[0]
    (rejection,) = out.rejections
    assert (rejection.record_index, rejection.field) == (1, "input_tokens")
