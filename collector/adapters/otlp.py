"""OTLP traces -> records, following the OpenTelemetry GenAI semantic conventions.

A span is a usage item when it carries `gen_ai.operation.name`, `gen_ai.provider.name` or the
older `gen_ai.system`; every other span is ignored (not rejected). Spans whose operation is not a
model inference are ignored too (NOT_INFERENCES): agent, workflow, planning and tool spans wrap
model calls that are spans of their own (counting both would count one inference twice), and
retrieval and memory spans are calls to a vector or memory store, not to a model. The one
exception is an `invoke_agent` span of kind CLIENT that names the remote service it called
(`server.address`): that agent's model calls have no spans here (is_genai).

record_id is the span's own identity, `otel:<trace id><span id>`: unique per span and the same
in every resend of it. `gen_ai.response.id` is only a fallback for a span without ids, because
some servers repeat it across distinct calls (Ollama's OpenAI-compatible API answers
`chatcmpl-<random number below 999>`), and two calls sharing an id would count once.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from collector.adapters.common import (
    Context,
    SourceError,
    as_int,
    coerce,
    drop_none,
    source_id,
)
from collector.bodies import LARGE_BODY_BYTES
from tracker import json_read

# Resource (or span) attributes naming the reporting agency, most specific first.
AGENCY_ATTRIBUTES: Final = ("tracker.agency_id", "gov.agency.id")
USE_CASE_ATTRIBUTE: Final = "tracker.use_case"

# gen_ai.operation.name -> contract operation. Absent names map to "other".
OPERATIONS: Final = {
    "chat": "chat",
    "generate_content": "chat",
    "text_completion": "completion",
    "embeddings": "embeddings",
    "image_generation": "image",
    "audio": "audio",
    "rerank": "rerank",
}
# gen_ai.operation.name values of the GenAI semantic conventions registry
# (open-telemetry/semantic-conventions-genai, model/gen-ai/registry.yaml and spans.yaml) whose
# spans are not a model inference. They are ignored (not counted, not refused): agent, workflow
# and plan spans are parents of the model call spans (the plan span's LLM call "SHOULD be a
# child of the plan span"), tool spans run tools, `retrieval` queries a vector database or search
# system, and the memory operations read or write a memory store. A model call any of them makes
# is reported as a span of its own (chat, embeddings, ...), which is the one counted.
NOT_INFERENCES: Final = frozenset(
    {
        "create_agent",
        "invoke_agent",
        "invoke_workflow",
        "plan",
        "execute_tool",
        "retrieval",
        "search_memory",
        "create_memory",
        "update_memory",
        "upsert_memory",
        "delete_memory",
        "create_memory_store",
        "delete_memory_store",
    }
)

# Well-known gen_ai.provider.name values -> the registry's provider ids, so a span classifies
# like the same call reported by any other gateway. Unlisted names pass through unchanged.
PROVIDERS: Final = {
    "azure.ai.openai": "azure_openai",
    "azure.ai.inference": "azure",
    "aws.bedrock": "aws_bedrock",
    "gcp.vertex_ai": "google_vertex",
    "gcp.gen_ai": "google_vertex",
    "gcp.gemini": "gemini",
    "mistral_ai": "mistral",
    "az.ai.openai": "azure_openai",
    "az.ai.inference": "azure",
}

# OTLP's id sizes; an id of another size, or all zeros (which OTLP calls invalid), is no id.
TRACE_ID_BYTES: Final = 16
SPAN_ID_BYTES: Final = 8
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


class OtlpDecodeError(ValueError):
    pass


class TooManySpans(ValueError):
    """An export over the span limit, or too intricate to count (json_read.TooIntricate),
    found before any span of it was built (413)."""


@dataclass(frozen=True, slots=True)
class Counts:
    """How many resourceSpans, scopeSpans and spans entries an export holds; `exact` is False
    when counting stopped as soon as one of them was over the limit."""

    resources: int
    scopes: int
    spans: int
    exact: bool = True

    def check(self, limit: int) -> None:
        """Refuse an export with more spans than `limit`, or more resourceSpans or scopeSpans
        entries. An export has no more entries holding a span than spans, so the second rule
        refuses no export within the span limit whose entries all hold spans; it bounds
        exports of empty entries, which cost as much to read as spans (4 MiB of them, 4 KiB
        gzipped, took 9 s of ParseDict) and would otherwise pass the span count."""
        for name, count in (("items", self.spans), ("resourceSpans entries", self.resources),
                            ("scopeSpans entries", self.scopes)):  # fmt: skip
            if count > limit:
                # check_batch's wording for spans: the message every push route answers.
                size = str(count) if self.exact else f"more than {limit}"
                noun = "batch" if name == "items" else "export"
                raise TooManySpans(f"{noun} of {size} {name} is over the limit of {limit}")


@dataclass(frozen=True, slots=True)
class Export:
    """A decoded export, and its spans that could not be read: by their place in `spans()`
    order, the field and reason that refuse each one (see _set_aside_unreadable)."""

    request: ExportTraceServiceRequest
    unreadable: Mapping[int, tuple[str, str]] = field(default_factory=dict)


def decode(body: bytes, content_type: str, max_spans: int | None = None) -> Export:
    """Decode an OTLP/HTTP body in either of its encodings.

    With `max_spans`, an export over it (see Counts.check) raises TooManySpans before its
    spans are built: counted on the wire for protobuf, right after the JSON read (before
    ParseDict) for JSON. Found in review: a 4 KiB gzip body of 4 MiB of empty spans was
    expanded whole (946 MiB, 3.8 s for protobuf; 11.6 s for JSON) before the count refused it.
    """
    request = ExportTraceServiceRequest()
    if content_type == "application/x-protobuf":
        counted = None
        if max_spans is not None:
            counted = protobuf_counts(body, max_spans)
            if counted is not None:
                counted.check(max_spans)
        try:
            request.ParseFromString(body)
        except DecodeError as exc:
            raise OtlpDecodeError(f"body is not an ExportTraceServiceRequest: {exc}") from exc
        if max_spans is not None and counted is None:  # wire the scan did not follow (a group)
            request_counts(request, max_spans).check(max_spans)
        return Export(request)
    # json_read, not orjson alone: orjson refuses the whole document over one number it cannot
    # hold (`1e400`), and a 400 makes an exporter drop every span of the export (found in
    # review). Such a number then refuses its span only (below).
    try:
        over = (
            max_spans is not None
            and len(body) > LARGE_BODY_BYTES
            and json_read.array_longer_than(body, max_spans, in_object=True)
        )
    except json_read.TooIntricate as exc:
        raise TooManySpans(str(exc)) from exc
    if over:
        # Counted before it is parsed (found in review: 5.6M `{}` in `resourceSpans` were
        # built first, +375 MB): more entries than spans allowed is over the limit whatever
        # they hold.
        raise TooManySpans(
            f"export of more than {max_spans} resourceSpans entries is over the limit of "
            f"{max_spans}"
        )
    try:
        data, surrogates = json_read.loads_keeping_surrogates(body)
    except json_read.JSONError as exc:
        raise OtlpDecodeError(f"body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise OtlpDecodeError("body must be a JSON ExportTraceServiceRequest object")
    if max_spans is not None:
        # Before anything walks the spans: ParseDict is pure Python (with the id rewrite, it
        # took 11.6 s for the 1.4 million empty spans of a 4 KiB gzip body).
        json_counts(data).check(max_spans)
    cut = _set_aside_lone_surrogates(data) if surrogates else {}
    unreadable = {**_hex_ids_to_base64(data), **cut}
    try:
        json_format.ParseDict(data, request, ignore_unknown_fields=True)
    except json_format.ParseError:
        # A value no field holds refuses its span only: such spans are set aside and the rest
        # is read again (a fault outside every span still refuses the whole body).
        unreadable = {**_set_aside_unreadable(data), **unreadable}
        request = ExportTraceServiceRequest()  # the failed parse may have filled part of it
        try:
            json_format.ParseDict(data, request, ignore_unknown_fields=True)
        except json_format.ParseError as exc:
            raise OtlpDecodeError(f"not an OTLP/JSON ExportTraceServiceRequest: {exc}") from exc
    if max_spans is not None:  # json_counts reads the names protobuf reads; this is a backstop
        request_counts(request, max_spans).check(max_spans)
    return Export(request, unreadable)


def json_counts(data: dict[str, Any]) -> Counts:
    """The entries of an OTLP/JSON export, read from the JSON document (no message built).
    Entries that are no object count too: `spans()` yields each entry protobuf reads."""
    resources = data.get("resourceSpans") or data.get("resource_spans")
    scopes = 0
    for rs in resources if isinstance(resources, list) else []:
        if isinstance(rs, dict):
            listed = rs.get("scopeSpans") or rs.get("scope_spans")
            scopes += len(listed) if isinstance(listed, list) else 0
    spans = sum(len(span_list) for span_list in _span_lists(data))
    return Counts(len(resources) if isinstance(resources, list) else 0, scopes, spans)


def request_counts(request: ExportTraceServiceRequest, limit: int) -> Counts:
    """The entries of a parsed export; len() of a repeated field builds none of its items.
    Stops (exact=False) once a count is over `limit`."""
    scopes = spans = 0
    resources = len(request.resource_spans)
    if resources > limit:
        return Counts(resources, scopes, spans)
    for rs in request.resource_spans:
        scopes += len(rs.scope_spans)
        for ss in rs.scope_spans:
            spans += len(ss.spans)
        if scopes > limit or spans > limit:
            return Counts(resources, scopes, spans, exact=False)
    return Counts(resources, scopes, spans)


# Field numbers on the path to a span: ExportTraceServiceRequest.resource_spans,
# ResourceSpans.scope_spans, ScopeSpans.spans (each a repeated message).
_RESOURCE_SPANS: Final = ExportTraceServiceRequest.RESOURCE_SPANS_FIELD_NUMBER
_SCOPE_SPANS: Final = ResourceSpans.SCOPE_SPANS_FIELD_NUMBER
_SPANS: Final = ScopeSpans.SPANS_FIELD_NUMBER
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5  # protobuf wire types (3 and 4 are groups)


class _Unscannable(Exception):
    """Wire this scan does not follow: left to protobuf's parser to accept or refuse."""


