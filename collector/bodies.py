"""Request bodies as every ingest route reads them: bounded before and after decompression,
and JSON items (array, object or JSON lines) with a broken line refused on its own."""

from __future__ import annotations

import zlib
from typing import Any

from fastapi import HTTPException, Request
from fastapi.concurrency import run_in_threadpool

from collector.adapters.common import Rejected
from tracker import json_read
from tracker.request_body import read_body

_MAX_MEMBERS = 10_000  # gzip members in one body (a writer appends one per flush at most)
# Input fed to zlib at a time: a member's first window, doubled while it goes on, up to the
# last. Small first (an empty gzip member is 20 bytes), large enough later that a big member
# costs few calls.
_FIRST_WINDOW = 256
_MAX_WINDOW = 1 << 20


def _inflate(body: bytes, wbits: int, limit: int) -> bytes:
    """Decompress at most `limit` bytes: a small gzip bomb is refused, never expanded whole.

    Every gzip member is read (concatenated members are one valid gzip body, and reading only
    the first once dropped the records of the others with a 200), and a stream that ends early
    or is followed by other bytes is refused: a body is taken whole or not at all.

    The input is fed through a window onto the body (a memoryview, no copy) that starts small
    and doubles while a member goes on. Feeding each member the whole rest of the body made
    zlib copy that rest into `unused_data` once per member: quadratic, 17 s for 10,000 empty
    members before a 15 MiB one (found in review). Now what a member leaves over is at most its
    last window, which is at most the member's own size plus _FIRST_WINDOW (the windows before
    it, all taken by the member, add up to that window less _FIRST_WINDOW): linear in the body.
    """
    view = memoryview(body)
    parts: list[bytes] = []
    size = 0
    offset = 0  # where the member being read starts in the body
    members = 0
    while True:
        members += 1
        if members > _MAX_MEMBERS:
            raise HTTPException(400, f"body has over {_MAX_MEMBERS} gzip members")
        inflater = zlib.decompressobj(wbits)
        window = _FIRST_WINDOW
        while not inflater.eof:
            if offset >= len(view):
                raise HTTPException(400, "body is not valid compressed data: the stream ends early")
            chunk = view[offset : offset + window]
            try:
                out = inflater.decompress(chunk, limit - size + 1)
            except zlib.error as exc:
                raise HTTPException(400, f"body is not valid compressed data: {exc}") from exc
            size += len(out)
            if size > limit or inflater.unconsumed_tail:
                raise HTTPException(413, f"decompressed body over {limit} bytes")
            parts.append(out)
            # What the member did not take (bytes after its end) is read again as the next one.
            offset += len(chunk) - len(inflater.unused_data)
            window = min(window * 2, _MAX_WINDOW)
        if offset == len(view):
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
        wbits = 16 + zlib.MAX_WBITS
    elif encoding == "deflate":
        wbits = zlib.MAX_WBITS
    else:
        raise HTTPException(415, f"unsupported Content-Encoding {encoding!r}: use gzip or identity")
    # In a worker thread: inflating up to the limit takes CPU for a while (zlib releases the
    # GIL), and on the event loop it held up every other request, /healthz included (found in
    # review).
    return await run_in_threadpool(_inflate, body, wbits, limit)


def json_items(body: bytes) -> list[Any]:
    """A JSON array, a single JSON object, or JSON lines, as a list of items.

    In JSON lines a line that is no JSON becomes a Rejected item at its place, so the good
    lines beside it still land (a logger's torn or garbled line must not cost its neighbours).
    A body none of whose lines is JSON is refused whole: it was never JSON lines. An array item
    with a lone surrogate escape is a json_read.Unencodable, refused at its place too."""
    if not body.strip():
        raise HTTPException(422, "body is empty: send a JSON array, a JSON object or JSON lines")
    try:
        data = json_read.loads(body, items=True)
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
