"""Request bodies as every ingest route reads them: bounded before and after decompression,
and JSON items (array, object or JSON lines) with a broken line refused on its own."""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterator
from typing import Any, Final

import anyio
import orjson
from fastapi import HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

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


# A decoded body past LARGE_BODY_BYTES is parsed, validated and delivered only while its request
# holds one of LARGE_BODIES_AT_ONCE slots (LargeBodyGate); others wait for a slot, off the
# event loop's way, at most LARGE_BODIES_WAITING of them (then 503, Retry-After). Measured: a
# 16 MiB JSON body of small items parsed to ~460 MB before any count could refuse it, and
# eight at once took the collector from 367 MB to 2.1 GB; the thread pool runs 40 at once.
# A compressed body is decoded past LARGE_BODY_BYTES only once it holds a slot, so a waiting
# request holds its bytes as sent (found in review: 100 gzip bombs of 16 KiB, each decoded
# before it waited, +1.47 GB). Ordinary batches (1,000 records, ~250 KB) never wait.
LARGE_BODY_BYTES: Final = 1 << 20
LARGE_BODIES_AT_ONCE: Final = 2
LARGE_BODIES_WAITING: Final = 16
_GATE: Final = "tracker.large_body_gate"


class LargeBodyGate:
    """ASGI middleware bounding how many requests with a large decoded body are processed at
    once, and how many wait. `read_decoded` takes the slot once it knows the body decodes
    past LARGE_BODY_BYTES; it is given back when the request's answer has been sent (the
    parsed items live until then)."""

    def __init__(
        self, app: ASGIApp, slots: int = LARGE_BODIES_AT_ONCE, waiting: int = LARGE_BODIES_WAITING
    ) -> None:
        self.app = app
        self.slots = slots
        self.max_waiting = waiting
        self.waiting = 0
        self._semaphore: anyio.Semaphore | None = None  # made in the server's event loop

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held: list[anyio.Semaphore] = []
        scope[_GATE] = (self, held)
        try:
            await self.app(scope, receive, send)
        finally:
            for semaphore in held:
                semaphore.release()

    async def enter(self, held: list[anyio.Semaphore]) -> None:
        if held:
            return  # one slot a request
        if self._semaphore is None:
            self._semaphore = anyio.Semaphore(self.slots)
        if self._semaphore.value == 0 and self.waiting >= self.max_waiting:
            raise HTTPException(
                503,
                f"busy: {self.slots} large bodies in progress and {self.waiting} waiting; "
                "retry later (or send smaller batches)",
                headers={"Retry-After": "5"},
            )
        self.waiting += 1
        try:
            await self._semaphore.acquire()
        finally:
            self.waiting -= 1
        held.append(self._semaphore)


async def _large_body_slot(request: Request, size: int) -> None:
    gate = request.scope.get(_GATE)
    if size > LARGE_BODY_BYTES and gate is not None:
        owner, held = gate
        await owner.enter(held)


async def read_decoded(request: Request, limit: int) -> bytes:
    """The body, bounded before and after decompression (gzip or deflate accepted). A body
    that decodes past LARGE_BODY_BYTES holds a LargeBodyGate slot before it is returned, and
    a compressed one before it is decoded past that."""
    body = await read_body(request, limit)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        await _large_body_slot(request, len(body))
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
    if limit > LARGE_BODY_BYTES and request.scope.get(_GATE) is not None:
        try:  # what ordinary batches are: no slot needed
            return await run_in_threadpool(_inflate, body, wbits, LARGE_BODY_BYTES)
        except HTTPException as exc:
            if exc.status_code != 413:
                raise
        await _large_body_slot(request, LARGE_BODY_BYTES + 1)  # it decodes past: a slot first
    decoded = await run_in_threadpool(_inflate, body, wbits, limit)
    await _large_body_slot(request, len(decoded))
    return decoded


# A line break as bytes.splitlines() takes one (CRLF, CR or LF): JSON lines keep the numbers
# they always had. _CONTENT: a byte bytes.strip() keeps (bytes patterns' \s is its whitespace).
_LINE_BREAK: Final = re.compile(rb"\r\n|\r|\n")
_CONTENT: Final = re.compile(rb"\S")
# What orjson refuses and the standard library reads (see tracker.json_read): a number a double
# cannot hold (orjson names "number"), a lone surrogate (named, so that the field holding it is
# named), and a NaN or Infinity literal (orjson only says "unexpected character" or "no digit
# after sign", so the text where it stopped is looked at).
_SECOND_READER_MESSAGES: Final = ("number", "surrogate")
_NON_FINITE_LITERALS: Final = ("NaN", "Infinity", "-Infinity")


