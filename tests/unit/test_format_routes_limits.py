"""The gateway format routes (/v1/litellm, /v1/opengatellm, /v1/events) on the collector app
with an in-memory sink (TestClient: no socket): JSON lines bounded as they are read, CloudEvents
binary-mode headers decoded as the HTTP binding says, and agencies named by non-strings
refused."""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from collector import bodies
from collector.adapters.common import Rejected
from collector.app import create_app
from tests.sinks import ListSink
from tracker import json_read
from tracker.gateways import Gateway, GatewayAuth

SINGLE = Gateway("gw-single", "single", frozenset({"in-mohfw"}))
MULTI = Gateway("gw-multi", "multi", frozenset({"in-moe", "in-cbse"}))
SINGLE_KEY = {"Authorization": "Bearer k-single"}
MULTI_KEY = {"Authorization": "Bearer k-multi"}
USAGE_TYPE = "org.sovereignty-tracker.usage.v1"
USAGE = {"provider": "krutrim", "model": "krutrim-2", "input_tokens": 300}


class KeyAuth(GatewayAuth):
    """Gateways by bearer key, held in memory (no ClickHouse behind it)."""

    def __init__(self, gateways: dict[str, Gateway]) -> None:
        self._gateways = gateways

    def authenticate(self, key: str) -> Gateway | None:
        return self._gateways.get(key)


def collector_app(sink: ListSink, max_batch_records: int = 10_000) -> FastAPI:
    auth = KeyAuth({"k-single": SINGLE, "k-multi": MULTI})
    return create_app(sink, auth, max_body_bytes=16 << 20, max_batch_records=max_batch_records)


def _client(sink: ListSink, max_batch_records: int = 10_000) -> TestClient:
    return TestClient(collector_app(sink, max_batch_records))


