"""JSON push endpoints for gateway formats, each answering like `/v1/records`: how many records
were accepted, and every refused item by its index in the body, field and reason.

  POST /v1/litellm      LiteLLM StandardLoggingPayloads (its generic API logger: JSON array,
                        NDJSON or single object) or LiteLLM_SpendLogs rows
  POST /v1/opengatellm  OpenGateLLM usage-table rows, or its /v1/me/usage answer
  POST /v1/events       CloudEvents 1.0: structured (application/cloudevents+json), batched
                        (application/cloudevents-batch+json) or binary (ce-* headers)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

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


def _binary_event(request: Request, body: bytes) -> dict[str, Any]:
    """Binary content mode: attributes in ce-* headers, the body is `data`."""
    event: dict[str, Any] = {
        name.removeprefix("ce-"): value
        for name, value in request.headers.items()
        if name.startswith("ce-")
    }
    content_type = media_type(request)
    if content_type:
        event["datacontenttype"] = content_type
    if content_type == "application/json" or content_type.endswith("+json"):
        event["data"] = parse_json(body, "event data")
    else:
        raise HTTPException(415, "binary-mode usage events must carry JSON data")
    return event


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
        items = json_items(await read(request, limits.max_body_bytes))
        return await _ingest(items, litellm.map_any, gateway, sink, limits)

    @router.post("/v1/opengatellm", response_model=IngestResult, responses=RESPONSES)
    async def post_opengatellm(
        request: Request, gateway: Annotated[Gateway, Depends(GatewayDep)]
    ) -> JSONResponse:
        # One reader for every shape (json_items: a number orjson cannot hold is read, so only
        # its row is refused); unwrap then opens /v1/me/usage answers wherever they stand.
        # Parsing with orjson first and falling back to json_items handed unwrap a one-answer
        # list on such a number, and the answer, taken for a row without a model, was ignored
        # whole with a 200 (found in review).
        items = opengatellm.unwrap(json_items(await read(request, limits.max_body_bytes)))
        return await _ingest(items, opengatellm.map_row, gateway, sink, limits)

    @router.post("/v1/events", response_model=IngestResult, responses=RESPONSES)
    async def post_events(
        request: Request, gateway: Annotated[Gateway, Depends(GatewayDep)]
    ) -> JSONResponse:
        body = await read(request, limits.max_body_bytes)
        content_type = media_type(request)
        if "ce-specversion" in request.headers:
            if gateway.signing_secret is not None:
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
            items: list[Any] = [_binary_event(request, body)]
        elif content_type == "application/cloudevents+json":
            items = [parse_json(body)]
        elif content_type == "application/cloudevents-batch+json":
            items = json_array(body, "a CloudEvents batch must be a JSON array of events")
        else:
            raise HTTPException(
                415,
                "use application/cloudevents+json (one event), "
                "application/cloudevents-batch+json (a batch) or binary mode (ce-* headers)",
            )
        return await _ingest(items, cloudevents.map_event, gateway, sink, limits)

    return router
