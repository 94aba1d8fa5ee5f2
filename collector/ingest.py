"""`POST /v1/records`: the native ingest endpoint (JSON array of contract records).

Batches are accepted partially: every valid record the gateway may report goes through, every
other one is listed with its index, field and reason. gateway_id always comes from the
credential, never from the payload.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from collector.auth import GatewayDep
from collector.bodies import over_limit, read_decoded
from collector.sink import DeliveryFailed, Sink
from tracker import json_read
from tracker.contract import (
    FieldError,
    UsageRecord,
    parse_record,
    validation_errors,
)
from tracker.contract_fast import validate_submitted_json
from tracker.gateways import Gateway

MAX_REJECTIONS_LISTED = 1_000


class IngestResult(BaseModel):
    accepted: int
    rejected: int
    errors: list[FieldError]
    errors_truncated: bool = False


def validate_batch(
    items: list[Any], gateway: Gateway
) -> tuple[list[UsageRecord], list[FieldError], int]:
    """Returns (valid records, errors, number refused because of the agency)."""
    good: list[UsageRecord] = []
    errors: list[FieldError] = []
    forbidden = 0
    for index, item in enumerate(items):
        if isinstance(item, json_read.Unencodable):  # a lone surrogate escape: json_read
            errors.append(FieldError(index=index, field=item.field, reason=item.reason))
            continue
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
            errors.append(_forbidden(index, gateway, record.agency_id))
            continue
        good.append(record)
    return good, errors, forbidden


def _forbidden(index: int, gateway: Gateway, agency: str) -> FieldError:
    return FieldError(
        index=index,
        field="agency_id",
        reason=f"gateway {gateway.gateway_id!r} may not report for agency {agency!r}",
    )


def validate_body(
    body: bytes, gateway: Gateway, max_records: int
) -> tuple[list[UsageRecord], list[FieldError], int, int]:
    """A `/v1/records` body -> (valid records, errors, refused for the agency, records).

    A batch whose every record is valid (what gateways send) is validated from its bytes in
    one call (validate_submitted_json: the compiled fast path, else pydantic's). Anything else
    is parsed and checked record by record, which names each refusal and accepts exactly the
    same records."""
    if (too_many := over_limit(body, max_records, "records")) is not None:
        raise too_many
    try:
        records = validate_submitted_json(body, gateway.gateway_id, max_records)
    except ValueError:  # ValidationError included: not JSON, not an array, a bad record
        pass
    else:  # at most max_records: a longer batch fails the validation above
        good: list[UsageRecord] = []
        errors: list[FieldError] = []
        for index, record in enumerate(records):
            if record.agency_id in gateway.agencies:
                good.append(record)
            else:
                errors.append(_forbidden(index, gateway, record.agency_id))
        return good, errors, len(errors), len(records)
    items = json_array(body, "body must be a JSON array of records")
    if len(items) > max_records:
        raise _too_many(len(items), max_records)
    good, errors, forbidden = validate_batch(items, gateway)
    return good, errors, forbidden, len(items)


def parse_json(body: bytes, what: str = "body", *, items: bool = False) -> Any:
    """`body` parsed, or 422 naming `what` and where the JSON broke. `items`: an array's items
    holding a lone surrogate escape are json_read.Unencodable, refused each on its own."""
    try:
        return json_read.loads(body, items=items)
    except json_read.JSONError as exc:
        raise HTTPException(422, f"{what} is not valid JSON: {exc}") from exc


def json_array(body: bytes, refusal: str, max_items: int | None = None) -> list[Any]:
    """`body` parsed as a JSON array, or 422 (`refusal` when it is JSON but no array); 413
    before it is parsed when it is a large array of more than `max_items` (`over_limit`)."""
    if max_items is not None and (too_many := over_limit(body, max_items, "items")) is not None:
        raise too_many
    items = parse_json(body, items=True)
    if not isinstance(items, list):
        raise HTTPException(422, refusal)
    return items


def _too_many(count: int, limit: int) -> HTTPException:
    return HTTPException(413, f"batch of {count} records is over the limit of {limit}")


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
        body = await read_decoded(request, max_body_bytes)
        good, errors, forbidden, considered = await run_in_threadpool(
            validate_body, body, gateway, max_batch_records
        )
        result, code = await deliver_and_report(sink, good, errors, forbidden, considered)
        return JSONResponse(result.model_dump(mode="json"), status_code=code)

    return router