def _count_calls(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> list[int]:
    """Counts calls of module.name (a one-item list, read after the calls)."""
    calls = [0]
    real = getattr(module, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


GOOD_LINE = json.dumps({"id": "chatcmpl-1", "model": "gpt-4o", "custom_llm_provider": "openai",
                        "startTime": 1767254400.0}).encode()  # fmt: skip


@pytest.mark.parametrize("path", ["/v1/litellm", "/v1/opengatellm"])
def test_json_lines_past_the_batch_limit_are_refused_before_the_rest_are_read(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found in review: every line was parsed (by both parsers) and made an item before the
    # count was checked, so a 2 KiB gzip body of a million one-byte lines cost 10 s of CPU for
    # its 413. Now reading stops at the line past the limit: orjson is called for the whole
    # body once, then for at most `limit` lines.
    parsed = _count_calls(monkeypatch, orjson, "loads")
    reply = _client(ListSink(), max_batch_records=5).post(
        path, headers=SINGLE_KEY, content=b"x\n" * 1_000 + GOOD_LINE
    )
    assert reply.status_code == 413, reply.text
    assert reply.json()["detail"] == "batch of more than 5 items is over the limit of 5"
    assert parsed[0] <= 1 + 5, parsed


def test_the_line_limit_counts_lines_holding_json_text_only() -> None:
    # Blank lines are no items (as before): five lines among blank ones pass, a sixth is 413.
    client = _client(ListSink(), max_batch_records=5)
    five = b"\n \r\n".join([GOOD_LINE, b"x"] * 2 + [GOOD_LINE]) + b"\n\n"
    reply = client.post("/v1/litellm", headers=SINGLE_KEY, content=five)
    assert reply.status_code == 200, reply.text
    answer = reply.json()
    assert (answer["accepted"], answer["rejected"]) == (3, 2), answer
    assert [e["reason"][:7] for e in answer["errors"]] == ["line 3 ", "line 7 "], answer
    reply = client.post("/v1/litellm", headers=SINGLE_KEY, content=five + b"\t{\n")
    assert reply.status_code == 413, reply.text
    array = b"[" + b",".join([GOOD_LINE] * 6) + b"]"  # an array is counted as before
    reply = client.post("/v1/litellm", headers=SINGLE_KEY, content=array)
    assert reply.status_code == 413, reply.text
    assert reply.json()["detail"] == "batch of 6 items is over the limit of 5"


def test_a_line_that_is_no_json_is_not_read_by_the_second_parser(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Found in review: each broken line was parsed by orjson and then by the standard library.
    # The standard library is now asked only where orjson stopped at what it reads (below);
    # here it reads the whole body once (json_read, trying it as one document), no line.
    stdlib = _count_calls(monkeypatch, json, "loads")
    items = bodies.json_items(GOOD_LINE + b"\n" + b"{nope\n" * 50)
    assert stdlib[0] <= 1, stdlib
    assert isinstance(items[0], dict)
    reasons = [item.reason for item in items[1:] if isinstance(item, Rejected)]
    assert len(reasons) == 50
    assert reasons[0].startswith("line 2 is not valid JSON: "), reasons[0]
    assert reasons[-1].startswith("line 51 is not valid JSON: "), reasons[-1]


def test_a_line_orjson_cannot_read_still_reaches_the_standard_library() -> None:
    # Why json_read has a second parser: a number a double cannot hold, or a NaN/Infinity
    # literal, refuses its record (by field) rather than its line; a lone surrogate escape
    # refuses its line naming the field that holds it. Kept for lines.
    lines = [b'{"a": 1e400}', b'{"a": NaN}', b'{"a": -Infinity}', b'{"a": Infinity}',
             b'{"a": "cut\\ud83d"}', b'{"a": 1']  # fmt: skip
    big, nan, minus, plus, cut, torn = bodies.json_items(b"\n".join(lines))
    assert big == {"a": float("inf")} and plus == {"a": float("inf")}
    assert minus == {"a": float("-inf")}
    assert isinstance(nan, dict) and nan["a"] != nan["a"]
    assert isinstance(cut, Rejected) and cut.reason.startswith("line 5 is not valid JSON: a: ")
    assert "lone surrogate" in cut.reason
    assert isinstance(torn, Rejected) and torn.reason.startswith("line 6 is not valid JSON: ")


_PIECES = st.sampled_from([b"\n", b"\r", b"\r\n", b" ", b"\t", b"\x0b", b"\x0c", b"{}", b"x",
                           b"\x1c", b"\x85", b"1"])  # fmt: skip


@given(st.lists(_PIECES, max_size=30))
def test_json_lines_are_numbered_as_splitlines_numbers_them(pieces: list[bytes]) -> None:
    body = b"".join(pieces)
    expected = [(n, line) for n, line in enumerate(body.splitlines(), start=1) if line.strip()]
    assert list(bodies._json_lines(body)) == expected


def _event(event_id: str, source: str, **extra: Any) -> dict[str, Any]:
    """A structured usage event; `extra` adds attributes or replaces them (type, data)."""
    return {"specversion": "1.0", "id": event_id, "source": source, "type": USAGE_TYPE,
            "time": "2026-01-01T08:00:00Z", "data": USAGE, **extra}  # fmt: skip


def _binary(client: TestClient, key: dict[str, str], **headers: str) -> httpx.Response:
    attributes = {"ce-specversion": "1.0", "ce-type": USAGE_TYPE, "ce-source": "//gw/bin",
                  "ce-id": "bin-1", "ce-time": "2026-01-01T08:00:00Z"}  # fmt: skip
    attributes.update({name.replace("_", "-"): value for name, value in headers.items()})
    reply: httpx.Response = client.post(
        "/v1/events", content=json.dumps(USAGE).encode(),
        headers={**key, "Content-Type": "application/json", **attributes})  # fmt: skip
    return reply


def test_binary_mode_header_values_are_percent_decoded() -> None:
    # Found in review: ce-* values were taken as sent, so the same event sent structured and
    # then binary (percent-encoded, as the HTTP binding 1.0.2 §3.1.3.2 has senders write a
    # space, '"', '%' or non-ASCII character) was two records, counted twice.
    sink = ListSink()
    client = _client(sink)
    source, event_id = "//gateway.moe.gov.in/edu assist", "evt 0001 ü 100%"
    structured = client.post("/v1/events", json=_event(event_id, source),
                             headers={**SINGLE_KEY, "Content-Type": "application/cloudevents+json"})  # fmt: skip
    assert structured.status_code == 200, structured.text
    encoded = _binary(client, SINGLE_KEY, ce_id=urllib.parse.quote(event_id),
                      ce_source=urllib.parse.quote(source, safe="/:"))  # fmt: skip
    assert encoded.status_code == 200, encoded.text
    lower = _binary(client, SINGLE_KEY, ce_id="evt%200001%20%c3%bc%20100%25", ce_source=source)
    assert lower.status_code == 200, lower.text  # decoding accepts lower-case hex
    assert len(sink.records) == 3 and len({r.record_id for r in sink.records}) == 1, sink.records
    # An agency sent encoded (a MAY for senders) is the agency.
    agency = _binary(client, MULTI_KEY, ce_agencyid="in%2Dmoe")
    assert agency.status_code == 200, agency.text
    assert sink.records[-1].agency_id == "in-moe"


def test_binary_mode_quoted_strings_are_unescaped_first() -> None:
    # Older senders quoted a value holding a space or a quote (RFC 7230 quoted-string); it is
    # unescaped, then percent-decoded once (%25 stays a percent sign, not decoded twice).
    sink = ListSink()
    client = _client(sink)
    reply = _binary(client, SINGLE_KEY, ce_id='"evt \\"q\\" 1"%2541', ce_source='//gw/"a b"')
    assert reply.status_code == 200, reply.text
    twin = client.post("/v1/events", json=_event('evt "q" 1%41', "//gw/a b"),
                       headers={**SINGLE_KEY, "Content-Type": "application/cloudevents+json"})  # fmt: skip
    assert twin.status_code == 200, twin.text
    assert sink.records[0].record_id == sink.records[1].record_id


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        ("%C0%A0", "not UTF-8"),  # the binding's own example: an overlong encoding of U+0020
        ("evt-%FF", "not UTF-8"),
        ('"evt-1', "a quoted-string is not closed"),
        ('evt"1', "a quoted-string is not closed"),
    ],
)
def test_binary_mode_header_that_does_not_decode_is_refused(value: str, detail: str) -> None:
    sink = ListSink()
    reply = _binary(_client(sink), SINGLE_KEY, ce_id=value)
    assert reply.status_code == 422, reply.text
    assert reply.json()["detail"].startswith(f"header ce-id: {detail}"), reply.text
    assert sink.records == []


LITELLM_TYPE = "org.sovereignty-tracker.litellm.v1"
LITELLM_DATA = {"id": "chatcmpl-x1", "model": "gpt-4o", "custom_llm_provider": "openai",
                "startTime": 1767254400.0}  # fmt: skip


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (_event("e1", "//gw/x", agencyid=42), "agencyid"),
        (_event("e2", "//gw/x", agencyid=True), "agencyid"),
        (_event("e3", "//gw/x", agencyid=0), "agencyid"),
        (_event("e4", "//gw/x", agencyid=42, type=LITELLM_TYPE, data=LITELLM_DATA), "agencyid"),
        (_event("e5", "//gw/x", data={**USAGE, "agency_id": 0}), "agency_id"),
        (_event("e6", "//gw/x", data={**USAGE, "agency_id": False}), "agency_id"),
        (_event("e7", "//gw/x", data={**USAGE, "agency_id": []}), "agency_id"),
        (_event("e8", "//gw/x", data={**USAGE, "agency_id": 42}), "agency_id"),
        (_event("e10", "//gw/x", data={**USAGE, "record_id": 0}), "record_id"),
    ],
)
def test_an_agency_named_by_a_non_string_is_refused_not_defaulted(
    event: dict[str, Any], field: str
) -> None:
    # Found in review: an integer or boolean `agencyid` was passed over, and a falsy
    # data.agency_id (0, false, []) read as unnamed, so the event counted for the gateway's
    # only agency (docs/collectors.md: such an agency "is never read as unnamed").
    sink = ListSink()
    reply = _client(sink).post("/v1/events", json=event, headers={
        **SINGLE_KEY, "Content-Type": "application/cloudevents+json"})  # fmt: skip
    assert reply.status_code == 422, reply.text
    assert [e["field"] for e in reply.json()["errors"]] == [field], reply.text
    assert sink.records == []


