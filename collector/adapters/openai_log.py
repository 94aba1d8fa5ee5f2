"""OpenAI-style JSONL access logs: one JSON object per line carrying an OpenAI `usage` object.

Where the usage is looked for: the line itself (a logged response body), `response.usage`,
`response.body.usage` (OpenAI Batch API output lines) or `body.usage`. Chat and completion usage
(`prompt_tokens`/`completion_tokens`) and Responses API usage (`input_tokens`/`output_tokens`)
are both read. Lines that are OpenGateLLM usage rows are read with that adapter.

record_id, first present: the line's `request_id` / `x_request_id`, `response.request_id`, the
line's `id` (a Batch API output line's `batch_req_...`), the response body's `id` (chatcmpl-...,
resp_...); else `oai:` + SHA-256 of the line's canonical JSON (keys sorted), so the same line
always gets the same id. Request ids come first because they are unique per request, while some
servers repeat response ids across distinct calls (Ollama's OpenAI-compatible API answers
`chatcmpl-<random number below 999>`): two calls sharing a record_id would count once.
occurred_at: `timestamp`, `time`, `start_time`, `created_at`, else the body's `created` (Chat
Completions) or `created_at` (a Responses API object) in epoch seconds.
provider/endpoint_host/region: the line's own fields, else the importer's --provider (default
`openai`), --endpoint-host, --region. The agency: `agency_id` (or `metadata.agency_id`) of the
line, else --agency.
"""

from __future__ import annotations

from typing import Any, Final

from collector.adapters import opengatellm
from collector.adapters.common import (
    Context,
    SourceError,
    as_cost,
    as_int,
    as_time,
    coerce,
    dig,
    drop_none,
    first,
    host_of,
    require_object,
    source_id,
)

OBJECTS: Final = {
    "chat.completion": "chat",
    "response": "chat",
    "text_completion": "completion",
    "embedding": "embeddings",
    "list": "embeddings",  # an embeddings answer is a list of embedding objects
}
PATHS: Final = {
    "/chat/completions": "chat",
    "/responses": "chat",
    "/completions": "completion",
    "/embeddings": "embeddings",
    "/images/generations": "image",
    "/audio/transcriptions": "audio",
    "/rerank": "rerank",
}


def _body(line: dict[str, Any]) -> dict[str, Any] | None:
    for candidate in (line, line.get("response"), dig(line, "response", "body"), line.get("body")):
        if isinstance(candidate, dict) and isinstance(candidate.get("usage"), dict):
            return candidate
    return None


def _operation(line: dict[str, Any], body: dict[str, Any]) -> str:
    obj = body.get("object")
    if isinstance(obj, str) and obj in OBJECTS:
        return OBJECTS[obj]
    path = first(line.get("url"), line.get("path"), line.get("endpoint"),
                 dig(line, "request", "url"))  # fmt: skip
    if isinstance(path, str):
        for suffix, operation in PATHS.items():
            if path.split("?", 1)[0].rstrip("/").endswith(suffix):
                return operation
    return "chat"


def map_line(item: Any, ctx: Context) -> dict[str, Any] | None:
    line = require_object(item)
    if opengatellm.is_usage_row(line):
        return opengatellm.map_row(line, ctx)
    body = _body(line)
    if body is None:
        raise SourceError("usage", "line carries no OpenAI usage object")
    usage = body["usage"]
    model = first(body.get("model"), line.get("model"), dig(line, "request", "model"),
                  dig(line, "request", "body", "model"))  # fmt: skip
    if not isinstance(model, str):
        raise SourceError("model", "line names no model")
    # A nested Responses API object (Batch output of /v1/responses) dates itself `created_at`;
    # when the body is the line itself, that is the line's own `created_at` read before.
    when = first(line.get("timestamp"), line.get("time"), line.get("start_time"),
                 line.get("created_at"), body.get("created"), body.get("created_at"),
                 line.get("created"))  # fmt: skip
    status_code = coerce("status_code", as_int, first(line.get("status_code"),
                         dig(line, "response", "status_code")))  # fmt: skip
    failed = (status_code is not None and status_code >= 400) or bool(line.get("error"))
    cost = coerce("cost", as_cost, line.get("cost"))
    # Unique-per-request ids before the response body's id, which is only a fallback (see the
    # module docstring). When the body is the line itself, line["id"] is the body's id.
    own_id = first(line.get("request_id"), line.get("x_request_id"),
                   dig(line, "response", "request_id"), line.get("id"), body.get("id"))  # fmt: skip
    return drop_none(
        {
            "record_id": source_id("oai", own_id, line),
            "agency_id": ctx.agency(line.get("agency_id"), dig(line, "metadata", "agency_id")),
            "occurred_at": coerce("timestamp", as_time, when),
            "provider": first(line.get("provider"), ctx.defaults.get("provider"), "openai"),
            "model": model,
            "operation": _operation(line, body),
            "endpoint_host": first(line.get("endpoint_host"), line.get("server_address"),
                                   coerce("base_url", host_of,
                                          first(line.get("base_url"), line.get("api_base"),
                                                line.get("upstream_url"))),
                                   ctx.defaults.get("endpoint_host")),
            "region": first(line.get("region"), ctx.defaults.get("region")),
            "input_tokens": coerce("usage.prompt_tokens", as_int,
                                   first(usage.get("prompt_tokens"), usage.get("input_tokens"))),
            "output_tokens": coerce("usage.completion_tokens", as_int,
                                    first(usage.get("completion_tokens"),
                                          usage.get("output_tokens"))),
            "cost": cost,
            "currency": first(line.get("currency"), ctx.defaults.get("currency"), "USD")
            if cost is not None else None,
            "latency_ms": coerce("latency_ms", as_int, first(line.get("latency_ms"),
                                                              line.get("duration_ms"))),
            "status": "error" if failed else "ok",
            "use_case": line.get("use_case"),
        }
    )  # fmt: skip
