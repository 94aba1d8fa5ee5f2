"""`POST /v1/traces`: OTLP/HTTP trace export (protobuf or JSON, gzip accepted).

Answers in the request's encoding: ExportTraceServiceResponse with partial_success listing
how many GenAI spans were refused and why; errors as google.rpc.Status, as OTLP/HTTP asks.
Non-GenAI spans are accepted and ignored. 503 (with Retry-After) makes exporters retry.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool

# googleapis-common-protos ships no type stubs; Status is a plain generated message.
from google.rpc import status_pb2  # type: ignore[import-untyped]

from collector.adapters import otlp
from collector.adapters.common import Context, Mapped, run
from collector.auth import GatewayDep
from collector.bodies import read_decoded
from collector.routes_common import Limits, accept, media_type
from collector.sink import Sink
from tracker.gateways import Gateway

ENCODINGS = ("application/x-protobuf", "application/json")
MAX_MESSAGE_ERRORS = 20


def _status(code: int, message: str, content_type: str) -> Response:
    body = otlp.encode(status_pb2.Status(code=code, message=message), content_type)
    return Response(body, status_code=code, media_type=content_type)


def _decode_and_map(
    body: bytes, content_type: str, max_spans: int, ctx: Context
) -> tuple[list[otlp.SpanItem], list[Mapped]]:
    """The export's spans and what each maps to. Run in a worker thread: decoding and mapping
    up to the body limit is seconds of CPU, and on the event loop it held up every other
    request, /healthz included (found in review: 11.6 s for a 4 KiB gzip body). decode()
    refuses an export over the span limit before building its spans (TooManySpans)."""
    export = otlp.decode(body, content_type, max_spans)
    items = list(otlp.spans(export))
    # run(): a value the adapter did not foresee refuses its span, never the export with a
    # 500 (exporters do not retry it, and the good spans beside it were lost).
    return items, [run(otlp.map_span, item, ctx) for item in items]


def otlp_router(sink: Sink, limits: Limits) -> APIRouter:
    router = APIRouter(tags=["sources"])

    @router.post(
        "/v1/traces",
        responses={
            200: {"description": "ExportTraceServiceResponse (partial_success when refusals)"},
            400: {"description": "body is not an ExportTraceServiceRequest"},
            401: {"description": "missing or unknown gateway key"},
            413: {"description": "body or number of spans over its limit"},
            415: {"description": "not application/x-protobuf or application/json"},
            503: {"description": "downstream unavailable, nothing stored; retry later"},
        },
    )
    async def post_traces(
        request: Request, gateway: Annotated[Gateway, Depends(GatewayDep)]
    ) -> Response:
        content_type = media_type(request)
        if content_type not in ENCODINGS:
            return _status(415, f"unsupported Content-Type {content_type!r}", "application/json")
        try:
            body = await read_decoded(request, limits.max_body_bytes)
            try:
                items, mapped = await run_in_threadpool(
                    _decode_and_map, body, content_type, limits.max_batch_records,
                    Context.for_gateway(gateway),
                )  # fmt: skip
            except otlp.TooManySpans as exc:
                return _status(413, str(exc), content_type)
            except otlp.OtlpDecodeError as exc:
                return _status(400, str(exc), content_type)
            result, _ = await accept(mapped, gateway, sink)
        except HTTPException as exc:
            headers = exc.headers or {}
            reply = _status(exc.status_code, str(exc.detail), content_type)
            reply.headers.update(headers)
            return reply
        message = "; ".join(
            f"{otlp.describe(items[e.index])}: {e.field}: {e.reason}"
            for e in result.errors[:MAX_MESSAGE_ERRORS]
        )
        if len(result.errors) > MAX_MESSAGE_ERRORS:
            message += f"; and {len(result.errors) - MAX_MESSAGE_ERRORS} more"
        answer = otlp.encode(otlp.response(result.rejected, message), content_type)
        return Response(answer, status_code=200, media_type=content_type)

    return router
