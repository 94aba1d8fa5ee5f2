"""tracker.json_read: the numbers orjson will not hold are read; nothing else orjson refuses is."""

from __future__ import annotations

import math

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


def test_a_message_with_a_lone_surrogate_is_one_rejection_not_a_crash() -> None:
    # Found in the second review: read by the standard library, the surrogate reached the
    # dead-letter write, which could not encode it, and the pipeline stopped on every restart.
    body = b'[{"record_id": "r", "gateway_id": "gw\\ud800", "agency_id": "in-sbi"}]'
    out = Processor(Classifier(load()[0])).process_message(body, partition=0, offset=1)
    assert not out.rows
    (rejection,) = out.rejections
    assert (rejection.record_index, rejection.field) == (-1, "message")
    rejection.payload.encode("utf-8")
    rejection.gateway_id.encode("utf-8")
