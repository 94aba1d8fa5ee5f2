"""The record contract: one usage record as it travels on the `usage.v1` topic.

One record is one or more inferences by one agency through one gateway. The model is the single
definition every hop validates against; its JSON Schema in docs/ is generated from it
(`tracker schema`), never written by hand.
"""

from __future__ import annotations

import functools
import math
import re
import time
import zlib
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Final, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
)

SCHEMA_VERSION: Final = 1
TOPIC: Final = "usage.v1"
DLQ_TOPIC: Final = "usage.dlq.v1"

# Bounds a caller controls; anything larger is refused rather than truncated so that nothing is
# silently altered on the way to the auditors.
MAX_ID_LEN: Final = 128
MAX_NAME_LEN: Final = 256
MAX_REGION_LEN: Final = 64
MAX_REQUEST_COUNT: Final = 10_000_000
MAX_TOKENS: Final = 10**12
MAX_COST: Final = Decimal("1e12")
# Records from the future are clock errors; a little skew is tolerated.
MAX_CLOCK_SKEW: Final = timedelta(minutes=15)
EARLIEST: Final = datetime(2015, 1, 1, tzinfo=UTC)


class _FutureLimit:
    """now + MAX_CLOCK_SKEW, re-read at most once a second: this runs for every record on the
    ingest hot path, and a second of staleness is nothing against 15 minutes of tolerance."""

    def __init__(self) -> None:
        self._tick = float("-inf")
        self._limit = EARLIEST

    def __call__(self) -> datetime:
        tick = time.monotonic()
        if tick - self._tick > 1.0:
            self._tick, self._limit = tick, datetime.now(UTC) + MAX_CLOCK_SKEW
        return self._limit


latest_plausible = _FutureLimit()

ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._:/@-]*$"
_ID_RE: Final = re.compile(ID_PATTERN)


def is_identifier(text: str) -> bool:
    """Whether `text` is an identifier as the contract takes it (record, gateway or agency id).
    Matched whole: `$` alone also matches before a last newline."""
    return len(text) <= MAX_ID_LEN and _ID_RE.fullmatch(text) is not None


_CURRENCY_RE: Final = re.compile(r"^[A-Z]{3}$")


class Operation(StrEnum):
    chat = "chat"
    completion = "completion"
    embeddings = "embeddings"
    image = "image"
    audio = "audio"
    rerank = "rerank"
    other = "other"


class Status(StrEnum):
    ok = "ok"
    error = "error"


class Tier(StrEnum):
    sovereign = "sovereign"
    onshore = "onshore"
    offshore = "offshore"
    unknown = "unknown"


Identifier = Annotated[str, Field(min_length=1, max_length=MAX_ID_LEN, pattern=_ID_RE.pattern)]
# No control characters in names and codes: a line break inside a model name split a CSV export's
# row in two, and the export counts rows by line (found in review); no gateway names a model so.
_PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
# Exported for the API's filters, which must accept every name a record may carry.
NAME_PATTERN: Final = _PRINTABLE
Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME_LEN, pattern=_PRINTABLE)]
# A double holds 15 significant decimal digits exactly: a cost sent as a JSON number with more
# was rounded on the way in (found in review); sent as a string, it keeps all 21 the column has.
FLOAT_COST_DIGITS: Final = 15
# Counts are JSON integers written as integers: pydantic's lax mode would also read `true` as 1,
# "12" as 12 and 12.0 as 12, none of which the schema (`integer`) allows (found in review).
Count = Annotated[int, Strict()]


