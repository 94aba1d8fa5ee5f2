"""Raw usage records for auditors: filtered pages with a keyset cursor, and streamed exports.

Order is the table's sort key (agency_id, occurred_at, gateway_id, record_id): unique per record
(idempotent landing keeps (gateway_id, record_id) unique), so the order is total and stable, and
ClickHouse reads in that order from the primary key and stops at the LIMIT instead of sorting.
A cursor is the sort key of the last row of a page; the next page is "after that key", which
stays correct while records keep landing (no OFFSET drift).

Exports never hold the result. They run as one ordered query per (agency, time window of about
WINDOW_ROWS rows, PARQUET_WINDOW_ROWS for Parquet) (see _plan):
CSV and JSON lines are produced by ClickHouse and streamed block by block (on chdb and on a
server alike); Parquet is read as Arrow in pages of at most PARQUET_WINDOW_ROWS rows, paged by
the sort key within each window, and written one row group per page. Memory is a few blocks
(CSV, JSON lines) or one page (Parquet), whatever the export's size or how its rows cluster in
time (bench/api.py).

An export ends cleanly only when it is whole, or when it stopped at the `limit` its client
asked for. Stopped by the server's cap with rows left past it, it raises ExportCut after the
last row it may carry, so the response, whose 200 is already sent, is cut off instead of
ending like a complete file.
"""

from __future__ import annotations

import base64
import binascii
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import IO, Any, cast

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from clickhouse_connect.driver.client import Client

from tracker.bounds import cursor_time
from tracker.metrics import DAILY_FILTERS

# (column, Arrow type) in export order; the Arrow types drive the Parquet schema.
COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("record_id", pa.string()),
    ("gateway_id", pa.string()),
    ("agency_id", pa.string()),
    ("occurred_at", pa.timestamp("ms", tz="UTC")),
    ("provider", pa.string()),
    ("model", pa.string()),
    ("operation", pa.string()),
    ("endpoint_host", pa.string()),
    ("region", pa.string()),
    ("request_count", pa.uint64()),
    ("input_tokens", pa.uint64()),
    ("output_tokens", pa.uint64()),
    ("cost", pa.decimal128(38, 9)),
    ("currency", pa.string()),
    ("cost_reporting", pa.decimal128(38, 9)),
    ("cost_converted", pa.uint8()),
    ("latency_ms", pa.uint32()),
    ("status", pa.string()),
    ("energy_wh", pa.float64()),
    ("use_case", pa.string()),
    ("schema_version", pa.uint8()),
    ("tier", pa.string()),
    ("facility_id", pa.string()),
    ("facility_country", pa.string()),
    ("operator", pa.string()),
    ("sector", pa.string()),
    ("channel", pa.string()),
    ("classification_rule", pa.string()),
    ("registry_version", pa.string()),
    ("source_partition", pa.int32()),
    ("source_offset", pa.int64()),
    ("ingested_at", pa.timestamp("ms", tz="UTC")),
)
COLUMN_NAMES = tuple(name for name, _ in COLUMNS)
SCHEMA = pa.schema(list(COLUMNS))

# Filters of the raw endpoint -> ClickHouse parameter type (IN lists, like the rollup's).
RAW_FILTERS: dict[str, str] = {
    "agency_id": "Array(String)",
    "gateway_id": "Array(String)",
    "provider": "Array(String)",
    "model": "Array(String)",
    "tier": "Array(String)",
    "status": "Array(String)",
}