@pytest.mark.parametrize("agencyid", ["", "  "])
def test_a_blank_agency_extension_names_none(agencyid: str) -> None:
    # As every other source: blank is not naming an agency, so the gateway's only one is used.
    sink = ListSink()
    reply = _client(sink).post("/v1/events", json=_event("e9", "//gw/x", agencyid=agencyid),
                               headers={**SINGLE_KEY, "Content-Type": "application/cloudevents+json"})  # fmt: skip
    assert reply.status_code == 200, reply.text
    assert [r.agency_id for r in sink.records] == ["in-mohfw"]


@pytest.mark.parametrize(
    ("body", "limit", "longer"),
    [
        (b"[" + b",".join([b"{}"] * 4) + b"]", 3, True),
        (b"[" + b",".join([b"{}"] * 3) + b"]", 3, False),
        (b'\xef\xbb\xbf [ "a,b" ,\n{"c": [1, 2, 3]}\t, 1 ,"d"]', 3, True),  # BOM, spaces
        (b'["a,b", {"c": [1, 2, 3]}, 1]', 3, False),  # commas inside items count not
        (b"[]", 0, False),
        (b"[1]", 0, True),
        (b'{"a": [1, 2, 3, 4, 5]}', 1, False),  # an object: no array to count
        (b"[1, 2, x, 4, 5]", 3, True),  # no JSON, but counted as it looks: refused either way
        (b"[1, 2, x]", 3, False),  # within the limit: the parse names what is wrong
        (b"[1, 2, 3, 4, x", 3, True),  # past the limit before the break: refused by count
        (b"[" * 100_000 + b"]" * 100_000, 3, False),  # one item, however deep
        (b"[" + b"[" * 1_000 + b"]" * 1_000 + b", {}" * 4 + b"]", 3, True),  # deep, then more
        (b"[" + b"9" * 5_000 + b", 1, 2, 3]", 3, True),  # past what int() converts, then more
        (b'["a\\"],[", "b,c", {"d": "]"}]', 3, False),  # brackets and quotes in strings
        (b'["a\\"],[", "b,c", {"d": "]"}, 4]', 3, True),
        (b'["open, 1, 2, 3, 4]', 3, False),  # a string left open: no JSON, not counted
        (b"[1, 2\xff, 3, 4]", 3, True),  # bytes, not text: counted as it looks
        # Inside an item only brackets matter, however deep and whatever strings hold:
        (b'[{"a": "]", "b": ["[", {"c": "}"}, [[["{"]]]]}, 2, 3, 4]', 3, True),
        (b'[{"a": "]", "b": ["[", {"c": "}"}, [[["{"]]]]}, 2, 3]', 3, False),
        (b"[[[[[[1, 2, 3, 4, 5]]]], [[[[6]]]]], 2, 3]", 3, False),
        (b"[[[[[[1]]]], [[[[6]]]]], 2, 3, 4]", 3, True),
        (b'[{"a": ["x\\\\"], "b": "\\\\\\"]"}, 2, 3, 4]', 3, True),  # escapes inside an item
        (b'[{"a": ["open, 1]}, 2, 3, 4]', 3, False),  # a string left open inside an item
        (b"[" + b"[" * 3_000 + b"]" * 3_000 + b", {}" * 4 + b"]", 3, False),  # past _DEEPEST
    ],
)
def test_a_large_arrays_items_are_counted_without_parsing_it_whole(
    body: bytes, limit: int, longer: bool
) -> None:
    assert json_read.array_longer_than(body, limit) is longer


