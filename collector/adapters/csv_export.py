"""CSV exports: one usage record per row, with a header naming the columns.

Columns are the contract's field names (record_id, agency_id, occurred_at, provider, model,
operation, endpoint_host, region, request_count, input_tokens, output_tokens, cost, currency,
latency_ms, status, energy_wh, use_case) or a common alias (timestamp, prompt_tokens,
completion_tokens, request_id, host, ...; see ALIASES). Other columns are ignored and listed
once by the importer. A file whose header is an OpenGateLLM usage-table export is read with
that adapter. Without a record_id column, the id is `csv:` + SHA-256 of the row's non-empty
cells by column name, so the same row re-exported gets the same id.
"""

from __future__ import annotations

import collections
from typing import Any, Final

from collector.adapters import opengatellm
from collector.adapters.common import (
    Context,
    as_cost,
    as_float,
    as_int,
    as_time,
    canonical_hash,
    coerce,
    drop_none,
    first,
)

FIELDS: Final = frozenset({
    "record_id", "agency_id", "occurred_at", "provider", "model", "operation", "endpoint_host",
    "region", "request_count", "input_tokens", "output_tokens", "cost", "currency",
    "latency_ms", "status", "energy_wh", "use_case",
})  # fmt: skip
ALIASES: Final = {
    "id": "record_id", "request_id": "record_id", "agency": "agency_id",
    "timestamp": "occurred_at", "time": "occurred_at", "start_time": "occurred_at",
    "created_at": "occurred_at", "prompt_tokens": "input_tokens",
    "completion_tokens": "output_tokens", "host": "endpoint_host",
    "server_address": "endpoint_host", "requests": "request_count",
    "duration_ms": "latency_ms",
}  # fmt: skip
INTS: Final = ("request_count", "input_tokens", "output_tokens", "latency_ms")


def column_for(name: str) -> str | None:
    key = name.strip().lower()
    return key if key in FIELDS else ALIASES.get(key)


def header_conflicts(header: list[str]) -> str | None:
    """Why the header does not say which column gives a field, else None. A repeated column
    name, or two aliases of one field (`timestamp` and `created_at`, `request_id` and `id`)
    with no column of the field's own name: found in review, the later column won silently,
    and a row number read as the record id made rows of two exports one record. The field's
    own name beside aliases is no conflict: it wins (map_row)."""
    # Counted once: header.count per column was quadratic (40,000 columns took 47 s at every
    # read of the file, found in review).
    repeated = sorted(h for h, n in collections.Counter(header).items() if n > 1)
    if repeated:
        return f"the CSV header repeats column(s) {', '.join(map(repr, repeated))}: keep one"
    if opengatellm.is_usage_row(dict.fromkeys(header, "")):
        return None  # read by its own adapter, by exact names
    by_field: dict[str, list[str]] = {}
    for name in header:
        field = column_for(name)
        if field is not None:
            by_field.setdefault(field, []).append(name)
    for field, names in by_field.items():
        own = [n for n in names if n.strip().lower() == field]
        if len(names) > 1 and len(own) != 1:
            return (f"columns {' and '.join(map(repr, names))} all give {field}: the importer "
                    f"cannot tell which to read; rename the one to use {field!r}, or drop the "
                    "others, and run again")  # fmt: skip
    return None


def ignored_columns(header: list[str]) -> list[str]:
    if opengatellm.is_usage_row(dict.fromkeys(header, "")):
        return []
    return [h for h in header if column_for(h) is None]


def map_row(item: Any, ctx: Context) -> dict[str, Any] | None:
    row: dict[str, Any] = {k: v for k, v in item.items() if k is not None}
    if opengatellm.is_usage_row(row):
        return opengatellm.map_row({k: (v if v != "" else None) for k, v in row.items()}, ctx)
    record: dict[str, Any] = {}
    for name, value in row.items():
        field = column_for(name)
        if field is None or value in (None, ""):
            continue
        if field in record and name.strip().lower() != field:
            continue  # an alias never overrides the field's own column (header_conflicts)
        record[field] = value.strip() if isinstance(value, str) else value
    for field in INTS:
        if field in record:
            record[field] = coerce(field, as_int, record[field])
    if "cost" in record:
        record["cost"] = coerce("cost", as_cost, record["cost"])
    if "energy_wh" in record:
        record["energy_wh"] = coerce("energy_wh", as_float, record["energy_wh"])
    if "occurred_at" in record:
        record["occurred_at"] = coerce("occurred_at", as_time, record["occurred_at"])
    nonempty = {k: v for k, v in row.items() if v not in (None, "")}
    record.setdefault("record_id", f"csv:{canonical_hash(nonempty)}")
    record["agency_id"] = ctx.agency(record.get("agency_id"))
    for field in ("provider", "endpoint_host", "region", "currency"):
        if field not in record:
            record[field] = first(ctx.defaults.get(field))
    if record.get("cost") is None:
        record.pop("currency", None)
    return drop_none(record)