def utc_and_plausible(value: datetime) -> datetime:
    """A record's timestamp as stored: in UTC, to the millisecond, between EARLIEST and a little
    past now; ValueError with the reason otherwise (the contract's rule, also run by
    tracker.contract_fast)."""
    # Runs for every record at every hop, so a step that changes nothing is skipped. The
    # zone is always replaced, though: pydantic parses `Z` into a zone object of its own,
    # and every later comparison and encoding of the record is faster with the stdlib UTC
    # (keeping pydantic's cost 0.6 us per record more than this ~0.2 us astimezone).
    zone = value.tzinfo
    if zone is not UTC:
        if zone is None:
            raise ValueError("timestamp must carry a timezone (UTC, e.g. 2026-01-01T00:00:00Z)")
        try:
            value = value.astimezone(UTC)
        except OverflowError:  # year 1 east of UTC, year 9999 west of it
            raise ValueError("timestamp is out of range") from None
    if value.microsecond % 1000:
        value = value.replace(microsecond=value.microsecond // 1000 * 1000)
    if value < EARLIEST:
        raise ValueError(f"timestamp before {EARLIEST.date()} is not plausible")
    if value > latest_plausible():
        raise ValueError("timestamp is in the future")
    return value


class UsageRecord(BaseModel):
    """One metered usage record (schema_version 1)."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        str_strip_whitespace=True,
        json_schema_extra={"$id": "https://tracker.example/schemas/usage.v1.json"},
    )

    record_id: Identifier = Field(
        description="Gateway's request id, or a stable hash of the source line; "
        "with gateway_id the idempotency key."
    )
    gateway_id: Identifier = Field(
        description="Set by the collector from the authenticated gateway, never from the payload."
    )
    agency_id: Identifier = Field(description="A registered public body.")
    occurred_at: datetime = Field(description="Request start, UTC, millisecond precision.")
    provider: Name = Field(description="Provider as the gateway saw it, e.g. azure_openai.")
    model: Name = Field(description="Model as the gateway saw it, e.g. gpt-4o.")
    operation: Operation = Operation.chat
    endpoint_host: Annotated[str, Field(max_length=253, pattern=_PRINTABLE)] | None = Field(
        default=None, description="Host that served the request (server.address)."
    )
    region: Annotated[str, Field(max_length=MAX_REGION_LEN, pattern=_PRINTABLE)] | None = Field(
        default=None, description="Cloud region code, e.g. centralindia, ap-south-1."
    )
    request_count: Count = Field(default=1, ge=1, le=MAX_REQUEST_COUNT)
    input_tokens: Count = Field(default=0, ge=0, le=MAX_TOKENS)
    output_tokens: Count = Field(default=0, ge=0, le=MAX_TOKENS)
    cost: Decimal | None = Field(
        default=None, ge=0, le=MAX_COST, decimal_places=9,
        description="In `currency`, at most 9 decimals. As a JSON number at most 15 significant "
        "digits (what a double holds exactly); as a string, all of them.",
    )  # fmt: skip
    currency: str | None = Field(
        default=None, validate_default=True, description="ISO 4217 code, required with cost."
    )
    latency_ms: Count | None = Field(default=None, ge=0, le=86_400_000)
    status: Status = Status.ok
    energy_wh: Annotated[float, Strict()] | None = Field(
        default=None, ge=0, le=1e12, allow_inf_nan=False
    )
    use_case: Annotated[str, Field(max_length=64, pattern=_PRINTABLE)] | None = None
    schema_version: Count = Field(default=SCHEMA_VERSION, ge=SCHEMA_VERSION, le=SCHEMA_VERSION)

    @field_validator("occurred_at", mode="before")
    @classmethod
    def _date_time_text(cls, value: Any) -> Any:
        # Lax mode reads a number, or a string of digits, as Unix time, which the schema
        # (`date-time`) does not allow and no gateway means: a count or a millisecond stamp in
        # the wrong field would land decades away (found in review).
        if type(value) is str:
            if value[4:5] != "-":
                raise ValueError(
                    "timestamp must be an RFC 3339 date-time, e.g. 2026-01-01T00:00:00Z"
                )
        elif not isinstance(value, datetime):
            raise ValueError("timestamp must be an RFC 3339 date-time string, not a number")
        return value

    @field_validator("occurred_at")
    @classmethod
    def _utc_and_plausible(cls, value: datetime) -> datetime:
        return utc_and_plausible(value)

    @field_validator("cost", mode="before")
    @classmethod
    def _exact_cost(cls, value: Any) -> Any:
        # A JSON number arrives as a double. Up to 15 significant digits it is exactly the
        # decimal sent (its shortest form is that decimal); more could have been rounded, and
        # an altered cost must be refused, not stored.
        if isinstance(value, float) and math.isfinite(value):
            text = repr(value)
            digits = text.split("e")[0].replace("-", "").replace(".", "").strip("0")
            if len(digits) > FLOAT_COST_DIGITS:
                raise ValueError(
                    f"a cost with more than {FLOAT_COST_DIGITS} significant digits cannot be "
                    'sent exactly as a JSON number: send it as a string (e.g. "12.345678901")'
                )
            return Decimal(text)
        return value

    @field_validator("currency")
    @classmethod
    def _iso_currency(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None and info.data.get("cost") is not None:
            raise ValueError("currency is required when cost is given")
        if value is not None and not _CURRENCY_RE.match(value):
            raise ValueError("currency must be an ISO 4217 code of three capital letters")
        return value

    @field_validator("endpoint_host", "region", "use_case")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value or None


# How much of a refusal's field name and reason an answer carries. Both can hold text from the
# request (a field is named by the caller's key, a reason may quote a value): found in review,
# 1,000 records with one 15,000-character key each (20 KB gzipped) answered a 15 MB 422.
FIELD_ERROR_FIELD_CHARS: Final = 128
FIELD_ERROR_REASON_CHARS: Final = 300


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


class FieldError(BaseModel):
    """Why one record of a batch was refused."""

    index: int
    field: str
    reason: str

    @field_validator("field")
    @classmethod
    def _field_cut(cls, value: str) -> str:
        return _cut(value, FIELD_ERROR_FIELD_CHARS)

    @field_validator("reason")
    @classmethod
    def _reason_cut(cls, value: str) -> str:
        return _cut(value, FIELD_ERROR_REASON_CHARS)


def validation_errors(index: int, exc: ValidationError) -> list[FieldError]:
    """Flatten pydantic's errors into (index, dotted field, reason) rows callers can act on."""
    rows: list[FieldError] = []
    for err in exc.errors(include_url=False, include_input=False):
        field = ".".join(str(p) for p in err["loc"]) or "record"
        reason = err["msg"].removeprefix("Value error, ")
        rows.append(FieldError(index=index, field=field, reason=reason))
    return rows


def parse_record(data: Any, *, gateway_id: str | None = None) -> UsageRecord:
    """Validate one record; `gateway_id`, when given, overrides whatever the payload said."""
    if not isinstance(data, dict):
        raise TypeError("record must be a JSON object")
    if gateway_id is not None:
        data = {**data, "gateway_id": gateway_id}
    return UsageRecord.model_validate(data)


def json_schema() -> dict[str, Any]:
    return UsageRecord.model_json_schema(mode="validation")


# fail_fast: the first bad record ends the one-call validation, whose callers then go record by
# record to name each refusal anyway. Without it pydantic collected every error of every item
# first: a body of 1.4M `{}` (4 KiB gzipped) built 3.5M error objects, 2.7 GiB and 10 s, before
# the batch-size check could refuse it (found in review).
_BATCH = TypeAdapter(Annotated[list[UsageRecord], Field(fail_fast=True)])


class _Submitted(UsageRecord):
    """A record as a gateway submits it: its gateway_id, if any, is not read (the credential's
    replaces it), so it is not validated either, as in parse_record."""

    gateway_id: Any = None


@functools.lru_cache(maxsize=8)
def _submitted(max_records: int) -> TypeAdapter[list[_Submitted]]:
    # max_length is checked as the items are read: a batch over the limit stops there, before
    # the rest are built (the caller's count check then refuses it). fail_fast: see _BATCH.
    return TypeAdapter(Annotated[list[_Submitted], Field(max_length=max_records, fail_fast=True)])


def validate_submitted_json(body: bytes, gateway_id: str, max_records: int) -> list[UsageRecord]:
    """A whole submitted batch (a JSON array of records) validated from its bytes in one call,
    each record's gateway_id set to `gateway_id`: what parse_record does record by record, in
    ~75% of the time (no parsed dicts, one call into pydantic's core). Raises ValidationError if
    anything in it is wrong, at the first wrong record, or past `max_records` records; callers
    then go record by record to name each refusal (or count the batch to refuse it whole)."""
    if not is_identifier(gateway_id):
        # Never expected (gateway ids are checked when registered); the record-by-record path
        # then refuses every record with the reason.
        raise ValueError(f"gateway id {gateway_id[:40]!r} is not an identifier")
    records = _submitted(max_records).validate_json(body)
    for record in records:
        # The records are frozen; this is their construction's last step, before anyone
        # holds them (a copy per record would cost a third of the saving).
        object.__setattr__(record, "gateway_id", gateway_id)
    return list[UsageRecord](records)


def validate_batch_json(body: bytes) -> list[UsageRecord]:
    """A whole Kafka message (a JSON array of records) validated from its bytes in one call.
    Raises ValidationError if anything in it is wrong; callers that must name each bad record
    then go record by record (parse_record), which accepts exactly the same records."""
    return _BATCH.validate_json(body)


def encode_batch(records: list[UsageRecord]) -> bytes:
    """A Kafka message body: a JSON array of records of one shard. Serialized by pydantic's
    core in one call (same bytes as dumping each record, in ~60% of the time: a hot path)."""
    return _BATCH.dump_json(records, exclude_none=True)


def shard_of(gateway_id: str, record_id: str, shards: int) -> int:
    """The shard of a record's identity (gateway_id, record_id): every copy of a record, under
    whatever agency it is sent, goes to one shard and so to one partition, where one group member
    lands it. crc32, not hash(): the same in every process and release."""
    return zlib.crc32(f"{gateway_id}\x1f{record_id}".encode()) % shards


SHARD_KEY_PREFIX: Final = b"shard:"


def shard_key(shard: int) -> bytes:
    """A message's Kafka key: its shard, which tracker.topics.ShardPartitioner reads."""
    return SHARD_KEY_PREFIX + b"%d" % shard


T = TypeVar("T")


def by_shard(
    records: list[UsageRecord], shards: int, per_message: int
) -> list[tuple[int, list[UsageRecord]]]:
    """Group records by the shard of their identity and cut each group into messages of at most
    `per_message` records, in the order they came."""
    keys = [shard_of(r.gateway_id, r.record_id, shards) for r in records]
    return cut_by_shard(records, keys, per_message)


def cut_by_shard(
    items: Sequence[T], keys: Sequence[int], per_message: int
) -> list[tuple[int, list[T]]]:
    """`items` grouped by their shard (`keys[i]` is items[i]'s) and cut into messages of at most
    `per_message`, in the order they came."""
    groups: dict[int, list[T]] = defaultdict(list)
    for item, shard in zip(items, keys, strict=True):
        groups[shard].append(item)
    return [
        (shard, group[start : start + per_message])
        for shard, group in groups.items()
        for start in range(0, len(group), per_message)
    ]