# Any JSON value, strings holding what the scan must not take for structure (quotes,
# backslashes, brackets, commas, non-ASCII).
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(alphabet='ab"\\[]{},: é\u2028'),
    lambda inner: st.lists(inner, max_size=5)
    | st.dictionaries(st.text(alphabet='k"\\[]{},', max_size=4), inner, max_size=4),
    max_leaves=30,
)  # fmt: skip


def _spaced(value: Any, spaces: bool, ascii_only: bool) -> bytes:
    separators = (" , ", " : ") if spaces else (",", ":")
    return json.dumps(value, separators=separators, ensure_ascii=ascii_only).encode()


@given(st.lists(_JSON, max_size=12), st.integers(0, 14), st.booleans(), st.booleans())
def test_the_count_agrees_with_a_parse_on_any_array(
    items: list[Any], limit: int, spaces: bool, ascii_only: bool
) -> None:
    body = _spaced(items, spaces, ascii_only)
    assert json_read.array_longer_than(body, limit) is (len(items) > limit)


@given(st.dictionaries(st.text(alphabet='k"[]', max_size=3), _JSON, max_size=5),
       st.integers(0, 14), st.booleans())  # fmt: skip
def test_the_count_agrees_with_a_parse_on_any_object(
    document: dict[str, Any], limit: int, spaces: bool
) -> None:
    body = _spaced(document, spaces, False)
    together = sum(max(1, len(v)) for v in document.values() if isinstance(v, list))
    assert json_read.array_longer_than(body, limit, in_object=True) is (together > limit)


