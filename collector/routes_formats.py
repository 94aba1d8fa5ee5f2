"""JSON push endpoints for gateway formats, each answering like `/v1/records`: how many records
were accepted, and every refused item by its index in the body, field and reason.

  POST /v1/litellm      LiteLLM StandardLoggingPayloads (its generic API logger: JSON array,
                        NDJSON or single object) or LiteLLM_SpendLogs rows
  POST /v1/opengatellm  OpenGateLLM usage-table rows, or its /v1/me/usage answer
  POST /v1/events       CloudEvents 1.0: structured (application/cloudevents+json), batched
                        (application/cloudevents-batch+json) or binary (ce-* headers)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Final
from urllib.parse import unquote_to_bytes

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from collector.adapters import cloudevents, litellm, opengatellm
from collector.adapters.common import Context, Mapped, Rejected, run
from collector.auth import GatewayDep
from collector.bodies import json_items
from collector.bodies import read_decoded as read
from collector.ingest import IngestResult, json_array, parse_json
from collector.routes_common import Limits, accept, check_batch, media_type
from collector.sink import Sink
from tracker import json_read
from tracker.gateways import Gateway

Mapper = Callable[[Any, Context], dict[str, Any] | None]

# RFC 7230 §3.2.6: a quoted-string, and a quoted-pair inside it (backslash and the character
# it stands for).
_QUOTED_STRING: Final = re.compile(r'"((?:[^"\\]|\\.)*)"', re.DOTALL)
_QUOTED_PAIR: Final = re.compile(r"\\(.)", re.DOTALL)

RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or unknown gateway key"},
    403: {"description": "every record names an agency this gateway may not report for"},
    413: {"description": "body or batch over its limit"},
    415: {"description": "unsupported Content-Type or Content-Encoding"},
    422: {"description": "no item was valid; each error has index, field, reason"},
    503: {"description": "downstream unavailable, nothing stored; retry later"},
}


def _map_all(items: list[Any], mapper: Mapper, ctx: Context) -> list[Mapped]:
    # A Rejected item is a JSON line that did not parse: refused at its place, never mapped;
    # so is an array item with a lone surrogate escape in it (json_read.Unencodable, from
    # json_items or json_array).
    return [
        item if isinstance(item, Rejected)
        else Rejected(item.field, item.reason) if isinstance(item, json_read.Unencodable)
        else run(mapper, item, ctx)
        for item in items
    ]  # fmt: skip


async def _ingest(
    items: list[Any], mapper: Mapper, gateway: Gateway, sink: Sink, limits: Limits
) -> JSONResponse:
    check_batch(len(items), limits)
    mapped = await run_in_threadpool(_map_all, items, mapper, Context.for_gateway(gateway))
    result, code = await accept(mapped, gateway, sink)
    return JSONResponse(result.model_dump(mode="json"), status_code=code)


def _header_attribute(name: str, value: str) -> str:
    """An attribute's value from its ce-* header, as the CloudEvents HTTP binding 1.0.2 §3.1.3.2
    has a receiver read it: quoted-strings unescaped (older senders quoted values with spaces
    or quotes), then one round of percent-decoding, and the bytes so decoded read as UTF-8.

    Taken as sent, a percent-encoded id, source or agency (which a conforming sender must
    write for a space, '"', '%' or any non-ASCII character) made the same event sent
    structured and then binary two records, counted twice, and refused an agency sent
    encoded (found in review)."""
    parts = _QUOTED_STRING.split(value)  # text outside quotes at even places, inside at odd
    if any('"' in outside for outside in parts[::2]):
        raise HTTPException(422, f"header {name}: a quoted-string is not closed")
    parts[1::2] = [_QUOTED_PAIR.sub(r"\1", inside) for inside in parts[1::2]]
    # Latin-1 gives back the header's bytes (Starlette decodes them so); a sender's raw UTF-8
    # is then read as UTF-8, as percent-encoded UTF-8 is.
    raw = unquote_to_bytes("".join(parts).encode("latin-1"))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HTTPException(
            422, f"header {name}: not UTF-8 once percent-decoded (byte {exc.start})"
        ) from exc


def _binary_event(headers: Mapping[str, str], content_type: str, body: bytes) -> dict[str, Any]:
    """Binary content mode: attributes in ce-* headers (decoded: _header_attribute), the body
    is `data`."""
    event: dict[str, Any] = {
        name.removeprefix("ce-"): _header_attribute(name, value)
        for name, value in headers.items()
        if name.startswith("ce-")
    }
    if content_type:
        event["datacontenttype"] = content_type
    if content_type == "application/json" or content_type.endswith("+json"):
        event["data"] = parse_json(body, "event data")
    else:
        raise HTTPException(415, "binary-mode usage events must carry JSON data")
    return event


def _events(
    headers: Mapping[str, str], content_type: str, body: bytes, max_items: int
) -> list[Any]:
    """The events of a /v1/events body, in any content mode. Parses up to the body limit of
    JSON: run in a worker thread, as json_items is."""
    if "ce-specversion" in headers:
        return [_binary_event(headers, content_type, body)]
    if content_type == "application/cloudevents+json":
        return [parse_json(body)]
    if content_type == "application/cloudevents-batch+json":
        return json_array(body, "a CloudEvents batch must be a JSON array of events", max_items)
    raise HTTPException(
        415,
        "use application/cloudevents+json (one event), "
        "application/cloudevents-batch+json (a batch) or binary mode (ce-* headers)",
    )


def _opengatellm_rows(body: bytes, max_items: int) -> list[Any]:
    # One reader for every shape (json_items: a number orjson cannot hold is read, so only
    # its row is refused); unwrap then opens /v1/me/usage answers wherever they stand.
    # Parsing with orjson first and falling back to json_items handed unwrap a one-answer
    # list on such a number, and the answer, taken for a row without a model, was ignored
    # whole with a 200 (found in review).
    # in_object: a large answer wrapped in an object (`{"object": "list", "data": [...]}`) is
    # counted before it is parsed, as a large array is (found in review: not counted).
    return opengatellm.unwrap(json_items(body, max_items, in_object=True))


def formats_router(sink: Sink, limits: Limits) -> APIRouter:
    router = APIRouter(tags=["sources"])

    # POST, not GET: in the embedded app every GET with a bearer token is a read-API call and
    # its key an API key; gateway keys are only ever checked on ingest's POSTs.
    @router.post("/v1/gateway/whoami", responses={401: RESPONSES[401]})
    async def whoami(gateway: Annotated[Gateway, Depends(GatewayDep)]) -> dict[str, Any]:
        """The authenticated gateway and the agencies it may report for (used by importers
        to check their key and to fall back on a single agency, as push endpoints do)."""
        return {"gateway_id": gateway.gateway_id, "agencies": sorted(gateway.agencies)}

    @router.post("/v1/litellm", response_model=IngestResult, responses=RESPONSES)
    async def post_litellm(
        request: Request, gateway: Annotated[Gateway, Depends(GatewayDep)]
    ) -> JSONResponse:
        body = await read(request, limits.max_body_bytes)
        # In a worker thread: on the event loop, reading a 2 KiB gzip body of a million
        # garbage lines held every other request, /healthz included, for 10 s (found in
        # review). json_items now also stops at the line past the batch limit.
        items = await run_in_threadpool(json_items, body, limits.max_batch_records)
        return await _ingest(items, litellm.map_any, gateway, sink, limits)

    @router.post("/v1/opengatellm", response_model=IngestResult, responses=RESPONSES)
    async def post_opengatellm(
        request: Request, gateway: Annotated[Gateway, Depends(GatewayDep)]
    ) -> JSONResponse:
        body = await read(request, limits.max_body_bytes)
        items = await run_in_threadpool(_opengatellm_rows, body, limits.max_batch_records)
        return await _ingest(items, opengatellm.map_row, gateway, sink, limits)

    @router.post("/v1/events", response_model=IngestResult, responses=RESPONSES)
    async def post_events(
        request: Request, gateway: Annotated[Gateway, Depends(GatewayDep)]
    ) -> JSONResponse:
        body = await read(request, limits.max_body_bytes)
        if "ce-specversion" in request.headers and gateway.signing_secret is not None:
            # The signature covers the body, not the headers, and in binary mode the ce-*
            # headers are the record's id, agency and time (found in review: rewritten on
            # the way, a signed body landed as records the gateway never sent).
            raise HTTPException(
                400,
                "binary-mode CloudEvents carry the event's attributes in ce-* headers, "
                "which the request signature does not cover: a signed gateway sends "
                "structured mode (application/cloudevents+json or "
                "application/cloudevents-batch+json)",
            )
        items = await run_in_threadpool(
            _events, request.headers, media_type(request), body, limits.max_batch_records
        )
        return await _ingest(items, cloudevents.map_event, gateway, sink, limits)

    return router
