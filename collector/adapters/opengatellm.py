"""OpenGateLLM (etalab-ia/OpenGateLLM, the French government's open-source LLM gateway, formerly
albert-api): rows of its `usage` table as exported to CSV or JSON, and the items of its usage
answer. Two layouts of each:

- releases to mid 2025 (api/sql/models.py, class Usage): `datetime` (no zone), `duration`,
  `model`/`request_model`, `client_url`, `kwh_min`/`kwh_max`; answer items `"object":
  "me.usage"` with `impacts.kWh` as {min, max};
- current releases (api/infrastructure/postgres/models.py, class Usage): `created` (with zone),
  `latency`, `router_name` (the model asked for) and `provider_model_name` (the model the
  provider served), `request_id`, `kwh`; answer items `"object": "usage"` with `impacts.kWh` a
  number. Found in review (2026-11-26): these rows were taken for rows without a model and
  ignored, answering 200.

record_id: `opengatellm-<id>` from the table's primary key; an answer item has no id, so a
stable hash of the whole item (its model, key, endpoint, method, status, usage and `created`
second; two identical calls in the same second would count once). Timestamps without a zone
are read as UTC. `duration`/`latency` are milliseconds. Energy is OpenGateLLM's `kwh` (or the
middle of its [kwh_min, kwh_max] estimate), in Wh. model is the model served when the row says
(`provider_model_name`), else the one asked for. OpenGateLLM's usage row does not say which
provider served a model: `provider` is the row's own column when present, else the importer's
--provider, else `opengatellm`, and `client_url` (the upstream it forwarded to; in current
releases the provider table's `url`, joined in by the export) gives endpoint_host. Its cost
carries no currency: EUR unless --currency says otherwise. Rows without a model (endpoints that
call none) are ignored.
"""

from __future__ import annotations

import math
from typing import Any, Final

from collector.adapters.common import (
    Context,
    SourceError,
    as_cost,
    as_float,
    as_int,
    as_time,
    canonical_hash,
    coerce,
    dig,
    drop_none,
    first,
    host_of,
    require_object,
)

OPERATIONS: Final = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completion",
    "/v1/embeddings": "embeddings",
    "/v1/audio/transcriptions": "audio",
    "/v1/rerank": "rerank",
}
TABLE_COLUMNS: Final = frozenset({"endpoint", "client_url", "prompt_tokens", "datetime"})
# The current usage table's own names for the model; with `endpoint` and `created`, and none
# of the names a record of the contract, an access-log line or a response has, they say it is
# one of its rows. Found in review: `endpoint` with any two of its other columns (`ttft`,
# `kwh`, `user_email`...) took access-log lines and generic CSV exports for its rows, which
# it then refused.
CURRENT_MODEL_COLUMNS: Final = frozenset({"router_name", "provider_model_name"})
NOT_ITS_COLUMNS: Final = frozenset({"record_id", "occurred_at", "usage", "response", "body"})
ANSWER_OBJECTS: Final = frozenset({"me.usage", "usage"})


def is_usage_row(item: Any) -> bool:
    """A usage-table row (>= 3 of the older table's distinctive columns, or the current one's
    model columns beside `endpoint` and `created`) or an item of a usage answer (`me.usage`;
    `usage` only with its `usage` object and `endpoint`)."""
    if not isinstance(item, dict):
        return False
    kind = item.get("object")
    if kind == "me.usage":
        return True
    if kind == "usage":
        return isinstance(item.get("usage"), dict) and "endpoint" in item
    keys = item.keys()
    if len(TABLE_COLUMNS & keys) >= 3:
        return True
    return ("endpoint" in keys and "created" in keys and bool(CURRENT_MODEL_COLUMNS & keys)
            and not NOT_ITS_COLUMNS & keys)  # fmt: skip


def _tokens(field: str, value: Any) -> int | None:
    number = coerce(field, as_float, value)  # completion_tokens is a Float column
    if number is None:
        return None
    if not math.isfinite(number):
        raise SourceError(field, f"expected a finite number, got {value!r}"[:80])
    return round(number)


