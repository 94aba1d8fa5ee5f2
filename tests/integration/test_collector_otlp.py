"""OTLP/HTTP traces from the real OpenTelemetry SDK and its OTLP HTTP exporter, sent to the
embedded app served by uvicorn on 127.0.0.1, landing in chdb."""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

import httpx
import orjson
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from collector.adapters import otlp
from collector.adapters.common import Context
from collector.app import create_app
from tests.integration.test_collector_support import (
    SINGLE_AGENCY,
    Keys,
    ServerThread,
    make_app,
    raw_count,
)
from tests.sinks import ListSink
from tracker.cli.wiring import Core
from tracker.clickhouse import ClientPool
from tracker.gateways import GatewayAuth
from tracker.settings import CommonSettings

pytestmark = pytest.mark.integration


def _spans(resource: dict[str, str], count: int = 2, model: str | None = "gpt-4o",
           region: str | None = None) -> list[ReadableSpan]:  # fmt: skip
    """Spans as an instrumented application records them: GenAI client spans plus an
    unrelated HTTP server span."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create(resource))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("test.genai")
    with tracer.start_as_current_span("POST /ask", attributes={"http.request.method": "POST"}):
        for i in range(count):
            attributes: dict[str, str | int] = {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "azure.ai.openai",
                "gen_ai.usage.input_tokens": 100 + i,
                "gen_ai.usage.output_tokens": 20,
                "server.address": "moh-prod.openai.azure.com",
                "server.port": 443,
            }
            if region is not None:  # the region of the called service, on the span
                attributes["cloud.region"] = region
            if model is not None:
                attributes["gen_ai.request.model"] = model
                attributes["gen_ai.response.model"] = f"{model}-2024-08-06"
            with tracer.start_as_current_span(f"chat {model}", attributes=attributes):
                time.sleep(0.001)
    provider.shutdown()
    return list(memory.get_finished_spans())


def test_sdk_exporter_lands_genai_spans_once(url: str, keys: Keys, pool: ClientPool) -> None:
    # The resource's cloud.region is where the app runs (westeurope here), not where the model
    # served the call: only the span's own cloud.region is recorded.
    spans = _spans({"service.name": "moh-chat", "cloud.region": "westeurope"},
                   region="centralindia")  # fmt: skip
    exporter = OTLPSpanExporter(
        endpoint=f"{url}/v1/traces",
        headers={"Authorization": f"Bearer {keys.single}"},
        compression=Compression.Gzip,
        timeout=10,
    )
    assert exporter.export(spans) == SpanExportResult.SUCCESS
    assert raw_count(pool, keys.single_id) == 2
    row = (
        pool.get()
        .query(
            "SELECT agency_id, provider, model, endpoint_host, region, input_tokens, tier "
            "FROM usage_raw WHERE gateway_id = {g:String} ORDER BY input_tokens LIMIT 1",
            parameters={"g": keys.single_id},
        )
        .result_rows[0]
    )
    assert row == (SINGLE_AGENCY, "azure_openai", "gpt-4o-2024-08-06",
                   "moh-prod.openai.azure.com", "centralindia", 100, "onshore")  # fmt: skip
    # The exporter retrying the same spans must not create new inferences.
    assert exporter.export(spans) == SpanExportResult.SUCCESS
    assert raw_count(pool, keys.single_id) == 2
    exporter.shutdown()  # type: ignore[no-untyped-call]  # the SDK leaves it unannotated


def test_the_resource_region_is_not_where_the_call_was_served(
    url: str, keys: Keys, pool: ClientPool
) -> None:
    # Found in review: an app whose resource says cloud.region=centralindia (where it runs, as
    # a resource detector sets it) had its calls recorded as served in centralindia.
    spans = _spans({"service.name": "moh-chat", "cloud.region": "centralindia"}, count=1,
                   model="gpt-4o-mini")  # fmt: skip
    exporter = OTLPSpanExporter(endpoint=f"{url}/v1/traces", timeout=10,
                                headers={"Authorization": f"Bearer {keys.single}"})  # fmt: skip
    assert exporter.export(spans) == SpanExportResult.SUCCESS
    exporter.shutdown()  # type: ignore[no-untyped-call]  # the SDK leaves it unannotated
    regions = pool.get().query(
        "SELECT region FROM usage_raw WHERE gateway_id = {g:String} AND model = {m:String}",
        parameters={"g": keys.single_id, "m": "gpt-4o-mini-2024-08-06"}).result_rows  # fmt: skip
    assert regions == [("",)]


def test_agency_from_resource_attribute_and_missing_agency(
    url: str, keys: Keys, pool: ClientPool
) -> None:
    named = _spans({"service.name": "cbse", "gov.agency.id": "in-cbse"}, count=1)
    anonymous = _spans({"service.name": "nobody"}, count=1)
    body = encode_spans(named + anonymous).SerializeToString()
    reply = httpx.post(f"{url}/v1/traces", content=body, headers={
        "Authorization": f"Bearer {keys.multi}", "Content-Type": "application/x-protobuf"})  # fmt: skip
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/x-protobuf"
    answer = ExportTraceServiceResponse.FromString(reply.content)
    assert answer.partial_success.rejected_spans == 1
    assert "agency_id" in answer.partial_success.error_message
    assert raw_count(pool, keys.multi_id, "agency_id = 'in-cbse'") == 1


def test_partial_success_in_json_with_gzip(url: str, keys: Keys, pool: ClientPool) -> None:
    start = time.time_ns() - 5_000_000_000

    def span(span_id: str, attributes: Mapping[str, object]) -> dict[str, object]:
        return {
            "traceId": "5b8efff798038103d269b633813fc60c",
            "spanId": span_id,
            "name": "chat",
            "kind": 3,
            "startTimeUnixNano": str(start),
            "endTimeUnixNano": str(start + 250_000_000),
            "attributes": [{"key": k, "value": v} for k, v in attributes.items()],
            "status": {},
        }

    good = {"gen_ai.operation.name": {"stringValue": "chat"},
            "gen_ai.system": {"stringValue": "sarvam"},
            "gen_ai.request.model": {"stringValue": "sarvam-m"},
            "gen_ai.response.id": {"stringValue": "resp-json-0001"},
            "gen_ai.usage.input_tokens": {"intValue": "12"}}  # fmt: skip
    negative = {**good, "gen_ai.response.id": {"stringValue": "resp-json-0002"},
                "gen_ai.usage.output_tokens": {"intValue": "-3"}}  # fmt: skip
    unrelated = {"http.route": {"stringValue": "/health"}}
    request = {"resourceSpans": [{
        "resource": {"attributes": [{"key": "tracker.agency_id",
                                     "value": {"stringValue": SINGLE_AGENCY}}]},
        "scopeSpans": [{"scope": {"name": "t"}, "spans": [
            span("eee19b7ec3c1b174", good), span("eee19b7ec3c1b175", negative),
            span("eee19b7ec3c1b176", unrelated)]}]}]}  # fmt: skip
    before = raw_count(pool, keys.single_id)
    reply = httpx.post(f"{url}/v1/traces", content=gzip.compress(orjson.dumps(request)), headers={
        "Authorization": f"Bearer {keys.single}", "Content-Type": "application/json",
        "Content-Encoding": "gzip"})  # fmt: skip
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "application/json"
    partial = reply.json()["partialSuccess"]
    assert int(partial["rejectedSpans"]) == 1
    assert "eee19b7ec3c1b175" in partial["errorMessage"]
    assert "output_tokens" in partial["errorMessage"]
    assert raw_count(pool, keys.single_id) == before + 1
    got = pool.get().query(
        "SELECT record_id, latency_ms, tier FROM usage_raw WHERE gateway_id = {g:String} "
        "AND provider = 'sarvam'", parameters={"g": keys.single_id}).result_rows  # fmt: skip
    # The span's trace and span ids, not its gen_ai.response.id (servers may repeat those).
    assert got == [("otel:5b8efff798038103d269b633813fc60ceee19b7ec3c1b174", 250, "sovereign")]


def test_refusals_in_otlp_shape(url: str, keys: Keys) -> None:
    auth = {"Authorization": f"Bearer {keys.single}"}
    bad = httpx.post(f"{url}/v1/traces", content=b"\x0a\xff\xff",
                     headers={**auth, "Content-Type": "application/x-protobuf"})  # fmt: skip
    assert bad.status_code == 400
    wrong_type = httpx.post(f"{url}/v1/traces", content=b"x",
                            headers={**auth, "Content-Type": "text/plain"})  # fmt: skip
    assert wrong_type.status_code == 415
    no_key = httpx.post(f"{url}/v1/traces", content=b"{}",
                        headers={"Content-Type": "application/json"})  # fmt: skip
    assert no_key.status_code == 401
    empty = httpx.post(f"{url}/v1/traces", content=b"{}",
                       headers={**auth, "Content-Type": "application/json"})  # fmt: skip
    assert empty.status_code == 200 and empty.json() == {}


def test_gzip_bomb_and_span_count_bounded(settings: CommonSettings, core: Core, keys: Keys) -> None:
    small = make_app(settings, core, max_body_bytes=4096, max_batch_records=1)
    with ServerThread(small) as base:
        auth = {"Authorization": f"Bearer {keys.single}", "Content-Type": "application/json"}
        bomb = gzip.compress(b"{" + b" " * 1_000_000 + b"}")
        reply = httpx.post(f"{base}/v1/traces", content=bomb,
                           headers={**auth, "Content-Encoding": "gzip"})  # fmt: skip
        assert reply.status_code == 413
        two = encode_spans(_spans({"tracker.agency_id": SINGLE_AGENCY}, count=1))
        reply = httpx.post(f"{base}/v1/traces", content=two.SerializeToString(), headers={
            **auth, "Content-Type": "application/x-protobuf"})  # fmt: skip
        assert reply.status_code == 413  # two spans (GenAI + HTTP) over a batch of one


def test_a_json_number_no_double_holds_refuses_its_span_only(
    url: str, keys: Keys, pool: ClientPool
) -> None:
    # Found in review: one 1e400 answered 400 for the whole export (docs/collectors.md says such
    # a number refuses its record only), and an exporter drops an export refused with 400.
    start = time.time_ns() - 5_000_000_000

    def span(span_id: str, tokens: str) -> str:
        return (
            f'{{"traceId": "6c8efff798038103d269b633813fc60c", "spanId": "{span_id}", '
            f'"name": "chat", "startTimeUnixNano": "{start}", '
            f'"endTimeUnixNano": "{start + 10**8}", "attributes": ['
            '{"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}}, '
            '{"key": "gen_ai.system", "value": {"stringValue": "sarvam"}}, '
            '{"key": "gen_ai.request.model", "value": {"stringValue": "sarvam-big"}}, '
            f'{{"key": "gen_ai.usage.input_tokens", "value": {tokens}}}]}}'
        )

    body = (
        '{"resourceSpans": [{"scopeSpans": [{"spans": ['
        + span("aaa19b7ec3c1b174", '{"intValue": "12"}')
        + ", "
        + span("aaa19b7ec3c1b175", '{"doubleValue": 1e400}')
        + "]}]}]}"
    )
    reply = httpx.post(f"{url}/v1/traces", content=body.encode(), headers={
        "Authorization": f"Bearer {keys.single}", "Content-Type": "application/json"})  # fmt: skip
    assert reply.status_code == 200, reply.text
    partial = reply.json()["partialSuccess"]
    assert int(partial["rejectedSpans"]) == 1, partial
    assert "aaa19b7ec3c1b175" in partial["errorMessage"]
    assert "gen_ai.usage.input_tokens" in partial["errorMessage"]
    assert raw_count(pool, keys.single_id, "model = 'sarvam-big'") == 1


def _chat_span(span_id: str, model: str, **operation: object) -> dict[str, object]:
    """An OTLP/JSON GenAI span (hex ids) whose gen_ai.operation.name value is `operation`."""
    start = time.time_ns() - 5_000_000_000
    value = operation or {"stringValue": "chat"}
    return {"traceId": "7d8efff798038103d269b633813fc60c", "spanId": span_id, "name": "chat",
            "startTimeUnixNano": str(start), "endTimeUnixNano": str(start + 10**8),
            "attributes": [{"key": "gen_ai.operation.name", "value": value},
                           {"key": "gen_ai.system", "value": {"stringValue": "sarvam"}},
                           {"key": "gen_ai.request.model", "value": {"stringValue": model}}]}  # fmt: skip


def _export(*spans: dict[str, object]) -> dict[str, object]:
    return {"resourceSpans": [{"scopeSpans": [{"spans": list(spans)}]}]}


def test_an_operation_name_that_is_no_string_refuses_its_span_only(
    url: str, keys: Keys, pool: ClientPool
) -> None:
    # Found in review: an array gen_ai.operation.name was a 500 for the whole export (JSON and
    # protobuf), and exporters do not retry a 500: the good span beside it was lost.
    array = {"arrayValue": {"values": [{"stringValue": "chat"}]}}
    auth = {"Authorization": f"Bearer {keys.single}"}
    as_json = _export(_chat_span("bbb19b7ec3c1b174", "sarvam-arr"),
                      _chat_span("bbb19b7ec3c1b175", "sarvam-arr", **array))  # fmt: skip
    reply = httpx.post(f"{url}/v1/traces", content=orjson.dumps(as_json),
                       headers={**auth, "Content-Type": "application/json"})  # fmt: skip
    assert reply.status_code == 200, reply.text
    partial = reply.json()["partialSuccess"]
    assert int(partial["rejectedSpans"]) == 1, partial
    assert (
        "bbb19b7ec3c1b175 of trace 7d8efff798038103d269b633813fc60c: gen_ai.operation.name:"
        in partial["errorMessage"]
    )
    decoded = otlp.decode(orjson.dumps(_export(
        _chat_span("bbb19b7ec3c1b176", "sarvam-arr"),
        _chat_span("bbb19b7ec3c1b177", "sarvam-arr", **array))), "application/json")  # fmt: skip
    reply = httpx.post(f"{url}/v1/traces", content=decoded.request.SerializeToString(),
                       headers={**auth, "Content-Type": "application/x-protobuf"})  # fmt: skip
    assert reply.status_code == 200, reply.text
    answer = ExportTraceServiceResponse.FromString(reply.content)
    assert answer.partial_success.rejected_spans == 1, answer
    assert raw_count(pool, keys.single_id, "model = 'sarvam-arr'") == 2


def test_an_unexpected_error_in_one_span_is_no_500(
    url: str, keys: Keys, pool: ClientPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Whatever a span holds that the adapter did not foresee refuses that span, not the export.
    map_span = otlp.map_span

    def failing(item: otlp.SpanItem, ctx: Context) -> dict[str, object] | None:
        if item.span.span_id.hex() == "ccc19b7ec3c1b175":
            raise TypeError("unforeseen")
        return map_span(item, ctx)

    monkeypatch.setattr(otlp, "map_span", failing)
    body = _export(_chat_span("ccc19b7ec3c1b174", "sarvam-odd"),
                   _chat_span("ccc19b7ec3c1b175", "sarvam-odd"))  # fmt: skip
    reply = httpx.post(f"{url}/v1/traces", content=orjson.dumps(body), headers={
        "Authorization": f"Bearer {keys.single}", "Content-Type": "application/json"})  # fmt: skip
    assert reply.status_code == 200, reply.text
    assert "ccc19b7ec3c1b175 of trace 7d8efff798038103d269b633813fc60c: record: unreadable item: unforeseen" in (
        reply.json()["partialSuccess"]["errorMessage"])  # fmt: skip
    assert raw_count(pool, keys.single_id, "model = 'sarvam-odd'") == 1


def test_json_ids_that_are_not_hex_refuse_their_span_only(
    url: str, keys: Keys, pool: ClientPool
) -> None:
    # Found in review: base64 ids in one span made the whole body a 400 (dropped by exporters).
    base64_ids = {**_chat_span("", "sarvam-b64"),
                  "traceId": "W47/95gDgQPSabYzgT/GDA==", "spanId": "7uGbfsPBsXU="}  # fmt: skip
    body = _export(_chat_span("ddd19b7ec3c1b174", "sarvam-b64"), base64_ids)
    reply = httpx.post(f"{url}/v1/traces", content=orjson.dumps(body), headers={
        "Authorization": f"Bearer {keys.single}", "Content-Type": "application/json"})  # fmt: skip
    assert reply.status_code == 200, reply.text
    partial = reply.json()["partialSuccess"]
    assert int(partial["rejectedSpans"]) == 1, partial
    assert "traceId: not hex: 'W47/95gDgQPSabYzgT/GDA=='" in partial["errorMessage"]
    assert raw_count(pool, keys.single_id, "model = 'sarvam-b64'") == 1


def test_healthz_is_served_while_an_export_is_decoded(
    keys: Keys, pool: ClientPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found in review: the export was decoded and mapped on the event loop, so the collector
    # (/healthz included) stalled 11.6 s behind a 4 KiB gzip body. The decode is held here
    # until /healthz has been answered; on the loop it would hold /healthz too, until its wait
    # ran out (released == [False], and /healthz times out).
    decoding, release = threading.Event(), threading.Event()
    released: list[bool] = []
    decode = otlp.decode

    def held(body: bytes, content_type: str, *args: int | None) -> otlp.Export:
        decoding.set()
        released.append(release.wait(10))
        return decode(body, content_type, *args)

    monkeypatch.setattr(otlp, "decode", held)
    sink = ListSink()
    collector = create_app(sink, GatewayAuth(pool.get()), max_body_bytes=16 * 1024 * 1024,
                           max_batch_records=10_000)  # fmt: skip
    body = _export(_chat_span("eee29b7ec3c1b174", "sarvam-held"))
    with ServerThread(collector) as base, ThreadPoolExecutor(1) as runner:
        export = runner.submit(httpx.post, f"{base}/v1/traces", content=orjson.dumps(body),
                               timeout=30, headers={"Authorization": f"Bearer {keys.single}",
                                                    "Content-Type": "application/json"})  # fmt: skip
        try:
            assert decoding.wait(10)
            health = httpx.get(f"{base}/healthz", timeout=5)
        finally:
            release.set()
        assert health.status_code == 200
        assert export.result().status_code == 200, export.result().text
    assert released == [True]
    assert [r.model for r in sink.records] == ["sarvam-held"]