def over_limit(
    body: bytes, max_items: int, what: str, *, in_object: bool = False
) -> HTTPException | None:
    """A 413 for a large body that is a JSON array of more than `max_items` items (with
    `in_object`: an object whose arrays hold more than that together), else None. The count
    is a floor: the items after the first past the limit are not read."""
    if len(body) <= LARGE_BODY_BYTES:
        return None
    try:
        if not json_read.array_longer_than(body, max_items, in_object=in_object):
            return None
    except json_read.TooIntricate as exc:
        return HTTPException(413, str(exc))
    return HTTPException(
        413, f"batch of more than {max_items} {what} is over the limit of {max_items}"
    )


def json_items(body: bytes, max_items: int | None = None, *, in_object: bool = False) -> list[Any]:
    """A JSON array, a single JSON object, or JSON lines, as a list of items.

    In JSON lines a line that is no JSON becomes a Rejected item at its place, so the good
    lines beside it still land (a logger's torn or garbled line must not cost its neighbours).
    A body none of whose lines is JSON is refused whole: it was never JSON lines. An array item
    with a lone surrogate escape is a json_read.Unencodable, refused at its place too.

    JSON lines past `max_items` are a 413 as soon as line `max_items + 1` is reached, before it
    or any after it is read: reading every line first, then counting, let a 2 KiB gzip body of
    a million one-byte lines cost 10 s of CPU before its 413 (found in review). A large array
    past `max_items` is a 413 before it is parsed (`over_limit`; with `in_object`, a large
    object's arrays too); any other is counted by the caller (check_batch).

    CPU-bound (it parses up to the body limit of JSON): call it from a worker thread."""
    if _CONTENT.search(body) is None:
        raise HTTPException(422, "body is empty: send a JSON array, a JSON object or JSON lines")
    if max_items is not None:
        too_many = over_limit(body, max_items, "items", in_object=in_object)
        if too_many is not None:
            raise too_many
    try:
        data = json_read.loads(body, items=True)
    except json_read.JSONError as body_exc:
        items: list[Any] = []
        for number, line in _json_lines(body):
            if max_items is not None and len(items) >= max_items:
                # check_batch's answer; the count is a floor: the lines after are not counted.
                raise HTTPException(
                    413, f"batch of more than {max_items} items is over the limit of {max_items}"
                ) from None
            items.append(_json_line(number, line))
        if all(isinstance(item, Rejected) for item in items):
            raise HTTPException(
                422, f"body is neither JSON nor JSON lines: {body_exc}"
            ) from body_exc
        return items
    return data if isinstance(data, list) else [data]


def _json_lines(body: bytes) -> Iterator[tuple[int, bytes]]:
    r"""(number, line) of each line holding more than whitespace, lazily, numbered from 1 as
    `body.splitlines()` numbers its lines.

    Blank lines are passed over by searches and counts over the bytes, not one by one in
    Python: a body of nothing but line breaks (16 MiB of them in the body limit) costs no
    Python work per line."""
    number, start = 1, 0  # the line beginning at `start` is line `number`
    while (content := _CONTENT.search(body, start)) is not None:
        found = content.start()
        # The line holding `found` begins after the last break before it. No break straddles
        # either end of [start, begin): `start` follows a whole break (CRLF is matched as
        # one), and `begin` is followed by whitespace or content, never by LF.
        last_break = max(body.rfind(b"\n", start, found), body.rfind(b"\r", start, found))
        begin = max(start, last_break + 1)
        number += (
            body.count(b"\n", start, begin)
            + body.count(b"\r", start, begin)
            - body.count(b"\r\n", start, begin)
        )
        end = _LINE_BREAK.search(body, found)
        yield number, body[begin : end.start() if end else len(body)]
        if end is None:
            return
        number, start = number + 1, end.end()


def _json_line(number: int, line: bytes) -> Any:
    """One JSON line parsed, or a Rejected naming its number.

    orjson alone first: json_read.loads tries the standard library after every orjson refusal,
    and a body of garbage lines paid both parsers, and an exception each, on every line (found
    in review). The standard library is still asked when orjson stopped at something it reads
    (see _SECOND_READER_MESSAGES), so that such a line is read and its record refused by the
    field holding the number or surrogate, as in a JSON array."""
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        if not _second_reader_reads(exc):
            return Rejected("record", f"line {number} is not valid JSON: {exc}")
    try:
        return json_read.loads(line)
    except json_read.JSONError as exc:
        return Rejected("record", f"line {number} is not valid JSON: {exc}")


def _second_reader_reads(exc: orjson.JSONDecodeError) -> bool:
    """Whether orjson stopped at something the standard library reads (a number, a NaN or
    Infinity literal, a lone surrogate), not at a plain syntax error. `pos` counts characters
    of `doc`, orjson's decoded text."""
    if any(word in exc.msg for word in _SECOND_READER_MESSAGES):
        return True
    return isinstance(exc.doc, str) and exc.doc.startswith(_NON_FINITE_LITERALS, exc.pos)