def test_the_count_steps_into_items_only_at_their_deeper_containers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found in review: the count read every string and comma inside an item in Python, so a
    body within the limit took seconds (one record holding 5M empty strings: 2.7 s at 16 MiB,
    more than parsing it). Inside an item one match passes over strings, commas and
    containers up to two deep; only deeper containers cost a step, and past MOST_STEPS the
    body is refused (TooIntricate)."""
    monkeypatch.setattr(json_read, "MOST_STEPS", 40)
    wide = b'[{"x": [' + b", ".join([b'""', b'"]"', b"[1]", b'{"a": [{"b": 2}]}'] * 50_000)
    assert not json_read.array_longer_than(wide + b"]}, 2, 3]", 3)  # 3 steps an item here
    assert json_read.array_longer_than(wide + b"]}, 2, 3, 4, 5]", 3)
    deep = b'[{"x": [' + b", ".join([b"[[[[]]]]"] * 21) + b"]}]"  # 2 steps each
    with pytest.raises(json_read.TooIntricate, match="too intricate to count"):
        json_read.array_longer_than(deep, 3)
    monkeypatch.setattr(json_read, "MOST_STEPS", 50)
    assert not json_read.array_longer_than(deep, 3)


@pytest.mark.parametrize("path", ["/v1/records", "/v1/litellm"])
def test_a_large_body_too_intricate_to_count_is_refused_before_it_is_parsed(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(json_read, "MOST_STEPS", 1_000)
    body = b'[{"record_id": "r", "x": [' + b", ".join([b"[[[[]]]]"] * 200_000) + b"]}]"
    assert len(body) > bodies.LARGE_BODY_BYTES
    orjson_calls = _count_calls(monkeypatch, orjson, "loads")
    reply = _client(ListSink()).post(path, headers=SINGLE_KEY, content=body)
    assert reply.status_code == 413, reply.text[:300]
    assert "too intricate to count" in reply.json()["detail"]
    assert orjson_calls == [0]


def _padded(n: int, pad: int) -> list[dict[str, Any]]:
    return [{"record_id": f"r{i}", "pad": "x" * pad} for i in range(n)]


@pytest.mark.parametrize(
    ("path", "content_type", "what"),
    [
        ("/v1/records", "application/json", "records"),
        ("/v1/litellm", "application/json", "items"),
        ("/v1/opengatellm", "application/json", "items"),
        ("/v1/events", "application/cloudevents-batch+json", "items"),
    ],
)
def test_a_large_array_past_the_batch_limit_is_refused_before_it_is_parsed(
    path: str, content_type: str, what: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found in review: a 16 MiB array of 5.6M `{}` was parsed whole (by pydantic's core, ~800
    MB, then orjson, ~470 MB) before its count refused it. Now a body past 1 MiB is counted
    item by item first, and nothing parses it whole; OpenGateLLM's answers wrapped in an
    object too."""
    body = orjson.dumps(_padded(1_001, 1_100))
    if path == "/v1/opengatellm":
        body = orjson.dumps({"object": "list", "data": _padded(1_001, 1_100)})
    assert len(body) > bodies.LARGE_BODY_BYTES
    orjson_calls = _count_calls(monkeypatch, orjson, "loads")
    from collector import ingest

    pydantic_calls = _count_calls(monkeypatch, ingest, "validate_submitted_json")
    reply = _client(ListSink(), max_batch_records=1_000).post(
        path, headers={**SINGLE_KEY, "Content-Type": content_type}, content=body
    )
    assert reply.status_code == 413, reply.text
    assert reply.json()["detail"] == f"batch of more than 1000 {what} is over the limit of 1000"
    assert orjson_calls == [0] and pydantic_calls == [0]


def test_a_large_batch_within_the_limit_is_accepted() -> None:
    records = [{"record_id": f"big-{i}", "agency_id": "in-mohfw", "provider": "sarvam",
                "model": "sarvam-m", "occurred_at": "2026-07-01T10:00:00Z",
                "use_case": "x" * 60} for i in range(6_000)]  # fmt: skip
    body = orjson.dumps(records)
    assert len(body) > bodies.LARGE_BODY_BYTES
    sink = ListSink()
    reply = _client(sink, max_batch_records=6_000).post("/v1/records", headers=SINGLE_KEY,
                                                        content=body)  # fmt: skip
    assert reply.status_code == 200, reply.text[:500]
    assert reply.json()["accepted"] == 6_000 and len(sink.records) == 6_000