def _energy_wh(low: Any, high: Any) -> float | None:
    values = [v for v in (coerce("kwh_min", as_float, low), coerce("kwh_max", as_float, high))
              if v is not None]  # fmt: skip
    return sum(values) / len(values) * 1000 if values else None


def _kwh_as_wh(field: str, value: Any) -> float | None:
    kwh = coerce(field, as_float, value)
    return None if kwh is None else kwh * 1000


def map_row(item: Any, ctx: Context) -> dict[str, Any] | None:
    row = require_object(item)
    if _is_answer(row):
        # An answer unwrap could not open: taken for a row without a model, it and every
        # item in it would be ignored with a 200.
        raise SourceError("data", "a /v1/me/usage answer must hold its items in a `data` array")
    me = row.get("object") in ANSWER_OBJECTS
    usage = row.get("usage") if me else row
    model = first(row.get("model"), row.get("request_model"), row.get("provider_model_name"),
                  row.get("router_name"))  # fmt: skip
    if model is None:
        return None
    if me:
        occurred = coerce("created", as_time, row.get("created"))
        record_id = f"opengatellm:{canonical_hash(row)}"
        latency = coerce("usage.metrics.latency", as_int, dig(usage, "metrics", "latency"))
        kwh = dig(usage, "impacts", "kWh")
        energy = (_energy_wh(dig(kwh, "min"), dig(kwh, "max")) if isinstance(kwh, dict)
                  else _kwh_as_wh("usage.impacts.kWh", kwh))  # fmt: skip
    else:
        if row.get("datetime") is not None:
            occurred = coerce("datetime", as_time, row.get("datetime"), assume_utc=True)
        else:
            occurred = coerce("created", as_time, row.get("created"), assume_utc=True)
        row_id = coerce("id", as_int, row.get("id"))
        record_id = f"opengatellm-{row_id}" if row_id is not None else (
            f"opengatellm:{canonical_hash(row)}")  # fmt: skip
        if row.get("duration") is not None:
            latency = coerce("duration", as_int, row.get("duration"))
        else:
            latency = coerce("latency", as_int, row.get("latency"))
        if row.get("kwh") is not None:
            energy = _kwh_as_wh("kwh", row.get("kwh"))
        else:
            energy = _energy_wh(row.get("kwh_min"), row.get("kwh_max"))
    status = coerce("status", as_int, row.get("status"))
    cost = coerce("cost", as_cost, dig(usage, "cost"))
    endpoint = str(row.get("endpoint") or "")
    if not isinstance(model, str):
        raise SourceError("model", "model must be text")
    return drop_none(
        {
            "record_id": record_id,
            "agency_id": ctx.agency(row.get("agency_id")),
            "occurred_at": occurred,
            "provider": first(row.get("provider"), ctx.defaults.get("provider"), "opengatellm"),
            "model": model,
            "operation": OPERATIONS.get(endpoint.split("?", 1)[0].rstrip("/"), "other"),
            "endpoint_host": first(
                coerce("client_url", host_of, row.get("client_url")),
                ctx.defaults.get("endpoint_host"),
            ),
            "region": first(row.get("region"), ctx.defaults.get("region")),
            "input_tokens": _tokens("prompt_tokens", dig(usage, "prompt_tokens")),
            "output_tokens": _tokens("completion_tokens", dig(usage, "completion_tokens")),
            "cost": cost,
            "currency": first(ctx.defaults.get("currency"), "EUR") if cost is not None else None,
            "latency_ms": latency,
            "status": "error" if status is not None and status >= 400 else "ok",
            "energy_wh": energy,
        }
    )


def _is_answer(item: Any) -> bool:
    return isinstance(item, dict) and item.get("object") == "list"


def unwrap(body: Any) -> list[Any]:
    """The rows of a body: a JSON value, or the items json_items read (an array, an object or
    JSON lines). Each `{"object": "list", "data": [...]}` answer of /v1/me/usage gives its
    `data` items in its place (a body may hold one answer, or pages of them as JSON lines);
    every other item is a row. Refusals index the rows so opened."""
    rows: list[Any] = []
    for item in body if isinstance(body, list) else [body]:
        if _is_answer(item) and isinstance(item.get("data"), list):
            rows.extend(item["data"])
        else:
            rows.append(item)
    return rows
