"""Request bodies as every ingest route reads them: bounded before and after decompression,
and JSON items (array, object or JSON lines) with a broken line refused on its own."""

from __future__ import annotations

import zlib
from typing import Any

from fastapi import HTTPException, Request, status

from collector.adapters.common import Rejected
from tracker import json_read

_MAX_MEMBERS = 10_000  # gzip members in one body (a writer appends one per flush at most)


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
    """A JSON array, a single JSON object, or JSON lines, as a list of items.

    In JSON lines a line that is no JSON becomes a Rejected item at its place, so the good
    lines beside it still land (a logger's torn or garbled line must not cost its neighbours).
    A body none of whose lines is JSON is refused whole: it was never JSON lines."""
    if not body.strip():
        raise HTTPException(422, "body is empty: send a JSON array, a JSON object or JSON lines")
    try:
        data = json_read.loads(body)
    except json_read.JSONError as body_exc:
        items: list[Any] = []
        for number, line in enumerate(body.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                items.append(json_read.loads(line))
            except json_read.JSONError as line_exc:
                items.append(Rejected("record", f"line {number} is not valid JSON: {line_exc}"))
        if all(isinstance(item, Rejected) for item in items):
            raise HTTPException(
                422, f"body is neither JSON nor JSON lines: {body_exc}"
            ) from body_exc
        return items
    return data if isinstance(data, list) else [data]
