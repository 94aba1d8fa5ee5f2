"""A request body read up to a limit, for every process that takes one (collector ingest, the
API's registry proposals)."""

from __future__ import annotations

from fastapi import HTTPException, Request, status


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
