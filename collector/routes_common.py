"""What every source push endpoint shares: bounded (de)compressed bodies, and the partial
acceptance of mapped items through the native endpoint's own validation and sink."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import HTTPException, Request
from fastapi.concurrency import run_in_threadpool

from collector.adapters.common import Mapped, Rejected
from collector.ingest import IngestResult, deliver_and_report, read_body, validate_batch
from collector.sink import Sink
from tracker.contract import FieldError
from tracker.gateways import Gateway


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int
    max_batch_records: int


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


_MAX_MEMBERS = 10_000  # gzip members in one body (a writer appends one per flush at most)


def _inflate(body: bytes, wbits: int, limit: int) -> bytes:
    """Decompress at most `limit` bytes: a small gzip bomb is refused, never expanded whole.

    Every gzip member is read (concatenated members are one valid gzip body, and reading only
    the first once dropped the records of the others with a 200), and a stream that ends early
    or is followed by other bytes is refused: a body is taken whole or not at all."""
    parts: list[bytes] = []
    size = 0
    rest = body
    while True:
        if len(parts) >= _MAX_MEMBERS:
            raise HTTPException(400, f"body has over {_MAX_MEMBERS} gzip members")
        inflater = zlib.decompressobj(wbits)
        try:
            out = inflater.decompress(rest, limit - size + 1)
        except zlib.error as exc:
            raise HTTPException(400, f"body is not valid compressed data: {exc}") from exc
        size += len(out)
        if size > limit or inflater.unconsumed_tail:
            raise HTTPException(413, f"decompressed body over {limit} bytes")
        if not inflater.eof:
            raise HTTPException(400, "body is not valid compressed data: the stream ends early")
        parts.append(out)
        rest = inflater.unused_data
        if not rest:
            return b"".join(parts)
        if wbits != 16 + zlib.MAX_WBITS:  # deflate has no members: trailing bytes are garbage
            raise HTTPException(400, "body is not valid compressed data: bytes after its end")


async def read_decoded(request: Request, limit: int) -> bytes:
    """The body, bounded before and after decompression (gzip or deflate accepted)."""
    body = await read_body(request, limit)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding in ("gzip", "x-gzip"):
        return _inflate(body, 16 + zlib.MAX_WBITS, limit)
    if encoding == "deflate":
        return _inflate(body, zlib.MAX_WBITS, limit)
    raise HTTPException(415, f"unsupported Content-Encoding {encoding!r}: use gzip or identity")


def json_items(body: bytes) -> list[Any]:
    """A JSON array, a single JSON object, or JSON lines, as a list of items."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        items: list[Any] = []
        for number, line in enumerate(body.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                items.append(orjson.loads(line))
            except orjson.JSONDecodeError as line_exc:
                raise HTTPException(
                    422, f"body is neither JSON nor JSON lines (line {number}: {line_exc})"
                ) from line_exc
        return items
    return data if isinstance(data, list) else [data]


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