# ISO 8601 timestamps everywhere; counts as JSON numbers; decimals as strings so no JSON parser
# rounds a cost. Set in the SQL text: per-call settings would make chdb materialize the stream.
_OUTPUT_SETTINGS = (
    "SETTINGS date_time_output_format = 'iso', output_format_json_quote_64bit_integers = 0, "
    "output_format_json_quote_decimals = 1, output_format_decimal_trailing_zeros = 0, "
    # A null (cost, latency, energy) is an empty CSV cell, not the two characters \\N that
    # spreadsheets and pandas read as text (found in review). Only numbers are Nullable, so an
    # empty cell can only be a null; strings are always quoted.
    "format_csv_null_representation = '', "
    # Small blocks: an export's memory is a few blocks, whatever its size.
    "max_block_size = 8192"
)
# Added to export queries only. A window is one agency's rows in key order. One thread holds one
# set of column read buffers instead of one per thread: a 10M-row Parquet export's peak private
# memory fell from 299 to 255 MB, and it ran faster (465k vs 392k rows/s); CSV runs ~6% slower
# (bench/RESULTS.md). Pages keep the default, under which their latency target was measured.
_EXPORT_SETTINGS = ", max_threads = 1"


class ExportFormat(StrEnum):
    csv = "csv"
    jsonl = "jsonl"
    parquet = "parquet"


MEDIA_TYPE = {
    ExportFormat.csv: "text/csv; charset=utf-8",
    ExportFormat.jsonl: "application/x-ndjson",
    ExportFormat.parquet: "application/vnd.apache.parquet",
}


class CursorError(ValueError):
    pass


class ExportCut(RuntimeError):
    """Rows remain past the server's cap on one export (TRACKER_MAX_EXPORT_ROWS). Raised
    mid-stream, after the last row the export may carry: the status is sent by then, so
    failing the transfer is the one sign a streamed response can still give."""


@dataclass(frozen=True)
class Cursor:
    agency_id: str
    occurred_at: datetime
    gateway_id: str
    record_id: str

    def encode(self) -> str:
        raw = orjson.dumps(
            [self.agency_id, self.occurred_at.isoformat(), self.gateway_id, self.record_id]
        )
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            a, t, g, r = orjson.loads(raw)
            when = cursor_time(t)
            if not all(isinstance(x, str) for x in (a, g, r)):
                raise TypeError("cursor fields must be strings")
        except (binascii.Error, orjson.JSONDecodeError, ValueError, TypeError) as exc:
            raise CursorError("cursor: not a cursor returned by this API") from exc
        return cls(a, when, g, r)

    @classmethod
    def of_row(cls, row: dict[str, Any]) -> Cursor:
        when = datetime.fromisoformat(str(row["occurred_at"]))
        return cls(str(row["agency_id"]), when, str(row["gateway_id"]), str(row["record_id"]))


# A CSV cell a spreadsheet would run as a formula (OWASP's CSV injection): gateways send free
# text (model, provider, endpoint_host, region, use_case, record ids), and an auditor opens the
# export in Excel or LibreOffice (found in review: `=HYPERLINK(...)` reached the file as it
# was). In CSV only, a text value starting with one of these gets a leading apostrophe; JSON
# lines and Parquet carry every value exactly.
_FORMULA_STARTS = "'=', '+', '-', '@', char(9), char(13)"


def _csv_safe(name: str, kind: pa.DataType) -> str:
    if kind != pa.string():
        return name
    quoted = f"concat('''', {name})"
    # Aliased apart: under its own name the expression would replace the column in WHERE and
    # ORDER BY (ClickHouse prefers an alias), changing the order and the cursor's comparisons.
    return f"if(substring({name}, 1, 1) IN ({_FORMULA_STARTS}), {quoted}, {name}) AS csv_{name}"


_CSV_SELECT = ", ".join(_csv_safe(name, kind) for name, kind in COLUMNS)


