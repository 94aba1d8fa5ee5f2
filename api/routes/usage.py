"""`GET /v1/usage`: raw usage records for auditors (and an agency's own), paged with a keyset
cursor, or streamed whole as CSV, JSON lines or Parquet (tracker/usage_export.py)."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import AsyncGenerator, Callable
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import Message, Receive, Scope, Send

from api.auth import Caller, count_rows, require
from api.deps import ClickHouse
from api.params import (
    MAX_VALUES,
    CurrentRegistry,
    End,
    Names,
    Settings,
    Start,
    Values,
    exact_range,
    visible_filters,
)
from tracker.access import Role
from tracker.clickhouse import ClientPool
from tracker.contract import Status, Tier
from tracker.usage_export import (
    MEDIA_TYPE,
    Cursor,
    CursorError,
    ExportCut,
    ExportFormat,
    page,
    stream,
)

log = logging.getLogger(__name__)
router = APIRouter(tags=["usage"])

MAX_PAGE = 10_000
DEFAULT_PAGE = 1000
DEFAULT_RANGE = timedelta(days=1)
# Chunks in flight between the producing thread and the response: bounds memory per export.
QUEUE_CHUNKS = 8
# Exports streaming at once, in all and per key, and how long one chunk may wait for its client
# to read: each holds up to ~10 MB (its queue and socket buffers) and a read of the store while
# it runs. Found in review: 60 exports of one key left unread took the API from 629 MB to
# 1.26 GB, for as long as their clients kept the connections open.
EXPORTS_AT_ONCE = 8
EXPORTS_PER_KEY = 2
EXPORT_STALL_SECONDS = 120.0


class ExportSlots:
    """Exports in progress, by key. Taken in the route (a worker thread: it is a sync
    function) and released on the event loop when the response ends, so under a lock (found
    in review: unlocked, a release racing a take left a slot held for good, or raised
    KeyError and skipped stopping the export's thread)."""

    def __init__(self, at_once: int = EXPORTS_AT_ONCE, per_key: int = EXPORTS_PER_KEY) -> None:
        self.at_once, self.per_key = at_once, per_key
        self.by_key: dict[str, int] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> Callable[[], None]:
        """A slot for `key` (its release, to call once), or 429/503 with Retry-After."""
        with self._lock:
            if self.by_key.get(key, 0) >= self.per_key:
                raise HTTPException(
                    429, f"{self.per_key} exports of this key are in progress; retry when one "
                    "ends", headers={"Retry-After": "30"},
                )  # fmt: skip
            if sum(self.by_key.values()) >= self.at_once:
                raise HTTPException(
                    503, f"{self.at_once} exports are in progress; retry later",
                    headers={"Retry-After": "30"},
                )  # fmt: skip
            self.by_key[key] = self.by_key.get(key, 0) + 1
        released = [False]

        def release() -> None:
            with self._lock:
                if released[0]:
                    return
                released[0] = True
                left = self.by_key.get(key, 0) - 1
                if left > 0:
                    self.by_key[key] = left
                else:
                    self.by_key.pop(key, None)

        return release


class ExportStalled(Exception):
    """The client read nothing of its export for EXPORT_STALL_SECONDS: cut off, its slot freed."""


class UsageFormat(StrEnum):
    json = "json"
    csv = "csv"
    jsonl = "jsonl"
    parquet = "parquet"


class UsagePage(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "from": "2026-06-01T00:00:00Z",
                    "to": "2026-06-02T00:00:00Z",
                    "order": ["agency_id", "occurred_at", "gateway_id", "record_id"],
                    "rows": [
                        {
                            "record_id": "req-1",
                            "gateway_id": "gw-in-sbi",
                            "agency_id": "in-sbi",
                            "occurred_at": "2026-06-01T10:00:00.000Z",
                            "provider": "azure_openai",
                            "model": "gpt-4o",
                            "tier": "onshore",
                            "request_count": 1,
                            "cost": "0.0061",
                            "status": "ok",
                        }
                    ],
                    "next_cursor": "WyJpbi1zYmkiLCIyMDI2LTA2LTAx...",
                }
            ]
        }
    )

    from_: datetime = Field(serialization_alias="from")
    to: datetime
    order: list[str] = Field(description="the stable sort key the cursor walks")
    rows: list[dict[str, Any]] = Field(
        description="usage_raw columns; timestamps ISO 8601 UTC, decimals as strings"
    )
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null: done")