# --- Found in the review of the collector's limits (twenty-second session) ---------------

DEEP = b"[" * 1_010 + b"]" * 1_010  # orjson reads it (1,024 levels); str() of it recurses out


@pytest.mark.parametrize("field", ["call_type", "response_cost", "endTime"])
def test_a_value_nested_too_deep_to_read_refuses_its_item_only(field: str) -> None:
    """Found in review: str() of a value nested ~1,000 deep raised RecursionError out of the
    mapping, the request was a 500 and the good line beside it was lost."""
    bad = GOOD_LINE[:-1].replace(b"chatcmpl-1", b"chatcmpl-deep") + (
        b', "%s": %s}' % (field.encode(), DEEP)
    )
    sink = ListSink()
    reply = _client(sink).post("/v1/litellm", headers=SINGLE_KEY,
                               content=GOOD_LINE + b"\n" + bad + b"\n")  # fmt: skip
    assert reply.status_code == 200, reply.text[:300]
    assert (reply.json()["accepted"], reply.json()["rejected"]) == (1, 1)
    [error] = reply.json()["errors"]
    assert error["index"] == 1 and "nested too deep" in error["reason"], error
    assert len(sink.records) == 1


def test_an_unparseable_url_is_refused_naming_its_field() -> None:
    row = {"id": 9101, "datetime": "2026-07-01 10:00:00", "endpoint": "/v1/chat/completions",
           "model": "albert-large", "prompt_tokens": 1, "completion_tokens": 1, "status": 200,
           "client_url": "http://[::1"}  # fmt: skip
    sink = ListSink()
    reply = _client(sink).post("/v1/opengatellm", headers=SINGLE_KEY,
                               json=[row, {**row, "id": 9102, "client_url": "http://[::1]:8000"}])  # fmt: skip
    assert reply.status_code == 200, reply.text
    [error] = reply.json()["errors"]
    assert error["field"] == "client_url" and "not a URL" in error["reason"], error
    assert [r.endpoint_host for r in sink.records] == ["::1"]


def test_refusals_quote_at_most_a_short_part_of_what_the_caller_sent() -> None:
    """Found in review: 1,000 records each with one 15,000-character key (20 KB gzipped)
    answered a 15 MB 422: every refusal named the key whole."""
    key = "k" * 15_000
    records = [{"record_id": f"long-{i}", "agency_id": "in-mohfw", "provider": "sarvam",
                "model": "m", "occurred_at": "2026-07-01T10:00:00Z", key: 1}
               for i in range(1_000)]  # fmt: skip
    reply = _client(ListSink()).post("/v1/records", headers=SINGLE_KEY, json=records)
    assert reply.status_code == 422
    errors = reply.json()["errors"]
    assert len(errors) == 1_000
    assert all(len(e["field"]) <= 128 and len(e["reason"]) <= 300 for e in errors)
    assert errors[0]["field"].startswith("kkkk") and errors[0]["field"].endswith("…")
    assert len(reply.content) < 400_000, len(reply.content)


@pytest.mark.parametrize(
    ("body", "limit", "longer"),
    [
        (b'{"object": "list", "data": [1, 2, 3, 4]}', 3, True),
        (b'{"object": "list", "data": [1, 2, 3]}', 3, False),
        (b'{"a": [1, 2], "b": [3, 4]}', 3, True),  # the arrays together
        (b'{"a": [], "b": [1, 2]}', 3, False),  # an empty one counts one
        (b'{"a": {"b": [1, 2, 3, 4, 5]}}', 3, False),  # deeper: not counted
        (b'{"a": [[1, 2, 3, 4, 5]]}', 3, False),  # items of items: not counted
        (b'{"resourceSpans": [' + b"{}, " * 10 + b"{}]}", 9, True),
        (b"[1, 2, 3, 4]", 3, True),  # an array still counts
    ],
)
def test_an_objects_arrays_are_counted_when_asked(body: bytes, limit: int, longer: bool) -> None:
    assert json_read.array_longer_than(body, limit, in_object=True) is longer
    assert json_read.array_longer_than(body, limit) is (longer and body.startswith(b"["))
