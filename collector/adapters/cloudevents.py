"""CloudEvents 1.0: a strict model of the specification's context attributes, and the event
types the tracker accepts.

Types (the `type` attribute):
  org.sovereignty-tracker.usage.v1        `data` is one usage record in the contract's fields
                                          (docs/usage-record.schema.json); gateway_id is never
                                          taken from it
  org.sovereignty-tracker.opengatellm.v1  `data` is one OpenGateLLM usage row
  org.sovereignty-tracker.litellm.v1      `data` is one LiteLLM StandardLoggingPayload

record_id: `data.record_id` when given, else the source format's own id (see its adapter), else
`ce:` + SHA-256 of the event's `source` and `id` (see _event_record_id), which the
specification makes unique per distinct event: a producer resending the same event resends the
same pair. The agency: `data.agency_id`, else the extension attribute `agencyid`, else the
gateway's only agency; named by anything but a string (`agencyid` is allowed integers and
booleans as an extension, `data` is any JSON), the event is refused, never given the default.
A usage record without `occurred_at` takes the event's `time`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from datetime import datetime
from typing import Annotated, Any, Final, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from collector.adapters import litellm, opengatellm
from collector.adapters.common import Context, SourceError, require_object
from tracker import json_read
from tracker.contract import UsageRecord

USAGE_TYPE: Final = "org.sovereignty-tracker.usage.v1"
OPENGATELLM_TYPE: Final = "org.sovereignty-tracker.opengatellm.v1"
LITELLM_TYPE: Final = "org.sovereignty-tracker.litellm.v1"
TYPES: Final = (USAGE_TYPE, OPENGATELLM_TYPE, LITELLM_TYPE)

# CloudEvents 1.0 (spec.md, "Attribute Naming Convention"): names MUST be lowercase ASCII
# letters or digits; that they "SHOULD NOT exceed 20 characters" is advice to producers, not a
# rule, so a longer name is accepted (a refusal would lose the event's usage over a naming style).
_EXTENSION_NAME: Final = re.compile(r"[a-z0-9]+")
_URI_SCHEME: Final = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
NonEmpty = Annotated[StrictStr, Field(min_length=1, max_length=2048)]


class CloudEvent(BaseModel):
    """A CloudEvent 1.0 in the JSON event format; extension attributes are kept as extras."""

    model_config = ConfigDict(extra="allow", frozen=True)

    specversion: Literal["1.0"]
    id: NonEmpty
    source: NonEmpty
    type: NonEmpty
    datacontenttype: NonEmpty | None = None
    dataschema: NonEmpty | None = None
    subject: NonEmpty | None = None
    time: datetime | None = None
    data: Any = None
    data_base64: StrictStr | None = None

    @field_validator("time", mode="before")
    @classmethod
    def _rfc3339_text(cls, value: Any) -> Any:
        # The contract's own check of occurred_at: pydantic's lax datetime reads a number, or a
        # string of digits, as Unix time, where the specification says RFC 3339 (found in
        # review: a count or a millisecond stamp sent as `time` would land decades away).
        return value if value is None else UsageRecord._date_time_text(value)

    @field_validator("time")
    @classmethod
    def _zoned(cls, value: datetime | None) -> datetime | None:
        # Here rather than in _spec_rules, so the refusal names the field `time`.
        if value is not None and value.tzinfo is None:
            raise ValueError("time must be an RFC 3339 timestamp with a zone offset")
        return value

    @model_validator(mode="after")
    def _spec_rules(self) -> CloudEvent:
        if self.dataschema is not None and not _URI_SCHEME.match(self.dataschema):
            raise ValueError("dataschema must be an absolute URI")
        if self.data is not None and self.data_base64 is not None:
            raise ValueError("data and data_base64 are mutually exclusive")
        for name, value in (self.model_extra or {}).items():
            if not _EXTENSION_NAME.fullmatch(name):  # fullmatch: "$" would pass "name\n"
                raise ValueError(f"attribute name {name!r}: use lowercase letters a-z or digits")
            if not isinstance(value, str | int | bool) or isinstance(value, float):
                raise ValueError(f"extension {name!r} must be a string, integer or boolean")
        return self

    def payload(self) -> Any:
        """`data`, or `data_base64` decoded (and parsed when its content type is JSON)."""
        if self.data_base64 is None:
            return self.data
        try:
            raw = base64.b64decode(self.data_base64, validate=True)
        except binascii.Error as exc:
            raise SourceError("data_base64", "not valid base64") from exc
        content_type = (self.datacontenttype or "application/json").split(";")[0].strip()
        if content_type == "application/json" or content_type.endswith("+json"):
            try:  # json_read: a number orjson cannot hold is refused by the field holding it
                return json_read.loads(raw)
            except json_read.JSONError as exc:
                raise SourceError("data_base64", f"not valid JSON: {exc}") from exc
        raise SourceError("datacontenttype", f"{content_type!r} data is not a usage record")


def _event_record_id(source: str, event_id: str) -> str:
    r"""`ce:` + SHA-256 of the pair, written so that no two distinct pairs give the same text.

    Joined by a newline alone, source "a\nb" with id "c" and source "a" with id "b\nc" were one
    text: two distinct events shared a record id and the second counted as a resend of the
    first (found in review). A pair without a newline keeps that join, which is unambiguous
    for it (the text's only newline is the separator) and is what earlier releases hashed, so
    an event they ingested keeps its id and its resend after an upgrade still counts once.
    CloudEvents ids and sources are single-line in practice (URI-references, short ids), so
    that is nearly every event. A pair with a newline is hashed as the JSON array [source, id]
    instead: unambiguous, and holding no raw newline (JSON escapes it), it never equals a
    joined text. Such events ingested by an earlier release get a new id: one resend of them
    across the upgrade would count twice, the price of no longer merging distinct events."""
    if "\n" in source or "\n" in event_id:
        text = orjson.dumps([source, event_id])
    else:
        text = f"{source}\n{event_id}".encode()
    return f"ce:{hashlib.sha256(text).hexdigest()[:40]}"


def parse_event(item: Any) -> CloudEvent:
    try:
        return CloudEvent.model_validate(require_object(item))
    except ValidationError as exc:
        err = exc.errors(include_url=False, include_input=False)[0]
        field = ".".join(str(p) for p in err["loc"]) or "event"
        raise SourceError(field, err["msg"].removeprefix("Value error, ")) from exc


def _extension_agency(event: CloudEvent, ctx: Context) -> str | None:
    """The agency the event's `agencyid` extension names, else the fallback `ctx` has.

    Through Context.agency, as every adapter's agency: the extension may hold an integer or a
    boolean (the model allows them), and one was passed over for the gateway's default, so an
    event naming agency 42 counted for another agency (found in review). Blank is not naming
    one, as elsewhere."""
    named = (event.model_extra or {}).get("agencyid")
    if named is None or (isinstance(named, str) and not named.strip()):
        return ctx.default_agency
    try:
        return ctx.agency(named)
    except SourceError as exc:  # named by a non-string: refused, naming the attribute
        raise SourceError("agencyid", exc.reason) from exc


def map_event(item: Any, ctx: Context) -> dict[str, Any] | None:
    event = parse_event(item)
    if event.type not in TYPES:
        raise SourceError("type", f"unsupported event type {event.type!r}; use one of {TYPES}")
    scoped = Context(
        default_agency=_extension_agency(event, ctx),
        agencies=ctx.agencies,
        defaults=ctx.defaults,
    )
    data = event.payload()
    if not isinstance(data, dict):
        raise SourceError("data", "data must be a JSON object")
    if event.type == OPENGATELLM_TYPE:
        return opengatellm.map_row(data, scoped)
    if event.type == LITELLM_TYPE:
        return litellm.map_any(data, scoped)
    record = dict(data)
    # Absent or empty only, for both: a falsy non-string (0, false, []) names an id or an
    # agency, wrongly, and is left for the contract to refuse; `not` replaced it (found in
    # review).
    if record.get("record_id") in (None, ""):
        record["record_id"] = _event_record_id(event.source, event.id)
    if record.get("agency_id") in (None, ""):
        record["agency_id"] = scoped.agency()
    if record.get("occurred_at") is None and event.time is not None:
        record["occurred_at"] = event.time
    return record
