"""POST /v1/traces: the span limit is applied before an export's spans are built, and GenAI
attributes that name things (provider, model, host, region) are strings or refuse their span.
In process (no network): the OTLP router on a FastAPI app with an in-memory sink."""

from __future__ import annotations

import gzip
import json
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from google.protobuf import json_format
from google.rpc import status_pb2  # type: ignore[import-untyped]
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from collector.adapters import otlp
from collector.adapters.common import Context, Rejected, run
from collector.routes_common import Limits
from collector.routes_otlp import otlp_router
from tests.sinks import ListSink
from tracker.gateways import Gateway, GatewayAuth

AGENCY = "in-mohfw"
GATEWAY = Gateway("gw-otlp-limits", "otlp-limits", frozenset({AGENCY}))
AUTH = {"Authorization": "Bearer k1"}
PROTOBUF = {**AUTH, "Content-Type": "application/x-protobuf"}
JSON = {**AUTH, "Content-Type": "application/json"}
ONE = Context(default_agency=AGENCY, agencies=frozenset({AGENCY}))


class _Auth(GatewayAuth):
    """One fixed key, no store behind it."""

    def __init__(self) -> None:
        pass

    def authenticate(self, key: str) -> Gateway | None:
        return GATEWAY if key == "k1" else None


def _client(max_spans: int) -> tuple[TestClient, ListSink]:
    sink = ListSink()
    app = FastAPI()
    app.state.gateway_auth = _Auth()
    app.include_router(otlp_router(sink, Limits(16 * 1024 * 1024, max_spans)))
    return TestClient(app), sink


@pytest.fixture
def parse_dict_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """Every json_format.ParseDict call the adapter makes while the test runs."""
    calls: list[object] = []
    parse_dict = json_format.ParseDict

    def counted(js_dict: Any, message: Any, **kwargs: Any) -> Any:
        calls.append(message)
        return parse_dict(js_dict, message, **kwargs)

    monkeypatch.setattr(json_format, "ParseDict", counted)  # the module otlp calls
    yield calls


