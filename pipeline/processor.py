"""The pure processor: message bytes -> classified rows, or rejections with their reason.

No I/O here, so it is tested without any server and reused by the embedded hand-off, the Kafka
consumer and replay alike.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson
from pydantic import ValidationError

from tracker import contract_fast, json_read
from tracker.classify import UNKNOWN_AGENCY, Classifier
from tracker.contract import (
    Operation,
    Status,
    UsageRecord,
    parse_record,
    validate_batch_json,
    validation_errors,
)

# Column order of usage_raw rows produced here (ingested_at is filled by ClickHouse).
COLUMNS: tuple[str, ...] = (
    "record_id", "gateway_id", "agency_id", "occurred_at", "provider", "model", "operation",
    "endpoint_host", "region", "request_count", "input_tokens", "output_tokens", "cost",
    "currency", "cost_reporting", "cost_converted", "latency_ms", "status", "energy_wh",
    "use_case", "schema_version", "tier", "facility_id", "facility_country", "operator",
    "sector", "channel", "classification_rule", "registry_version", "source_partition",
    "source_offset",
)  # fmt: skip
KEY_GATEWAY = COLUMNS.index("gateway_id")
KEY_RECORD = COLUMNS.index("record_id")

_ZERO = Decimal(0)
# What a rejection keeps of what was refused (a whole message, or one record as JSON): a dead
# letter must fit the dead-letter topic's message size (1 MiB by default) however large a
# message the live topic took, or the letter's send would fail and stall its partition.
CLIP_BYTES = 64 * 1024


@dataclass(frozen=True)
class Rejection:
    record_index: int  # -1: the whole message was unreadable
    gateway_id: str
    field: str
    reason: str
    payload: str
    # The payload is only the first CLIP_BYTES of what was refused (dead letters name it
    # `payload_cut`): the whole is still at the letter's source place while retention keeps it.
    cut: bool = False


@dataclass
class Processed:
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)


# What a row takes from the registry, per (provider, region, endpoint_host, agency_id): tier,
# facility_id, facility_country, operator, sector, channel, classification_rule,
# registry_version. Bounded like the classifier's own cache (the four are caller-controlled).
_Derived = tuple[str, str, str, str, str, str, str, str]
_DERIVED_LIMIT = 100_000
_OPERATIONS = {op: op.value for op in Operation}
_STATUSES = {st: st.value for st in Status}


_Key = tuple[str, str | None, str | None, str]


@dataclass(frozen=True)
class _Version:
    """Everything a row takes from one registry version: the pinned classifier view, its
    conversion rates, and the classifications derived from it so far."""

    view: Classifier
    fx: dict[str, Decimal]
    derived: dict[_Key, _Derived]


class Processor:
    def __init__(self, classifier: Classifier) -> None:
        self.classifier = classifier
        self._version: _Version | None = None

    def _follow_registry(self) -> _Version:
        # Conversion rates and classifications come from the registry: follow the classifier
        # when it is swapped to a newer version, so cost and tier always come from the same
        # version. A row reads only the version taken here, published whole by one assignment:
        # read through the classifier, a swap on the watcher's thread between the rate and the
        # tier gave one row two versions; and with rates, view and cache in three attributes,
        # a request thread of the embedded ingest (several share one processor) still deriving
        # by the old view stored its result in the new version's cache, and the route kept the
        # old tier until the next change (both found in review). Compared by identity, not by
        # `registry.version`: that property hashes the whole registry (~1.5 ms), which on every
        # record capped the processor at a few hundred records/s.
        view = self.classifier.pinned()
        version = self._version
        if version is None or version.view is not view:
            fx = {k.upper(): v for k, v in view.registry.fx_to_reporting.items()}
            version = _Version(view, fx, {})
            self._version = version
        return version

    @staticmethod
    def _derive(version: _Version, key: _Key) -> _Derived:
        provider, region, host, agency_id = key
        c = version.view.classify(provider, region, host)
        agency = version.view.agency(agency_id) or UNKNOWN_AGENCY
        derived = (
            c.tier.value, c.facility_id, c.facility_country, c.operator, agency.sector,
            agency.channel, c.rule, c.registry_version,
        )  # fmt: skip
        if len(version.derived) < _DERIVED_LIMIT:
            version.derived[key] = derived
        return derived

    def row(self, record: UsageRecord, partition: int = -1, offset: int = -1) -> tuple[Any, ...]:
        return self.row_of(record.__dict__, partition, offset)

    def row_of(self, r: dict[str, Any], partition: int = -1, offset: int = -1) -> tuple[Any, ...]:
        """The row of one record's validated field values (a UsageRecord's __dict__, or what
        contract_fast.decode_values gives without building the record)."""
        # Runs for every record: one cache lookup for everything the registry decides, then a
        # plain tuple (~1.5 us instead of ~3 when each part was looked up on its own).
        version = self._follow_registry()
        key = (r["provider"], r["region"], r["endpoint_host"], r["agency_id"])
        d = version.derived.get(key) or self._derive(version, key)
        cost, currency = r["cost"], r["currency"]
        rate = version.fx.get(currency) if cost is not None and currency is not None else None
        cost_reporting, converted = (_ZERO, 0) if rate is None else (cost * rate, 1)
        return (
            r["record_id"], r["gateway_id"], r["agency_id"], r["occurred_at"], r["provider"],
            r["model"], _OPERATIONS[r["operation"]], r["endpoint_host"] or "", r["region"] or "",
            r["request_count"], r["input_tokens"], r["output_tokens"], cost, currency or "",
            cost_reporting, converted, r["latency_ms"], _STATUSES[r["status"]], r["energy_wh"],
            r["use_case"] or "", r["schema_version"], d[0], d[1], d[2], d[3], d[4], d[5], d[6],
            d[7], partition, offset,
        )  # fmt: skip

    def process_records(
        self, records: list[UsageRecord], partition: int = -1, offset: int = -1
    ) -> Processed:
        return Processed(rows=[self.row(r, partition, offset) for r in records])

    def process_message(self, value: bytes, partition: int = -1, offset: int = -1) -> Processed:
        """One Kafka message: a JSON array of records (or one object). Each record stands or
        falls on its own; a message that is not JSON at all is one rejection."""
        # What the collector writes: rows straight from the fast path's values, no records.
        if (batch := contract_fast.decode_values(value)) is not None:
            return Processed(rows=[self.row_of(v, partition, offset) for v in batch])
        records, rejections = read_by_contract(value)
        return Processed(rows=[self.row(r, partition, offset) for r in records],
                         rejections=rejections)  # fmt: skip


def read_message(value: bytes) -> tuple[list[UsageRecord], list[Rejection]]:
    """A message's records that pass the contract, and a rejection for each field of each one
    that does not (no registry needed: replay sorts what it re-submits with this)."""
    # Fast path: a well-formed message (what the collector writes), by tracker.contract_fast.
    records = contract_fast.decode_batch(value)
    return read_by_contract(value) if records is None else (records, [])


def read_by_contract(value: bytes) -> tuple[list[UsageRecord], list[Rejection]]:
    """read_message by pydantic alone: for a message the fast path did not vouch for."""
    # A message whose records are all valid is validated from its bytes in one pydantic-core
    # call, ~15% faster than parsing then validating each record (bench/RESULTS.md). Any
    # failure (not JSON, not an array, one bad record) falls through to the per-record path
    # below, which names each refused record and field.
    try:
        return validate_batch_json(value), []
    except ValidationError:
        pass
    records: list[UsageRecord] = []
    rejections: list[Rejection] = []
    try:
        data = json_read.loads(value, items=True)
    except json_read.JSONError as exc:
        whole = Rejection(-1, "", "message", f"not JSON: {exc}", clip(value),
                          len(value) > CLIP_BYTES)  # fmt: skip
        return records, [whole]
    items = data if isinstance(data, list) else [data]
    for index, item in enumerate(items):
        if isinstance(item, json_read.Unencodable):  # a lone surrogate: refused alone
            escaped = item.payload.encode()
            rejections.append(Rejection(index, "", item.field, item.reason, clip(escaped),
                                        len(escaped) > CLIP_BYTES))  # fmt: skip
            continue
        gateway = str(item.get("gateway_id", ""))[:128] if isinstance(item, dict) else ""
        try:
            records.append(parse_record(item))
        except TypeError as exc:
            rejections.append(Rejection(index, gateway, "record", str(exc), *record_payload(item)))
        except ValidationError as exc:
            dumped = record_payload(item)  # once for the record's refused fields
            for err in validation_errors(index, exc):
                rejections.append(Rejection(index, gateway, err.field, err.reason, *dumped))
    return records, rejections


def clip(value: bytes) -> str:
    """What a rejection keeps of `value` (its start, as text)."""
    return value[:CLIP_BYTES].decode("utf-8", errors="replace")


UNENCODABLE = "<not written: nested too deep to encode>"


def record_payload(item: Any) -> tuple[str, bool]:
    """A refused record as JSON for its rejection, and whether that was cut (`tracker dlq
    replay` writes a record read back again so, to know it for the one refused)."""
    try:
        encoded = orjson.dumps(item, default=str)
    except TypeError:
        # An integer beyond 64 bits (read by json_read), or nesting past orjson's 255 levels
        # (it reads 1024): the standard library, unless that goes no deeper either (found in
        # review: its RecursionError made every replay of such a message a traceback).
        try:
            encoded = json.dumps(item, default=str).encode()
        except RecursionError:
            return UNENCODABLE, False
    return clip(encoded), len(encoded) > CLIP_BYTES
