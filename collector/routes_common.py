"""What every source push endpoint shares: limits, and the partial acceptance of mapped items
through the native endpoint's own validation and sink (bodies are read by collector.bodies)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException, Request
from fastapi.concurrency import run_in_threadpool

from collector.adapters.common import Mapped, Rejected
from collector.ingest import IngestResult, deliver_and_report, validate_batch
from collector.sink import Sink
from tracker.contract import FieldError
from tracker.gateways import Gateway


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int
    max_batch_records: int


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def check_batch(count: int, limits: Limits) -> None:
    if count > limits.max_batch_records:
        raise HTTPException(
            413, f"batch of {count} items is over the limit of {limits.max_batch_records}"
        )


def _validate(
    mapped: list[Mapped], gateway: Gateway
) -> tuple[list[Any], list[FieldError], int, int]:
    candidates: list[dict[str, Any]] = []
    origin: list[int] = []
    errors: list[FieldError] = []
    for index, item in enumerate(mapped):
        if item is None:
            continue
        if isinstance(item, Rejected):
            errors.append(FieldError(index=index, field=item.field, reason=item.reason))
            continue
        candidates.append(item)
        origin.append(index)
    good, contract_errors, forbidden = validate_batch(candidates, gateway)
    errors.extend(e.model_copy(update={"index": origin[e.index]}) for e in contract_errors)
    errors.sort(key=lambda e: e.index)
    considered = sum(1 for m in mapped if m is not None)
    return good, errors, forbidden, considered


async def accept(mapped: list[Mapped], gateway: Gateway, sink: Sink) -> tuple[IngestResult, int]:
    """Validate mapped items with the contract, deliver the valid ones, list the others by
    the index of the source item (span, event, payload) they came from.

    Returns the result and the HTTP status the native endpoint would answer: 200 when anything
    was accepted (or nothing was a usage item), 403 when every refusal was about the agency,
    422 otherwise. Raises 503 when the sink did not confirm: nothing was stored."""
    good, errors, forbidden, considered = await run_in_threadpool(_validate, mapped, gateway)
    return await deliver_and_report(sink, good, errors, forbidden, considered)
