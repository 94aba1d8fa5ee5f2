"""The writer: a batch of classified rows -> ClickHouse, each record landing at most once.

How a record counts once (at-least-once delivery + idempotent landing):
1. duplicates inside the batch are dropped (first one wins);
2. keys already in `usage_keys` are dropped: that table is filled by the same INSERT as
   `usage_raw` (materialized view), so a key exists only once its record was durably written,
   and a record retried after a failure is never counted zero times;
3. the insert carries a deduplication token derived from its keys, with
   `deduplicate_blocks_in_dependent_materialized_views`, so an insert retried after an
   ambiguous failure (written, but the answer was lost) is dropped by ClickHouse itself from the
   raw table and from every rollup alike.
Rollups are fed by materialized views from the deduplicated insert, so they stay exact without
FINAL on the read path.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from clickhouse_connect.driver.client import Client

from pipeline.processor import COLUMNS, KEY_GATEWAY, KEY_RECORD, Rejection

_KEY_CHUNK = 5_000
_INSERT_SETTINGS = {
    "deduplicate_blocks_in_dependent_materialized_views": 1,
}


@dataclass(frozen=True)
class WriteResult:
    inserted: int
    duplicates: int


class Writer:
    def __init__(self, client: Client) -> None:
        self.client = client

    def _existing(self, keys: list[tuple[str, str]]) -> set[tuple[str, str]]:
        found: set[tuple[str, str]] = set()
        for start in range(0, len(keys), _KEY_CHUNK):
            chunk = keys[start : start + _KEY_CHUNK]
            rows = self.client.query(
                "SELECT gateway_id, record_id FROM usage_keys "
                "WHERE (gateway_id, record_id) IN {keys:Array(Tuple(String, String))}",
                parameters={"keys": chunk},
            ).result_rows
            found.update((str(g), str(r)) for g, r in rows)
        return found

    def write(self, rows: list[tuple[Any, ...]]) -> WriteResult:
        if not rows:
            return WriteResult(0, 0)
        unique: dict[tuple[str, str], tuple[Any, ...]] = {}
        for row in rows:
            unique.setdefault((row[KEY_GATEWAY], row[KEY_RECORD]), row)
        existing = self._existing(list(unique))
        fresh = [row for key, row in unique.items() if key not in existing]
        if fresh:
            digest = hashlib.sha256()
            for row in fresh:
                digest.update(f"{row[KEY_GATEWAY]}\x00{row[KEY_RECORD]}\x01".encode())
            self.client.insert(
                "usage_raw",
                fresh,
                column_names=list(COLUMNS),
                settings={**_INSERT_SETTINGS, "insert_deduplication_token": digest.hexdigest()},
            )
        return WriteResult(inserted=len(fresh), duplicates=len(rows) - len(fresh))

    def write_rejections(
        self, rejections: list[Rejection], topic: str, partition: int, offset: int
    ) -> None:
        if not rejections:
            return
        now = datetime.now(UTC)
        self.client.insert(
            "usage_rejects",
            [
                [now, topic, partition, offset, r.record_index, r.gateway_id, r.field, r.reason,
                 r.payload]
                for r in rejections
            ],
            column_names=[
                "rejected_at", "source_topic", "source_partition", "source_offset",
                "record_index", "gateway_id", "field", "reason", "payload",
            ],
        )  # fmt: skip