def select_sql(
    filters: dict[str, list[str]],
    after: Cursor | None,
    limited: bool,
    export: bool = False,
    csv: bool = False,
) -> str:
    where = [
        "occurred_at >= {from_:DateTime64(3, 'UTC')}",
        "occurred_at < {to:DateTime64(3, 'UTC')}",
    ]
    for name in sorted(filters):
        if name not in RAW_FILTERS:
            raise ValueError(f"unknown filter {name!r}")
        where.append(f"{name} IN {{{name}:{RAW_FILTERS[name]}}}")
    if after is not None:
        # Expanded rather than a tuple comparison so the primary-key analysis can use it.
        where.append(
            "agency_id >= {c_a:String} AND (agency_id > {c_a:String} "
            "OR (occurred_at > {c_t:DateTime64(3, 'UTC')} "
            "OR (occurred_at = {c_t:DateTime64(3, 'UTC')} "
            "AND (gateway_id > {c_g:String} "
            "OR (gateway_id = {c_g:String} AND record_id > {c_r:String})))))"
        )
    limit = " LIMIT {limit:UInt64}" if limited else ""
    return (
        f"SELECT {_CSV_SELECT if csv else ', '.join(COLUMN_NAMES)} FROM usage_raw "
        f"WHERE {' AND '.join(where)} "
        f"ORDER BY agency_id, occurred_at, gateway_id, record_id{limit} {_OUTPUT_SETTINGS}"
        f"{_EXPORT_SETTINGS if export else ''}"
    )


def select_params(
    start: datetime,
    end: datetime,
    filters: dict[str, list[str]],
    after: Cursor | None,
    limit: int | None,
) -> dict[str, Any]:
    p: dict[str, Any] = {"from_": _ch_bound(start), "to": _ch_bound(end), **filters}
    if after is not None:
        p.update(c_a=after.agency_id, c_t=_ch_time(after.occurred_at), c_g=after.gateway_id,
                 c_r=after.record_id)  # fmt: skip
    if limit is not None:
        p["limit"] = limit
    return p


def _ch_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _ch_bound(value: datetime) -> str:
    """A range bound at the records' precision (ms), rounded up: truncated, `to` took in a
    record at or after it and `from` one before it (found in review: `to=10:00:00.0004`
    answered without the record at 10:00:00.000 and `from=` the same with it). Records in
    [from, to) are those in [ceil(from), ceil(to)) at millisecond precision."""
    spare = value.microsecond % 1000
    return _ch_time(value + timedelta(microseconds=1000 - spare) if spare else value)


@dataclass(frozen=True)
class Page:
    rows: list[dict[str, Any]]
    next_cursor: str | None


def page(
    client: Client,
    start: datetime,
    end: datetime,
    filters: dict[str, list[str]],
    after: Cursor | None,
    limit: int,
) -> Page:
    """One page of at most `limit` records, and the cursor of the next page if there is one."""
    sql = select_sql(filters, after, limited=True)
    body = client.raw_query(
        sql, parameters=select_params(start, end, filters, after, limit + 1), fmt="JSONEachRow"
    )
    rows = [orjson.loads(line) for line in body.splitlines() if line]
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, Cursor.of_row(rows[-1]).encode() if more and rows else None)


CHUNK = 1 << 20


def stream(
    client: Client,
    fmt: ExportFormat,
    start: datetime,
    end: datetime,
    filters: dict[str, list[str]],
    after: Cursor | None,
    limit: int,
    counter: list[int],
    cap: bool = False,
) -> Iterator[bytes]:
    """The export as byte chunks; `counter[0]` is kept at the number of rows produced so far
    (for the audit log). The caller must exhaust or close the iterator on this thread.

    `limit` is the client's, and the export ends cleanly there; with `cap` it is the server's,
    and rows past it raise ExportCut once the rows up to it are out. Each query then asks for
    one row more than may still be sent: that row, never sent, is how the export learns that
    rows remain, without a count over the whole range."""
    if fmt is ExportFormat.parquet:
        yield from _parquet(client, start, end, filters, after, limit, counter, cap)
        return
    csv = fmt is ExportFormat.csv
    if csv:
        yield (",".join(COLUMN_NAMES) + "\n").encode()
    ch_fmt = "CSV" if csv else "JSONEachRow"
    left = limit  # rows the export may still carry
    for scoped, lo, hi in _plan(client, start, end, filters, after, WINDOW_ROWS):
        # At the cap, the windows left are probed for one row each until one has it: at most
        # the queries the rest of the export would have run (windows the gateway, provider or
        # model filter empties are only known to be empty once read).
        if left <= 0 and not cap:
            return
        sql = select_sql(scoped, after, limited=True, export=True, csv=csv)
        params = select_params(lo, hi, scoped, after, left + 1 if cap else left)
        source = cast(IO[bytes], client.raw_stream(sql, parameters=params, fmt=ch_fmt))
        try:
            while chunk := source.read(CHUNK):
                # One record is one line in both formats: CSV would quote an embedded newline,
                # but no exported string column carries free text.
                lines = chunk.count(b"\n")
                if lines < left or (lines == left and chunk.endswith(b"\n")):
                    counter[0] += lines
                    left -= lines
                    yield chunk
                    continue
                # The chunk goes on past the last row the export may carry: only the cap's
                # extra row can (a client's limit is the query's own LIMIT).
                head = _first_lines(chunk, left)
                counter[0] += left
                left = 0
                if head:
                    yield head
                if cap:
                    raise ExportCut(f"rows remain past the cap of {limit} rows on one export")
                return
        finally:
            source.close()