def protobuf_counts(body: bytes, limit: int) -> Counts | None:
    """The entries of a protobuf export, counted on the wire (no message built), stopping
    (exact=False) as soon as a count is over `limit`. None when the wire is not plain enough
    to count (truncated, a group) or holds many more fields than an export within the limit
    has: the parser then decides, and request_counts checks what it built."""
    wire = _Wire(body, limit)
    resources = scopes = spans = 0
    try:
        for number, start, end in wire.fields(0, len(body)):
            if number != _RESOURCE_SPANS:
                continue
            resources += 1
            for number, scope_start, scope_end in wire.fields(start, end):
                if number != _SCOPE_SPANS:
                    continue
                scopes += 1
                for number, _, _ in wire.fields(scope_start, scope_end):
                    if number == _SPANS:
                        spans += 1
                    if spans > limit:
                        return Counts(resources, scopes, spans, exact=False)
                if scopes > limit:
                    return Counts(resources, scopes, spans, exact=False)
            if resources > limit:
                return Counts(resources, scopes, spans, exact=False)
    except _Unscannable:
        return None
    return Counts(resources, scopes, spans)


class _Wire:
    """The fields of the messages on the path to a span, read off a protobuf body.

    The scan is Python, about 0.6 µs a field: it reads at most a few fields per entry the
    limit allows (each resource and scope has a message and a schema_url beside its list),
    and gives up past that. Unknown fields are not bounded by the span count, and 16 MiB of
    them took 5 s to scan where protobuf's parser takes 0.02 s."""

    def __init__(self, body: bytes, limit: int) -> None:
        self.body = body
        self.fields_left = 5 * limit + 64

    def fields(self, pos: int, end: int) -> Iterator[tuple[int, int, int]]:
        """(field number, start, end) of each length-delimited field of the message at
        body[pos:end]; fields of the other wire types are skipped."""
        while pos < end:
            self.fields_left -= 1
            if self.fields_left < 0:
                raise _Unscannable
            key, pos = self._varint(pos, end)
            wire_type = key & 7
            if wire_type == _LEN:
                size, pos = self._varint(pos, end)
                if pos + size > end:
                    raise _Unscannable
                yield key >> 3, pos, pos + size
                pos += size
            elif wire_type == _VARINT:
                _, pos = self._varint(pos, end)
            elif wire_type in (_I64, _I32):
                pos += 8 if wire_type == _I64 else 4
                if pos > end:
                    raise _Unscannable
            else:
                raise _Unscannable

    def _varint(self, pos: int, end: int) -> tuple[int, int]:
        value = shift = 0
        while pos < end and shift < 64:
            byte = self.body[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value, pos
            shift += 7
        raise _Unscannable


def _span_lists(data: dict[str, Any]) -> Iterator[list[Any]]:
    """The `spans` lists of an OTLP/JSON export, in the order protobuf reads them."""

    def items(value: Any) -> list[Any]:
        # Only lists are walked; anything else is left for the protobuf parser to refuse
        # with its own message (a number here once ended in a TypeError and a 500).
        return value if isinstance(value, list) else []

    for rs in items(data.get("resourceSpans") or data.get("resource_spans")):
        if not isinstance(rs, dict):
            continue
        for ss in items(rs.get("scopeSpans") or rs.get("scope_spans")):
            if isinstance(ss, dict) and isinstance(ss.get("spans"), list):
                yield ss["spans"]


def _placed_spans(data: dict[str, Any]) -> Iterator[tuple[int, list[Any], int, dict[str, Any]]]:
    """Each span object of an OTLP/JSON export with its place in `spans()` order (which counts
    the entries that are no object too), its list and its index there."""
    place = 0
    for span_list in _span_lists(data):
        for index, span in enumerate(span_list):
            if isinstance(span, dict):
                yield place, span_list, index, span
            place += 1


def _hex_ids_to_base64(data: dict[str, Any]) -> dict[int, tuple[str, str]]:
    """OTLP/JSON writes trace and span ids as hex, where protobuf's JSON mapping expects
    base64 for bytes fields; convert in place before parsing.

    An id that is not hex (say base64) refuses its span only, as any value its field cannot
    hold does (found in review: it was a 400, and exporters drop an export refused with 400).
    It is removed so the span still parses, and the span's place (in `spans()` order) is
    returned with the field and reason that refuse it."""
    unreadable: dict[int, tuple[str, str]] = {}

    def fix(obj: dict[str, Any], prefix: str) -> tuple[str, str] | None:
        refusal = None
        for key in ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"):
            value = obj.get(key)
            if isinstance(value, str) and value:
                try:
                    obj[key] = base64.b64encode(bytes.fromhex(value)).decode()
                except ValueError:
                    del obj[key]
                    refusal = refusal or (prefix + key, f"not hex: {value[:40]!r}")
        return refusal

    for place, _, _, span in _placed_spans(data):
        refusals = [fix(span, "")]
        links = span.get("links")
        for link in links if isinstance(links, list) else []:
            if isinstance(link, dict):
                refusals.append(fix(link, "links."))
        first = next((r for r in refusals if r is not None), None)
        if first is not None:
            unreadable[place] = first
    return unreadable


def _set_aside_lone_surrogates(data: dict[str, Any]) -> dict[int, tuple[str, str]]:
    """Replace, in place, each span holding a lone surrogate escape (a string cut mid-emoji by
    JavaScript's JSON.stringify) by its fields and attributes that hold none, and return their
    places with the field that refuses them; such a string cannot be encoded again, so it is
    never passed on. One outside every span (a resource's attribute, say) refuses the body,
    naming its place (found in review: one refused the whole export wherever it was)."""
    unreadable: dict[int, tuple[str, str]] = {}
    for place, span_list, index, span in _placed_spans(data):
        if json_read.lone_surrogate_at(span) is None:
            continue
        span_list[index], refusal = _split_span(span, _surrogate_refusal)
        unreadable[place] = refusal or ("span", json_read.LONE_SURROGATE)
    where = json_read.lone_surrogate_at(data)
    if where is not None:
        raise OtlpDecodeError(f"{where}: {json_read.LONE_SURROGATE}")
    return unreadable


def _surrogate_refusal(value: Any, _message: Any) -> str | None:
    return None if json_read.lone_surrogate_at(value) is None else json_read.LONE_SURROGATE


def _set_aside_unreadable(data: dict[str, Any]) -> dict[int, tuple[str, str]]:
    """Replace, in place, each span protobuf cannot read by what of it does read, and return
    their places with the field and reason that refuse them.

    A span is unreadable when a value does not fit its field: a number no double holds
    (`1e400`, a `NaN` literal), an integer beyond 64 bits, a value of the wrong type. The
    documented rule is that such a value refuses its record only, so the span is refused and
    the rest of the export is read. It is refused even if it may not be a GenAI span (the
    unreadable value may be the very attribute that would say): counted in rejected_spans, not
    lost in silence. What is kept of it (its ids among its readable fields) names it in the
    answer. A span that is no JSON object is left as it is: the export is malformed, not a
    value, and the whole body is refused as before."""
    unreadable: dict[int, tuple[str, str]] = {}
    for place, span_list, index, span in _placed_spans(data):
        try:
            json_format.ParseDict(span, Span(), ignore_unknown_fields=True)
        except json_format.ParseError as exc:
            span_list[index], unreadable[place] = _readable_part(span, exc)
    return unreadable


def _readable_part(
    span: dict[str, Any], error: Exception
) -> tuple[dict[str, Any], tuple[str, str]]:
    """The fields and attributes of `span` that protobuf reads, and the first that it does
    not (the attribute's key, else the span field's name) with protobuf's reason."""
    kept, refusal = _split_span(span, _protobuf_refusal)
    return kept, refusal or ("span", f"not readable: {error}"[:200])


def _protobuf_refusal(value: Any, message: Any) -> str | None:
    try:
        json_format.ParseDict(value, message, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        return f"not readable: {exc}"
    return None


def _split_span(
    span: dict[str, Any], refuse: Callable[[Any, Any], str | None]
) -> tuple[dict[str, Any], tuple[str, str] | None]:
    """The fields and attributes of `span` that `refuse` finds nothing against, and the first
    it does, as (the attribute's key, else the span field's name; its reason). `refuse` gets
    each attribute with a KeyValue, each field as `{name: value}` with a Span."""
    kept: dict[str, Any] = {}
    refusal: tuple[str, str] | None = None

    def fits(value: Any, message: Any, name: Any) -> bool:
        nonlocal refusal
        reason = refuse(value, message)
        if reason is None:
            return True
        if refusal is None:
            # A name is shown only if it encodes: it may hold the lone surrogate itself.
            named = isinstance(name, str) and name and json_read.lone_surrogate_at(name) is None
            refusal = ((name if named else "span")[:128], reason[:200])
        return False

    for key, value in span.items():
        if key == "attributes" and isinstance(value, list):
            kept[key] = [kv for kv in value if fits(kv, KeyValue(), _key_of(kv))]
        elif fits({key: value}, Span(), key):
            kept[key] = value
    return kept, refusal


def _key_of(kv: Any) -> Any:
    return kv.get("key") if isinstance(kv, dict) else None


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return attributes(v.kvlist_value.values)
    return getattr(v, kind)


def attributes(kvs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    kv: KeyValue
    for kv in kvs:
        out[kv.key] = _value(kv.value)
    return out


@dataclass(frozen=True, slots=True)
class SpanItem:
    """One span with its resource's attributes, as the adapter reads it."""

    span: Span
    resource: dict[str, Any]
    # (field, reason) when the span held a value protobuf could not read: it is refused.
    unreadable: tuple[str, str] | None = None


def spans(export: Export) -> Iterator[SpanItem]:
    place = 0
    for rs in export.request.resource_spans:
        resource = attributes(rs.resource.attributes)
        for ss in rs.scope_spans:
            for span in ss.spans:
                yield SpanItem(span, resource, export.unreadable.get(place))
                place += 1


# An `invoke_agent` span of kind CLIENT calls an agent a remote service runs (semantic
# conventions spans.yaml `gen_ai.invoke_agent.client`: OpenAI Assistants, AWS Bedrock Agents):
# its model calls happen there and have no spans in this trace, so this span is the only
# record of that inference and is counted. An INTERNAL one wraps model-call spans of its own
# and is not. Found in review (2026-11-26): both were ignored. Nor is a CLIENT one without the
# service's address: some frameworks give their in-process agent's span that kind (JetBrains
# Koog), with the run's summed tokens, beside a `chat` span per model call, and counting it
# counted each run once more and its tokens twice (found in review of that change). A remote
# call names its server; the conventions recommend `server.address` on this span.
SPAN_KIND_CLIENT: Final = 3
REMOTE_AGENT: Final = "invoke_agent"


def is_genai(attrs: dict[str, Any], kind: int = 0) -> bool:
    operation = attrs.get("gen_ai.operation.name")  # a string: map_span checks
    if operation in NOT_INFERENCES and not (
        operation == REMOTE_AGENT and kind == SPAN_KIND_CLIENT and _names_server(attrs)
    ):
        return False
    return any(k in attrs for k in ("gen_ai.operation.name", "gen_ai.provider.name",
                                    "gen_ai.system"))  # fmt: skip


def _names_server(attrs: dict[str, Any]) -> bool:
    address = attrs.get("server.address")
    return isinstance(address, str) and bool(address.strip())


def _kind(value: Any) -> str:
    """An attribute value's OTLP type, as a refusal names it."""
    kinds: dict[type, str] = {bool: "a bool", int: "an int", float: "a double",
                              bytes: "bytes", list: "an array", dict: "a kvlist"}  # fmt: skip
    return kinds.get(type(value), type(value).__name__)


def _str(attrs: dict[str, Any], *keys: str) -> str | None:
    """The first of `keys` set to a non-empty string. A value of another type refuses the
    span, naming the attribute: the GenAI conventions type these attributes as strings, and
    str() made `["openai"]` the provider "['openai']" and `true` the model "True" (found in
    review). It is refused, not skipped for the next key, since the span did state it."""
    for key in keys:
        value = attrs.get(key)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise SourceError(key, f"must be a string, not {_kind(value)}")
        return value
    return None


def _int(attrs: dict[str, Any], name: str, *aliases: str) -> int | None:
    for key in (name, *aliases):
        if key in attrs:
            return coerce(key, as_int, attrs[key])
    return None


def _record_id(span: Span, attrs: dict[str, Any]) -> str | None:
    """`otel:<trace id><span id>` when the span has both ids (OTLP requires them; the pair is
    unique per span and resent unchanged), else a stable id from `gen_ai.response.id`, else
    None (the contract then refuses the span: nothing could recognise its resend).

    Ids of the wrong size or all zeros (invalid in OTLP: a misconfigured SDK sends them) are
    no ids: every such span would share one record id and distinct calls would count once."""
    if _valid_id(span.trace_id, TRACE_ID_BYTES) and _valid_id(span.span_id, SPAN_ID_BYTES):
        return f"otel:{span.trace_id.hex()}{span.span_id.hex()}"
    response_id = attrs.get("gen_ai.response.id")
    if response_id:
        return source_id("otel", response_id, response_id)
    return None


def _valid_id(value: bytes, size: int) -> bool:
    return len(value) == size and any(value)


def map_span(item: SpanItem, ctx: Context) -> dict[str, Any] | None:
    span = item.span
    attrs = attributes(span.attributes)
    if item.unreadable is not None:
        raise SourceError(*item.unreadable)
    operation = attrs.get("gen_ai.operation.name")
    if operation is not None and not isinstance(operation, str):
        # An array or kvlist cannot be looked up as a name (it was a TypeError and a 500).
        raise SourceError("gen_ai.operation.name", f"must be a string, not {_kind(operation)}")
    if not is_genai(attrs, span.kind):
        return None
    # Span attributes win over resource attributes: the more specific statement. Only the keys
    # read from both levels: a copy of the resource's attributes per span cost spans x
    # resource attributes (found in review: one resource of 1M attributes and 4,000 spans,
    # 2.4 MB gzipped, held a worker thread 58 s).
    merged = {key: attrs[key] if key in attrs else item.resource.get(key)
              for key in (*AGENCY_ATTRIBUTES, USE_CASE_ATTRIBUTE)}  # fmt: skip
    provider = _str(attrs, "gen_ai.provider.name", "gen_ai.system")
    if provider is None:
        raise SourceError("gen_ai.provider.name", "GenAI span names no provider")
    model = _str(attrs, "gen_ai.response.model", "gen_ai.request.model")
    if model is None:
        raise SourceError("gen_ai.request.model", "GenAI span names no model")
    if span.start_time_unix_nano == 0:
        raise SourceError("startTimeUnixNano", "span has no start time")
    # Integer arithmetic: nanos / 1e9 rounds through a float, and moved a start in the last
    # microsecond of a day into the next (found in review). Microseconds are what a datetime
    # holds; the contract truncates them to milliseconds.
    started = EPOCH + timedelta(microseconds=span.start_time_unix_nano // 1000)
    latency = None
    if span.end_time_unix_nano >= span.start_time_unix_nano:
        latency = (span.end_time_unix_nano - span.start_time_unix_nano) // 1_000_000
    error = span.status.code == Status.STATUS_CODE_ERROR or "error.type" in attrs
    return drop_none(
        {
            "record_id": _record_id(span, attrs),
            "agency_id": ctx.agency(*(merged.get(k) for k in AGENCY_ATTRIBUTES)),
            "occurred_at": started,
            "provider": PROVIDERS.get(provider, provider),
            "model": model,
            "operation": OPERATIONS.get(operation, "other") if operation else "chat",
            "endpoint_host": _str(attrs, "server.address"),
            # Span level only: on a client span `cloud.region` is the region of the called
            # service; on the resource it is where the instrumented application runs, which
            # says nothing about where the model served the call.
            "region": _str(attrs, "cloud.region"),
            "input_tokens": _int(attrs, "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"),
            "output_tokens": _int(
                attrs, "gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens"
            ),
            "latency_ms": latency,
            "status": "error" if error else "ok",
            "use_case": _str(merged, USE_CASE_ATTRIBUTE),
        }
    )


def describe(item: SpanItem) -> str:
    return f"span {item.span.span_id.hex() or '?'} of trace {item.span.trace_id.hex() or '?'}"


def response(rejected: int, message: str) -> ExportTraceServiceResponse:
    """Full success leaves partial_success unset, as the OTLP specification asks."""
    out = ExportTraceServiceResponse()
    if rejected or message:
        out.partial_success.rejected_spans = rejected
        out.partial_success.error_message = message
    return out


def encode(message: Any, content_type: str) -> bytes:
    if content_type == "application/x-protobuf":
        data: bytes = message.SerializeToString()
        return data
    text: str = json_format.MessageToJson(message, indent=None)
    return text.encode()
