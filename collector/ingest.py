"""`POST /v1/records`: the native ingest endpoint (JSON array of contract records).

Batches are accepted partially: every valid record the gateway may report goes through, every
other one is listed with its index, field and reason. gateway_id always comes from the
credential, never from the payload.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from collector.auth import GatewayDep
from collector.sink import DeliveryFailed, Sink
from tracker.contract import FieldError, UsageRecord, parse_record, validation_errors
from tracker.gateways import Gateway

MAX_REJECTIONS_LISTED = 1_000


class IngestResult(BaseModel):
    accepted: int
    rejected: int
    errors: list[FieldError]
    errors_truncated: bool = False


async def read_body(request: Request, limit: int) -> bytes:
    """Read the body, refusing (413) as soon as it passes the limit: a declared or streamed
    body over the limit is never held in memory whole."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"body over {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"body over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def validate_batch(
    items: list[Any], gateway: Gateway
) -> tuple[list[UsageRecord], list[FieldError], int]:
    """Returns (valid records, errors, number refused because of the agency)."""
    good: list[UsageRecord] = []
    errors: list[FieldError] = []
    forbidden = 0
    for index, item in enumerate(items):
        try:
            record = parse_record(item, gateway_id=gateway.gateway_id)
        except TypeError as exc:
            errors.append(FieldError(index=index, field="record", reason=str(exc)))
            continue
        except ValidationError as exc:
            errors.extend(validation_errors(index, exc))
            continue
        if record.agency_id not in gateway.agencies:
            forbidden += 1
            errors.append(
                FieldError(
                    index=index,
                    field="agency_id",
                    reason=f"gateway {gateway.gateway_id!r} may not report for "
                    f"agency {record.agency_id!r}",
                )
            )
            continue
        good.append(record)
    return good, errors, forbidden


async def deliver_and_report(
    sink: Sink, good: list[UsageRecord], errors: list[FieldError], forbidden: int, considered: int
) -> tuple[IngestResult, int]:
    """Deliver the valid records (503, nothing stored, if the sink does not confirm) and build
    the answer: 200 when anything was accepted or nothing was a usage item, 403 when every
    refusal was about the agency, 422 otherwise."""
    if good:
        try:
            await run_in_threadpool(sink.deliver, good)
        except DeliveryFailed as exc:
            raise HTTPException(
                503, f"not stored, retry later: {exc}", headers={"Retry-After": "5"}
            ) from exc
    rejected = len({e.index for e in errors})
    result = IngestResult(
        accepted=len(good),
        rejected=rejected,
        errors=errors[:MAX_REJECTIONS_LISTED],
        errors_truncated=len(errors) > MAX_REJECTIONS_LISTED,
    )
    code = 200
    if not good and considered:
        code = 403 if forbidden == rejected else 422
    return result, code


def ingest_router(sink: Sink, *, max_body_bytes: int, max_batch_records: int) -> APIRouter:
    router = APIRouter(tags=["ingest"])

    @router.post(
        "/v1/records",
        response_model=IngestResult,
        responses={
            401: {"description": "missing or unknown gateway key"},
            403: {"description": "every record names an agency this gateway may not report for"},
            413: {"description": "body or batch over its limit"},
            422: {"description": "no record was valid; each error has index, field, reason"},
            503: {"description": "downstream unavailable, nothing stored; retry later"},
        },
    )
    async def post_records(
        request: Request, gateway: Annotated[Gateway, Depends(GatewayDep)]
    ) -> JSONResponse:
        body = await read_body(request, max_body_bytes)
        try:
            items = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise HTTPException(422, f"body is not valid JSON: {exc}") from exc
        if not isinstance(items, list):
            raise HTTPException(422, "body must be a JSON array of records")
        if len(items) > max_batch_records:
            raise HTTPException(
                413, f"batch of {len(items)} records is over the limit of {max_batch_records}"
            )
        good, errors, forbidden = await run_in_threadpool(validate_batch, items, gateway)
        result, code = await deliver_and_report(sink, good, errors, forbidden, len(items))
        return JSONResponse(result.model_dump(mode="json"), status_code=code)

    return router