def _first_lines(chunk: bytes, lines: int) -> bytes:
    """The first `lines` whole lines of a chunk that holds at least that many."""
    end = 0
    for _ in range(lines):
        end = chunk.index(b"\n", end) + 1
    return chunk[:end]


# Rows per export query, judged from the daily rollup. CSV and JSON lines stream each query block
# by block, so this only bounds the query's read set. Parquet is read as Arrow, cast and encoded
# one row group at a time, so it has its own smaller budget, which also bounds every page (row
# group) read: 20k rows took the 10M-row export's peak private memory from 255 to 218 MB at the
# same speed (bench/RESULTS.md).
WINDOW_ROWS = 50_000
PARQUET_WINDOW_ROWS = 20_000
_DAY = timedelta(days=1)


def windows(
    start: datetime, end: datetime, counts: list[tuple[date, int]], budget: int = WINDOW_ROWS
) -> list[tuple[datetime, datetime]]:
    """[start, end) cut into consecutive windows of about `budget` rows each, from one
    agency's (day, rows) counts in ascending order. The windows cover the whole range, days
    without counts included, so no row is left out whatever the counts say; a day of more than
    `budget` rows is cut into equal slices of time. Slices of time bound nothing when rows
    cluster at one instant: Parquet pages within a window by key (_row_groups)."""
    cuts: list[datetime] = []
    held = 0
    for day, n in counts:
        midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
        d0, d1 = max(start, midnight), min(end, midnight + _DAY)
        if d0 >= d1:
            continue
        if (held and held + n > budget) or n > budget:
            cuts.append(d0)
            held = 0
        if n > budget:
            slices = -(-n // budget)
            step = (d1 - d0) / slices
            cuts.extend(d0 + step * i for i in range(1, slices))
            cuts.append(d1)
        else:
            held += n
    edges = [start, *sorted({c for c in cuts if start < c < end}), end]
    return list(itertools.pairwise(edges))


def _plan(
    client: Client,
    start: datetime,
    end: datetime,
    filters: dict[str, list[str]],
    after: Cursor | None,
    budget: int,
) -> Iterator[tuple[dict[str, list[str]], datetime, datetime]]:
    """The whole ordered result as (one agency's filters, window start, window end) steps, in
    that order, which is exactly the global (agency_id, occurred_at, ...) order. One ordered
    query over the whole range merges every part at once, and that merge's read buffers grew
    to 1.3 GB for 10M rows on chdb; a window of ~WINDOW_ROWS rows of one agency reads one or
    two parts. The agencies and their rows per day come from usage_daily (a few thousand
    rows): listing them from usage_raw read the whole range and cost ~300 MB at 100M rows
    (bench/RESULTS.md). So an export holds the agencies with landed batches: rows of a batch
    still being landed (raw in, rollups not yet) are in it only if their agency already has
    landed rows in the range. Steps are made as they are taken: the caller stops at its
    limit."""
    # The daily rollup applies what filters it can: its rows are a superset of the export's.
    daily = {k: v for k, v in filters.items() if k in DAILY_FILTERS}
    where = [
        "day >= toDate({from_:DateTime64(3, 'UTC')}, 'UTC')",
        "day <= toDate({to:DateTime64(3, 'UTC')}, 'UTC')",
        *(f"{k} IN {{{k}:{RAW_FILTERS[k]}}}" for k in sorted(daily)),
    ]
    params: dict[str, Any] = {"from_": _ch_bound(start), "to": _ch_bound(end), **daily}
    if after is not None:
        where.append("agency_id >= {c_a:String}")
        params["c_a"] = after.agency_id
    sql = (
        f"SELECT agency_id, day, sum(records) FROM usage_daily WHERE {' AND '.join(where)} "
        "GROUP BY agency_id, day ORDER BY agency_id, day"
    )
    by_agency: dict[str, list[tuple[date, int]]] = {}
    for agency, day, n in client.query(sql, parameters=params).result_rows:
        by_agency.setdefault(str(agency), []).append((day, int(n)))
    for agency, counts in by_agency.items():
        scoped = {**filters, "agency_id": [agency]}
        for lo, hi in windows(start, end, counts, budget):
            yield scoped, lo, hi


class _Sink:
    """A write-only file the ParquetWriter writes into, drained after every row group."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        return None

    def close(self) -> None:
        self.closed = True

    def drain(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        return out


def _parquet(
    client: Client,
    start: datetime,
    end: datetime,
    filters: dict[str, list[str]],
    after: Cursor | None,
    limit: int,
    counter: list[int],
    cap: bool,
) -> Iterator[bytes]:
    """One row group per page of _row_groups, read as Arrow (parsing a CSV stream with pyarrow
    instead kept growing with the export). An ExportCut leaves the file without its footer."""
    sink = _Sink()
    with pq.ParquetWriter(sink, SCHEMA, compression="zstd") as writer:
        for group in _row_groups(client, start, end, filters, after, limit, cap):
            writer.write_table(group)
            counter[0] += group.num_rows
            data = sink.drain()
            if data:
                yield data
    tail = sink.drain()
    if tail:
        yield tail


def _row_groups(
    client: Client,
    start: datetime,
    end: datetime,
    filters: dict[str, list[str]],
    after: Cursor | None,
    limit: int,
    cap: bool,
) -> Iterator[pa.Table]:
    """The export as Arrow tables of at most PARQUET_WINDOW_ROWS rows, each (agency, window)
    walked in pages by the sort key as the page endpoint walks it. Windows are cut by time, so
    rows stamped at one instant (a backfill) fall in one window whatever its budget, and read
    whole it was one table and one row group of any size (found in review); paged by key, a
    page never holds more than the budget, however the rows cluster in time."""
    size = PARQUET_WINDOW_ROWS
    left = limit  # rows the export may still carry
    for scoped, lo, hi in _plan(client, start, end, filters, after, size):
        key = after
        while True:
            if left <= 0 and not cap:
                return
            take = min(size, left)
            # One row more than is taken: whether the window goes on past this page, and, at
            # the cap (take 0: a probe of one row), whether the export goes on past the cap.
            sql = select_sql(scoped, key, limited=True, export=True)
            params = select_params(lo, hi, scoped, key, take + 1)
            table = client.query_arrow(sql, parameters=params, use_strings=True)
            group = table.slice(0, take).cast(SCHEMA)
            if group.num_rows:
                left -= group.num_rows
                yield group
            if table.num_rows <= take:
                break  # the window is done
            if left <= 0:
                if cap:
                    raise ExportCut(f"rows remain past the cap of {limit} rows on one export")
                return
            # Cast first: its timestamps are UTC-aware, so the cursor's time is the row's.
            last = group.slice(group.num_rows - 1).to_pylist()[0]
            key = Cursor(str(last["agency_id"]), last["occurred_at"], str(last["gateway_id"]),
                         str(last["record_id"]))  # fmt: skip
