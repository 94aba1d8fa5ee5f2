"""LiteLLM: the StandardLoggingPayload its logging callbacks send (e.g. its generic API logger)
and the LiteLLM_SpendLogs rows its proxy serves from /spend/logs.

record_id is made of LiteLLM's two ids, the same for the same call pushed or pulled: its call id
(`litellm_call_id`: a payload field, a spend-log column and a key of the row's metadata) and its
request id (the payload's `id`, the row's `request_id`: the provider's response id when the
provider gives one, else the call id), as `<call id>/<request id>`, or the call id alone when
the two are the same (a failed call has no response). Neither is unique alone: servers repeat
response ids across distinct calls (Ollama's OpenAI-compatible API draws them from 0-998), and
the proxy gives every retry and fallback of one request the same call id, so a failed attempt
and the fallback that answered are two records (keyed by the call id alone, a failure landed
first and the answer was dropped as its resend; found in review). Older proxies without a call
id: the request id. Costs are LiteLLM's `response_cost` / `spend`, in USD. Cache hits were
served by the gateway, not by a model, and the proxy's own health checks (made with its
service key, `litellm-internal-health-check`) are no agency's usage: both are ignored.

The agency, first match wins: a request tag `agency:<id>`; `agency_id` in the request's
metadata (`requester_metadata`, or `spend_logs_metadata`); the key's team alias, then its
organisation alias, when that alias is one of the gateway's agencies; the gateway's only agency.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final, Literal

import orjson

from collector.adapters.common import (
    Context,
    SourceError,
    as_cost,
    as_float,
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

OPERATIONS: Final = {
    "completion": "chat",
    "acompletion": "chat",
    "responses": "chat",
    "aresponses": "chat",
    "anthropic_messages": "chat",
    "generate_content": "chat",
    "agenerate_content": "chat",
    "text_completion": "completion",
    "atext_completion": "completion",
    "embedding": "embeddings",
    "aembedding": "embeddings",
    "image_generation": "image",
    "aimage_generation": "image",
    "image_edit": "image",
    "aimage_edit": "image",
    "transcription": "audio",
    "atranscription": "audio",
    "speech": "audio",
    "aspeech": "audio",
    "rerank": "rerank",
    "arerank": "rerank",
}


def json_field(value: Any) -> Any:
    """Spend-log JSON columns arrive as objects, or as JSON text from older proxies."""
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return None
    return value


def _agency(tags: Any, metadata: Any, ctx: Context) -> str:
    tag_agency = None
    for tag in tags if isinstance(tags, list) else []:
        if isinstance(tag, str) and tag.startswith("agency:"):
            tag_agency = tag.removeprefix("agency:")
            break
    aliases = [
        a
        for a in (dig(metadata, "user_api_key_team_alias"), dig(metadata, "user_api_key_org_alias"))
        if isinstance(a, str) and a in ctx.agencies
    ]
    return ctx.agency(
        tag_agency,
        dig(metadata, "requester_metadata", "agency_id"),
        dig(metadata, "spend_logs_metadata", "agency_id"),
        *aliases,
    )


def _provider(provider: Any, model: str) -> str:
    if isinstance(provider, str) and provider:
        return provider
    if "/" in model:  # LiteLLM's own "provider/model" naming
        return model.split("/", 1)[0]
    raise SourceError("custom_llm_provider", "LiteLLM did not say which provider served it")


def _is_cache_hit(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


# The key LiteLLM's proxy makes its health checks' model calls with (litellm.constants.
# LITTELM_INTERNAL_HEALTH_SERVICE_ACCOUNT_NAME, its UserAPIKeyAuth in litellm.proxy._types), as
# a payload's `user_api_key_hash` and a spend-log row's `api_key` hold it: the name itself (a
# non-secret key value is stored as is) or, hashed, its SHA-256 hex.
HEALTH_CHECK: Final = "litellm-internal-health-check"
HEALTH_CHECK_KEYS: Final = frozenset(
    {HEALTH_CHECK, hashlib.sha256(HEALTH_CHECK.encode()).hexdigest()}
)


def _is_health_check(key: Any, team: Any = None) -> bool:
    # By the key, as LiteLLM's own `exclude_internal_health_checks` decides, or by the team the
    # proxy gives that key (a team id is the proxy's or its admin's, never a caller's). Not by
    # the tag, nor by the key's or team's alias: a caller chooses its request's tags (the body's
    # `tags`, the `x-litellm-tags` header) and a key's creator its alias, and one header made an
    # agency's calls vanish as health checks (found in review, 2026-11-26). A payload whose key
    # information the proxy redacts (`redact_user_api_key_info`) carries neither, and its
    # health checks count, as usage of the gateway's agency (docs/collectors.md).
    return (isinstance(key, str) and key in HEALTH_CHECK_KEYS) or team == HEALTH_CHECK


# Which of LiteLLM's ids a record is keyed by: both (this release), the call id alone (the
# releases of 2026-11-26 before the fallback fix), the request id alone (those before). The
# pull keys rows an earlier release may have sent as it sent them (litellm_pull.py).
IdScheme = Literal["pair", "call", "request"]


def _id_text(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value if isinstance(value, str) and value else None


def record_key(call_id: Any, request_id: Any, ids: IdScheme = "pair") -> str | None:
    """The source id a LiteLLM record is keyed by (before source_id makes it a record_id)."""
    call, request = _id_text(call_id), _id_text(request_id)
    if ids == "request":
        return request
    if ids == "pair" and call is not None and request is not None and request != call:
        if "/" in call or "/" in request:
            # ("a", "b/c") and ("a/b", "c") would both read a/b/c: one record id for two calls
            # (found in review). Such a pair is keyed by a hash of both, the same pushed or
            # pulled.
            pair = hashlib.sha256(orjson.dumps([call, request])).hexdigest()[:40]
            return f"litellm-pair:{pair}"
        return f"{call}/{request}"
    return call or request


def map_payload(item: Any, ctx: Context, *, ids: IdScheme = "pair") -> dict[str, Any] | None:
    """One StandardLoggingPayload."""
    payload = require_object(item)
    metadata = payload.get("metadata")
    if _is_cache_hit(payload.get("cache_hit")) or _is_health_check(
        dig(metadata, "user_api_key_hash"), dig(metadata, "user_api_key_team_id")
    ):
        return None
    model = first(payload.get("model"), payload.get("model_group"))
    if not isinstance(model, str):
        raise SourceError("model", "payload names no model")
    start = coerce("startTime", as_float, payload.get("startTime"))
    end = coerce("endTime", as_float, payload.get("endTime"))
    if start is None:
        raise SourceError("startTime", "payload has no start time")
    cost = coerce("response_cost", as_cost, payload.get("response_cost"))
    return drop_none(
        {
            "record_id": source_id("litellm", record_key(payload.get("litellm_call_id"),
                                                         payload.get("id"), ids), payload),
            "agency_id": _agency(payload.get("request_tags"), metadata, ctx),
            "occurred_at": coerce("startTime", as_time, start),
            "provider": _provider(payload.get("custom_llm_provider"), model),
            "model": model,
            "operation": OPERATIONS.get(str(payload.get("call_type")), "other"),
            "endpoint_host": coerce("api_base", host_of, payload.get("api_base")),
            "input_tokens": coerce("prompt_tokens", as_int, payload.get("prompt_tokens")),
            "output_tokens": coerce("completion_tokens", as_int, payload.get("completion_tokens")),
            "cost": cost,
            "currency": "USD" if cost is not None else None,
            "latency_ms": int((end - start) * 1000) if end is not None and end >= start else None,
            "status": "ok" if payload.get("status") in (None, "success") else "error",
        }
    )  # fmt: skip


def map_spend_log(item: Any, ctx: Context, *, ids: IdScheme = "pair") -> dict[str, Any] | None:
    """One LiteLLM_SpendLogs row as /spend/logs (or /spend/logs/v2) serves it. Timestamps
    without a zone are UTC: the proxy stores them so."""
    row = require_object(item)
    tags, metadata = json_field(row.get("request_tags")), json_field(row.get("metadata"))
    if _is_cache_hit(row.get("cache_hit")) or _is_health_check(
        row.get("api_key"), row.get("team_id")
    ):
        return None
    model = first(row.get("model"), row.get("model_group"))
    if not isinstance(model, str):
        raise SourceError("model", "spend-log row names no model")
    started = coerce("startTime", as_time, row.get("startTime"), assume_utc=True)
    latency = coerce("request_duration_ms", as_int, row.get("request_duration_ms"))
    if latency is None and row.get("endTime"):
        ended = coerce("endTime", as_time, row.get("endTime"), assume_utc=True)
        latency = max(0, int((ended - started).total_seconds() * 1000))
    cost = coerce("spend", as_cost, row.get("spend"))
    return drop_none(
        {
            "record_id": source_id("litellm", record_key(
                first(row.get("litellm_call_id"), dig(metadata, "litellm_call_id")),
                row.get("request_id"), ids), row),
            "agency_id": _agency(tags, metadata, ctx),
            "occurred_at": started,
            "provider": _provider(row.get("custom_llm_provider"), model),
            "model": model,
            "operation": OPERATIONS.get(str(row.get("call_type")), "other"),
            "endpoint_host": coerce("api_base", host_of, row.get("api_base")),
            "input_tokens": coerce("prompt_tokens", as_int, row.get("prompt_tokens")),
            "output_tokens": coerce("completion_tokens", as_int, row.get("completion_tokens")),
            "cost": cost,
            "currency": "USD" if cost is not None else None,
            "latency_ms": latency,
            "status": "ok" if row.get("status") in (None, "", "success") else "error",
        }
    )  # fmt: skip


def is_spend_log(item: Any) -> bool:
    return isinstance(item, dict) and "request_id" in item and "id" not in item


def map_any(item: Any, ctx: Context) -> dict[str, Any] | None:
    """A push body may mix both shapes (a callback payload, or rows re-sent from an export)."""
    return map_spend_log(item, ctx) if is_spend_log(item) else map_payload(item, ctx)