def _json_span(index: int) -> dict[str, Any]:
    return {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": f"{index + 1:016x}",
            "name": "chat", "startTimeUnixNano": "1767225600000000000",
            "endTimeUnixNano": "1767225601000000000",
            "attributes": [
                {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
                {"key": "gen_ai.system", "value": {"stringValue": "sarvam"}},
                {"key": "gen_ai.request.model", "value": {"stringValue": "sarvam-m"}}]}  # fmt: skip


def _json_export(*scopes: int, resource: Any = None) -> dict[str, Any]:
    """One resource whose scopes hold the given numbers of spans."""
    spans = iter(range(sum(scopes)))
    rs: dict[str, Any] = {"scopeSpans": [{"spans": [_json_span(next(spans)) for _ in range(n)]}
                                         for n in scopes]}  # fmt: skip
    if resource is not None:
        rs["resource"] = resource
    return {"resourceSpans": [rs]}


def _protobuf_export(*scopes: int) -> bytes:
    body = json.dumps(_json_export(*scopes)).encode()
    return otlp.decode(body, "application/json").request.SerializeToString()


def _length_delimited(field_number: int, value: bytes) -> bytes:
    """A protobuf length-delimited field: key, varint length, value."""
    out = bytearray([field_number << 3 | 2])
    size = len(value)
    while size >= 0x80:
        out.append(size & 0x7F | 0x80)
        size >>= 7
    return bytes(out) + bytes([size]) + value


# --- the span limit comes before any span is built --------------------------------------


def test_a_json_export_over_the_limit_is_refused_before_parsedict(
    parse_dict_calls: list[object],
) -> None:
    # Found in review: ParseDict (and the id rewrite) ran over every span of the export, 11.6 s
    # on the event loop for a 4 KiB gzip body, before the span count refused it.
    body = json.dumps(_json_export(2, 1)).encode()
    with pytest.raises(otlp.TooManySpans, match=r"^batch of 3 items is over the limit of 2$"):
        otlp.decode(body, "application/json", max_spans=2)
    assert parse_dict_calls == []
    within = otlp.decode(body, "application/json", max_spans=3)
    assert len(list(otlp.spans(within))) == 3
    assert parse_dict_calls  # the same body within the limit is parsed as before


def test_a_protobuf_export_over_the_limit_is_refused_before_it_is_parsed() -> None:
    # The count is read off the wire and stops past the limit: the bytes after the limit'th
    # span are never read (here they are not even protobuf, and the parser would answer 400).
    body = _protobuf_export(2, 2)
    assert otlp.protobuf_counts(body, 10) == otlp.Counts(1, 2, 4)
    assert otlp.protobuf_counts(body, 2) == otlp.Counts(1, 2, 3, exact=False)
    truncated = body + b"\xff\xff"
    with pytest.raises(otlp.TooManySpans, match=r"^batch of more than 2 items is over"):
        otlp.decode(truncated, "application/x-protobuf", max_spans=2)
    with pytest.raises(otlp.OtlpDecodeError):  # within the limit, the parser still decides
        otlp.decode(truncated, "application/x-protobuf", max_spans=4)
    assert len(list(otlp.spans(otlp.decode(body, "application/x-protobuf", max_spans=4)))) == 4


def test_wire_the_count_does_not_follow_is_counted_after_parsing() -> None:
    # A group (wire types 3 and 4) among a span list's unknown fields: the wire count gives up
    # and the parsed message is counted instead, still before any span item is built.
    group = bytes([(9 << 3) | 3, (9 << 3) | 4])  # empty group, field 9 (unknown to ScopeSpans)
    scope = group + b"\x12\x00" * 3  # then three empty spans (ScopeSpans field 2)
    body = _length_delimited(1, _length_delimited(2, scope))
    assert otlp.protobuf_counts(body, 2) is None
    with pytest.raises(otlp.TooManySpans, match=r"^batch of more than 2 items is over the limit"):
        otlp.decode(body, "application/x-protobuf", max_spans=2)
    # Unknown fields are not bounded by the span count: the scan (Python) reads a few fields
    # per entry the limit allows, and leaves a body of many more to the parser (C).
    unknown = bytes([9 << 3, 0]) * 100 + b"\x12\x00"  # 100 varint fields 9, then one span
    body = _length_delimited(1, _length_delimited(2, unknown))
    assert otlp.protobuf_counts(body, 2) is None
    assert otlp.protobuf_counts(body, 100) == otlp.Counts(1, 1, 1)
    assert len(list(otlp.spans(otlp.decode(body, "application/x-protobuf", max_spans=2)))) == 1


def test_empty_resource_and_scope_entries_are_bounded_too() -> None:
    # 4 MiB of empty resourceSpans or scopeSpans entries cost as much to read as spans (9 s of
    # ParseDict) and hold no span to count. No export within the span limit whose entries all
    # hold a span can have more entries than the limit.
    empty_scopes = {"resourceSpans": [{"scopeSpans": [{}, {}, {"spans": [_json_span(0)]}]}]}
    with pytest.raises(otlp.TooManySpans, match=r"^export of 3 scopeSpans entries is over"):
        otlp.decode(json.dumps(empty_scopes).encode(), "application/json", max_spans=2)
    empty_resources = b"\x0a\x00" * 3
    with pytest.raises(otlp.TooManySpans, match=r"^export of more than 2 resourceSpans"):
        otlp.decode(empty_resources, "application/x-protobuf", max_spans=2)
    assert otlp.json_counts(_json_export(2, 1)) == otlp.Counts(1, 2, 3)


def test_the_route_answers_413_in_the_otlp_shape_before_decoding() -> None:
    client, sink = _client(max_spans=2)
    # A resource attribute no field holds makes the whole body a 400 once parsed: the 413 shows
    # the export was refused for its size first.
    unreadable = {"attributes": [{"key": "k", "value": {"intValue": "not a number"}}]}
    body = json.dumps(_json_export(3, resource=unreadable)).encode()
    reply = client.post("/v1/traces", content=body, headers=JSON)
    assert reply.status_code == 413, reply.text
    assert reply.json() == {"code": 413, "message": "batch of 3 items is over the limit of 2"}
    reply = client.post("/v1/traces", content=_protobuf_export(3) + b"\xff", headers=PROTOBUF)
    assert reply.status_code == 413
    status = status_pb2.Status.FromString(reply.content)
    assert (status.code, status.message) == (
        413,
        "batch of more than 2 items is over the limit of 2",
    )
    reply = client.post("/v1/traces", content=_protobuf_export(2), headers=PROTOBUF)
    assert reply.status_code == 200
    assert len(sink.records) == 2


def test_a_gzip_bomb_of_empty_spans_builds_no_span_item() -> None:
    # Found in review: 4 KiB of gzip inflating to 4 MiB of empty protobuf spans (two million)
    # were all expanded, 946 MiB at peak, before the count answered 413. Python's own
    # allocations while the request is served stay near the inflated body's size.
    spans = b"\x12\x00" * (2 * 1024 * 1024)  # ScopeSpans.spans (field 2), each empty
    # ExportTraceServiceRequest.resource_spans (1) > ResourceSpans.scope_spans (2) > spans
    body = gzip.compress(_length_delimited(1, _length_delimited(2, spans)))
    assert len(body) < 8192
    client, _ = _client(max_spans=10_000)
    tracemalloc.start()
    try:
        reply = client.post("/v1/traces", content=body,
                            headers={**PROTOBUF, "Content-Encoding": "gzip"})  # fmt: skip
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert reply.status_code == 413
    assert "over the limit of 10000" in status_pb2.Status.FromString(reply.content).message
    assert peak < 48 * 1024 * 1024, f"{peak / 2**20:.0f} MiB"


# --- names are strings ------------------------------------------------------------------


def _span_item(drop: str = "", **attributes: AnyValue) -> otlp.SpanItem:
    """A GenAI chat span, its attributes given as keyword arguments (`server__address` for
    `server.address`) over the defaults, less the attribute `drop`."""
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.span_id = bytes(range(1, 17)), bytes(range(1, 9))
    span.start_time_unix_nano = 1767225600 * 10**9
    span.end_time_unix_nano = span.start_time_unix_nano + 10**9
    given = {"gen_ai.operation.name": AnyValue(string_value="chat"),
             "gen_ai.provider.name": AnyValue(string_value="openai"),
             "gen_ai.request.model": AnyValue(string_value="gpt-4o"),
             **{key.replace("__", "."): value for key, value in attributes.items()}}  # fmt: skip
    span.attributes.extend(KeyValue(key=k, value=v) for k, v in given.items() if k != drop)
    (item,) = otlp.spans(otlp.Export(request))
    return item


def _array(*values: str) -> AnyValue:
    out = AnyValue()
    out.array_value.values.extend(AnyValue(string_value=v) for v in values)
    return out


def _kvlist() -> AnyValue:
    out = AnyValue()
    out.kvlist_value.values.add(key="name", value=AnyValue(string_value="x"))
    return out


@pytest.mark.parametrize(
    ("attribute", "value", "kind"),
    [
        ("gen_ai.provider.name", _array("openai"), "an array"),
        ("gen_ai.system", AnyValue(int_value=3), "an int"),
        ("gen_ai.response.model", AnyValue(bool_value=True), "a bool"),
        ("gen_ai.request.model", AnyValue(double_value=4.0), "a double"),
        ("server.address", AnyValue(int_value=1), "an int"),
        ("server.address", AnyValue(bytes_value=b"api.openai.com"), "bytes"),
        ("cloud.region", AnyValue(int_value=1), "an int"),
        ("tracker.use_case", _kvlist(), "a kvlist"),
    ],
)
def test_a_name_that_is_no_string_refuses_its_span(
    attribute: str, value: AnyValue, kind: str
) -> None:
    # Found in review: str() made them provider "['openai']", model "True", region "1".
    # gen_ai.system, the older name, is read when gen_ai.provider.name is absent.
    drop = "gen_ai.provider.name" if attribute == "gen_ai.system" else ""
    item = _span_item(drop, **{attribute.replace(".", "__"): value})
    assert run(otlp.map_span, item, ONE) == Rejected(attribute, f"must be a string, not {kind}")


def test_string_names_still_map() -> None:
    item = _span_item(server__address=AnyValue(string_value="api.openai.com"),
                      cloud__region=AnyValue(string_value="eastus"),
                      gen_ai__system=AnyValue(string_value=""))  # fmt: skip
    mapped = run(otlp.map_span, item, ONE)
    assert isinstance(mapped, dict)
    assert (mapped["provider"], mapped["model"], mapped["endpoint_host"], mapped["region"]) == (
        "openai", "gpt-4o", "api.openai.com", "eastus")  # fmt: skip


def test_a_span_naming_its_provider_with_an_array_is_refused_alone() -> None:
    # The refusal is one span's, in partial_success; the span beside it lands.
    bad = _span_item(gen_ai__provider__name=_array("openai"),
                     gen_ai__request__model=AnyValue(bool_value=True))  # fmt: skip
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    scope.spans.append(bad.span)
    good = scope.spans.add()
    good.CopyFrom(_span_item().span)
    good.span_id = bytes(range(2, 10))
    client, sink = _client(max_spans=10)
    reply = client.post("/v1/traces", content=request.SerializeToString(), headers=PROTOBUF)
    assert reply.status_code == 200
    answer = ExportTraceServiceResponse.FromString(reply.content)
    assert answer.partial_success.rejected_spans == 1
    assert answer.partial_success.error_message == (
        "span 0102030405060708 of trace 0102030405060708090a0b0c0d0e0f10: "
        "gen_ai.provider.name: must be a string, not an array"
    )
    assert [(r.provider, r.model) for r in sink.records] == [("openai", "gpt-4o")]


# --- a resource's attributes are not copied per span --------------------------------------


class _OnlyLookedUp(dict[str, Any]):
    """A resource's attributes that may be looked up, key by key, but never copied whole."""

    def keys(self) -> Any:
        raise AssertionError("the resource's attributes were copied")

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("the resource's attributes were copied")

    def items(self) -> Any:
        raise AssertionError("the resource's attributes were copied")


def test_a_spans_resource_is_looked_up_never_copied() -> None:
    """Found in review: every GenAI span copied its resource's attributes to merge them with
    its own, so an export of one resource with 1M attributes and 4,000 spans (2.4 MB gzipped)
    held a worker thread 58 s. The span's own value still wins over the resource's."""
    item = _span_item(tracker__use_case=AnyValue(string_value="span-level"))
    resource = _OnlyLookedUp({f"r{i}": i for i in range(1_000)})
    dict.update(resource, {"tracker.use_case": "resource-level", "gov.agency.id": "in-mohfw"})
    item = otlp.SpanItem(item.span, resource, item.unreadable)
    mapped = run(
        otlp.map_span, item, Context(default_agency=None, agencies=frozenset({"in-mohfw"}))
    )
    assert isinstance(mapped, dict), mapped
    assert (mapped["use_case"], mapped["agency_id"]) == ("span-level", "in-mohfw")


def test_a_large_json_export_of_too_many_resource_spans_is_refused_before_it_is_parsed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found in review: `resourceSpans` of 5.6M `{}` (16 MiB, 16 KiB gzipped) were parsed and
    built (+375 MB) before their count refused them. A JSON export past 1 MiB is counted
    first."""
    from tracker import json_read

    calls: list[int] = []
    real = json_read.loads_keeping_surrogates

    def counted(body: bytes) -> Any:
        calls.append(len(body))
        return real(body)

    monkeypatch.setattr(json_read, "loads_keeping_surrogates", counted)
    body = json.dumps({"resourceSpans": [{"pad": "x" * 1_100} for _ in range(1_001)]}).encode()
    client, sink = _client(max_spans=1_000)
    reply = client.post("/v1/traces", content=gzip.compress(body),
                        headers={**JSON, "Content-Encoding": "gzip"})  # fmt: skip
    assert reply.status_code == 413, reply.text
    assert reply.json()["message"] == (
        "export of more than 1000 resourceSpans entries is over the limit of 1000"
    )
    assert calls == [] and sink.records == []


def test_a_large_json_export_too_intricate_to_count_is_refused_before_it_is_parsed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tracker import json_read

    monkeypatch.setattr(json_read, "MOST_STEPS", 1_000)
    calls: list[int] = []
    monkeypatch.setattr(json_read, "loads_keeping_surrogates", lambda body: calls.append(1))
    nested: list[Any] = [[[[[]]]]] * 200_000
    body = json.dumps({"resourceSpans": [{"resource": {"x": nested}}]}).encode()
    client, sink = _client(max_spans=1_000)
    reply = client.post("/v1/traces", content=body, headers=JSON)
    assert reply.status_code == 413, reply.text
    assert "too intricate to count" in reply.json()["message"]
    assert calls == [] and sink.records == []