_EXPORT_CONTENT: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {
            "text/csv": {"schema": {"type": "string"}},
            "application/x-ndjson": {"schema": {"type": "string"}},
            "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
        },
        "description": "a page (format=json) or a streamed export",
    }
}


@router.get(
    "/v1/usage",
    response_model=UsagePage,
    response_model_by_alias=True,
    responses=_EXPORT_CONTENT,
)
def get_usage(
    request: Request,
    client: ClickHouse,
    identity: Caller,
    registry: CurrentRegistry,
    settings: Settings,
    from_: Start = None,
    to: End = None,
    agency: Annotated[Values, Query(max_length=MAX_VALUES, description="Agency ids")] = None,
    gateway: Annotated[Values, Query(max_length=MAX_VALUES, description="Gateway ids")] = None,
    provider: Annotated[Names, Query(max_length=MAX_VALUES)] = None,
    model: Annotated[Names, Query(max_length=MAX_VALUES)] = None,
    tier: Annotated[list[Tier] | None, Query(max_length=4)] = None,
    status: Annotated[list[Status] | None, Query(max_length=2)] = None,
    format: UsageFormat = UsageFormat.json,
    limit: Annotated[
        int | None,
        Query(
            ge=1,
            le=1_000_000_000,
            description="Page size (json: default 1000, at most 10000); for exports, the "
            "most rows streamed, at most the configured cap (TRACKER_MAX_EXPORT_ROWS; over it: "
            "422). An export without a limit that has rows past the cap is cut off midway",
        ),
    ] = None,
    cursor: Annotated[
        str | None, Query(max_length=2048, description="next_cursor of the previous page")
    ] = None,
) -> Response:
    """Raw records in the stable order (agency_id, occurred_at, gateway_id, record_id) over
    [from, to) (default: the last day). Auditors and admins see every agency; an agency key
    its own. format=json pages with a cursor; csv, jsonl and parquet stream the whole result:
    one with rows past the server's cap (and no `limit`) is cut off midway, never ended as if
    complete."""
    require(identity, Role.auditor, Role.admin, Role.agency)
    start, end = exact_range(from_, to, DEFAULT_RANGE)
    raw = {"agency_id": agency, "gateway_id": gateway, "provider": provider, "model": model,
           "tier": tier, "status": status}  # fmt: skip
    filters = {k: sorted(set(map(str, v))) for k, v in raw.items() if v}
    filters = visible_filters(identity, registry, filters, client)
    try:
        after = Cursor.decode(cursor) if cursor else None
    except CursorError as exc:
        raise HTTPException(422, str(exc)) from exc
    if format is UsageFormat.json:
        size = limit or DEFAULT_PAGE
        if size > MAX_PAGE:
            raise HTTPException(
                422, f"limit: pages hold at most {MAX_PAGE} rows; export with format=csv, "
                "jsonl or parquet for more",
            )  # fmt: skip
        found = page(client, start, end, filters, after, size)
        count_rows(request, len(found.rows))
        body = UsagePage(from_=start, to=end, order=["agency_id", "occurred_at", "gateway_id",
                         "record_id"], rows=found.rows, next_cursor=found.next_cursor)  # fmt: skip
        return JSONResponse(body.model_dump(mode="json", by_alias=True))
    fmt = ExportFormat(format.value)
    cap = settings.max_export_rows
    if limit is not None and limit > cap:
        # Lowered to the cap, the export would end like a complete one of `limit` rows.
        raise HTTPException(
            422, f"limit: one export holds at most {cap} rows (TRACKER_MAX_EXPORT_ROWS); "
            "narrow from/to or the filters",
        )  # fmt: skip
    counter: list[int] = getattr(request.state, "rows", [0])
    pool: ClientPool = request.app.state.clickhouse
    slots: ExportSlots = request.app.state.export_slots
    release = slots.take(identity.key_id or "")
    # Without a limit the cap is the server's, not the client's choice: reaching it with rows
    # left ends the export with ExportCut, which cuts the transfer off (_ExportResponse).
    chunks = _produce(pool, fmt, start, end, filters, after, limit or cap, limit is None,
                      counter)  # fmt: skip
    name = f"usage-{start:%Y%m%dT%H%M%S}-{end:%Y%m%dT%H%M%S}.{fmt.value}"
    return _ExportResponse(
        chunks,
        release,
        media_type=MEDIA_TYPE[fmt],
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


_END = object()


class _ExportResponse(StreamingResponse):
    """A streamed export that closes its body however the response ends. Starlette does not
    close a body left suspended when a send raises (the client went away): its `finally`,
    which stops the producing thread, would wait for the garbage collector, and for ever while
    anything (a reference cycle through a traceback) still held the body."""

    def __init__(
        self, body: AsyncGenerator[bytes, None], release: Callable[[], None], **kwargs: Any
    ) -> None:
        super().__init__(body, **kwargs)
        self._body = body
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def timed(message: Message) -> None:
            # A client that stops reading leaves the send waiting for its socket to drain,
            # for as long as the connection stays open: past the stall limit it is cut off.
            try:
                with anyio.fail_after(EXPORT_STALL_SECONDS):
                    await send(message)
            except TimeoutError as exc:
                raise ExportStalled(f"nothing read for {EXPORT_STALL_SECONDS:.0f} s") from exc

        try:
            await super().__call__(scope, receive, timed)
        except Exception as exc:
            ends = (ExportCut, ExportStalled)
            cut: BaseException | None = exc if isinstance(exc, ends) else None
            if isinstance(exc, BaseExceptionGroup):  # raised from Starlette's task group
                cuts, others = exc.split(ends)
                cut = cuts if others is None else None
            if cut is None:
                raise
            # Ended without its last body message, the transfer is cut off (the server closes
            # the connection; the audit log's `end` row says 499): the expected end of an
            # export past the cap or left unread, so one line, not an "Exception in ASGI
            # application" trace.
            log.warning("usage export cut off: %s", cut)
        finally:
            self._release()
            await self._body.aclose()


def _produce(
    pool: ClientPool,
    fmt: ExportFormat,
    start: datetime,
    end: datetime,
    filters: dict[str, list[str]],
    after: Cursor | None,
    limit: int,
    cap: bool,
    counter: list[int],
) -> AsyncGenerator[bytes, None]:
    """Run the export on a thread of its own with its own ClickHouse client: a chdb stream
    holds its client's handle until exhausted, and response chunks are pulled from arbitrary
    worker threads. A bounded queue between the two is the backpressure."""
    chunks: queue.Queue[object] = queue.Queue(maxsize=QUEUE_CHUNKS)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                chunks.put(item, timeout=0.25)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for chunk in stream(pool.get(), fmt, start, end, filters, after, limit, counter, cap):
                if not put(chunk):
                    return
            put(_END)
        except Exception as exc:  # handed to the response, which aborts the transfer
            put(exc)

    async def body() -> AsyncGenerator[bytes, None]:
        try:
            # Started by the first read of the body, not before: a response whose start could
            # not be sent (the client already gone, under ASGI spec 2.4) never reads its body,
            # and a thread started earlier was never told to stop (found in review).
            threading.Thread(target=work, name="usage-export", daemon=True).start()
            while True:
                item = await anyio.to_thread.run_sync(chunks.get)
                if item is _END:
                    return
                if isinstance(item, Exception):
                    raise item
                assert isinstance(item, bytes)
                yield item
        finally:
            stop.set()
            # Wake a worker thread still waiting in chunks.get() after a client went away.
            with contextlib.suppress(queue.Full):
                chunks.put_nowait(_END)

    return body()
