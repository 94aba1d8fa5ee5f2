"""The writer: a batch of classified rows -> ClickHouse, each record landing exactly once.

Delivery is at-least-once (gateway retries, redelivery after a crash or rebalance), so landing
is idempotent, keyed by (gateway_id, record_id). A batch lands in four steps, each idempotent
(under a deduplication token derived from the batch id, or as an upsert):
  1. raw rows -> usage_raw            (token raw-B; one part per month)
  2. keys     -> usage_key_index      (INSERT ... SELECT from step 1's rows; a key-value upsert)
  3. rollups  -> usage_hourly, then usage_daily
                                      (INSERT ... SELECT ... GROUP BY, tokens hourly-B, daily-B)
  4. ledger   -> landed_batches
(The statements are in tracker/rollups.py.)
Before a batch is written, records whose key is already in usage_key_index are dropped, and so are
duplicates inside the batch. A crash between steps leaves a batch in usage_raw but not in
landed_batches; `repair()` finishes steps 2-4 for every such batch, and runs before any new
work (start-up, and every partition assignment), so the key check always sees every landed
record. A re-run step can be lost to the engine itself (a crash between recording a token and
making its part visible), so the re-run is checked against usage_raw: the repair finds which of
the batch's months a rollup still lacks, allowing for other members' batches in flight, and
inserts those again (rollups.restore_batch).
Hence a dedup mark is set only after the durable write (a retried record is never counted zero
times), and a record delivered twice never counts twice, in the raw table or in the rollup,
without FINAL on the read path.
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

from clickhouse_connect.driver.client import Client

from pipeline.processor import COLUMNS, KEY_GATEWAY, KEY_RECORD, Rejection
from tracker import rollups
from tracker.contract import ID_PATTERN

log = logging.getLogger(__name__)

_KEY_CHUNK = 50_000  # keys per check query (~2 MB of query text)
RAW_COLUMNS = [*COLUMNS, "batch_id"]
_KEY_RE = re.compile(ID_PATTERN)
_KEY_OF = itemgetter(KEY_GATEWAY, KEY_RECORD)
_KEY_TEXT = re.compile(r"[A-Za-z0-9._:/@ \n-]+")  # identifier characters and the separators

# A repair pass at a rebalance looks back this far; start-up looks at everything.
REPAIR_LOOKBACK_NS = 24 * 3600 * 10**9


@dataclass(frozen=True)
class WriteResult:
    inserted: int
    duplicates: int


def new_batch_id() -> int:
    # Grows with time (the minmax index relies on it); random low digits keep two processes
    # that start a batch in the same microsecond apart.
    return time.time_ns() // 1000 * 1000 + secrets.randbelow(1000)


class Writer:
    # One writer per process lands at a time: the key check and the insert must not interleave
    # with another landing of the same records (e.g. two HTTP retries at once, embedded).
    _lock = threading.Lock()

    def __init__(self, client: Client) -> None:
        self.client = client
        # Batches this writer started but did not see through (an error in any step), with
        # their raw rows: they are finished before anything else, or the key check would skip
        # their records while their rollup is still missing.
        self._unfinished: list[tuple[int, list[tuple[Any, ...]]]] = []

    def _existing(self, keys: list[tuple[str, str]]) -> set[tuple[str, str]]:
        found: set[tuple[str, str]] = set()
        for start in range(0, len(keys), _KEY_CHUNK):
            chunk = keys[start : start + _KEY_CHUNK]
            # Point lookups in the key-value index (migration 0006), whatever its size. The
            # keys travel as one TSV string literal read by the format() table function:
            # ClickHouse parses that ~4x faster than a list of 50k literals, and Python only
            # joins strings (clickhouse-connect binds parameters one character at a time, which
            # once made this check a third of the pipeline; bench/RESULTS.md). Safe by
            # construction: every key is a contract identifier, with no quote, backslash,
            # space, tab or newline in it (_key_lines checks the whole text at once).
            tsv = _key_lines(chunk)
            sql = (
                "SELECT key FROM usage_key_index WHERE key IN "
                f"(SELECT k FROM format(TSV, 'k String', '{tsv}'))"
            )
            # raw_query: query() runs several regexes over the statement to classify it, which
            # over these 2 MB cost ~28 ms of the pipeline's CPU per 50k keys. The answer is
            # plain TSV lines, one key each, unescaped (no identifier has a character TSV
            # escapes).
            answer = self.client.raw_query(
                sql, settings={"max_query_size": len(sql) + 1024}, fmt="TabSeparated"
            )
            for line in answer.decode().splitlines():
                gateway, _, record = line.partition(" ")
                found.add((gateway, record))
        return found

    def write(self, rows: list[tuple[Any, ...]]) -> WriteResult:
        if not rows:
            return WriteResult(0, 0)
        with self._lock:
            self._finish_unfinished()
            # One row per key, the first of each winning (built back to front, so a later
            # duplicate is overwritten by an earlier one), without a Python loop per row.
            unique: dict[tuple[str, str], tuple[Any, ...]] = dict(
                zip(map(_KEY_OF, reversed(rows)), reversed(rows), strict=True)
            )
            existing = self._existing(list(unique))
            fresh = [row for key, row in unique.items() if key not in existing]
            if fresh:
                batch = new_batch_id()
                # Rows as they are. Over HTTP, clickhouse-connect's compiled codec takes them
                # for less CPU than a transpose here plus its column path; the embedded client
                # has only the Python codec, for which rows cost ~0.2 us more each than
                # columns (3.97 vs 3.77 us per row). The deploy's shape decides (RESULTS.md).
                tail = (batch,)
                raw = [row + tail for row in fresh]
                self._unfinished.append((batch, raw))
                self._insert_raw(batch, raw)
                self._complete(batch, len(fresh))
                self._unfinished.pop()
                # clickhouse-connect's insert context holds the rows and sits in a reference
                # cycle, so without this they lived on until the next cyclic collection, which
                # had to scan every one of them first: a batch's memory held twice, and the
                # pipeline's young collections ~20% of its CPU (bench/RESULTS.md, 2026-11-26).
                raw.clear()
        return WriteResult(inserted=len(fresh), duplicates=len(rows) - len(fresh))

    def _insert_raw(self, batch: int, raw: list[tuple[Any, ...]]) -> None:
        """Step 1. The same rows under the same token land once however often this runs: the
        engine keeps the token of each part it committed (one per month) and drops a part
        whose token it has seen (non_replicated_deduplication_window)."""
        self.client.insert(
            "usage_raw",
            raw,
            column_names=RAW_COLUMNS,
            settings={**rollups.SPAN, "insert_deduplication_token": f"raw-{batch}"},
        )

    def _finish_unfinished(self) -> None:
        while self._unfinished:
            batch, raw = self._unfinished[0]
            count = self._raw_count(batch)
            if count < len(raw):
                # The raw insert again, not given up: an insert the client gave up on (a
                # timeout over HTTP) may still be running on the server and commit later.
                # Landing the records under a new batch when none were in yet counted them
                # twice once it did (found in review); the same rows under the same token
                # land once, in either order, and finish a part-way insert's other months.
                self._insert_raw(batch, raw)
                count = self._raw_count(batch)
            rollups.complete_again(self.client, batch, count, [batch])
            self._unfinished.pop(0)
            raw.clear()  # as in write(): the insert context holds the list in a cycle

    def _raw_count(self, batch: int) -> int:
        return int(self.client.query(
            "SELECT count() FROM usage_raw WHERE batch_id = {b:UInt64}", parameters={"b": batch}
        ).result_rows[0][0])  # fmt: skip

    def _complete(self, batch: int, count: int) -> None:
        """Steps 2-4 for a batch whose raw rows were just written, first time through."""
        rollups.run_steps(self.client, batch)
        rollups.record_landed(self.client, batch, count)

    def repair(self, *, lookback_ns: int | None = None) -> int:
        """Finish every interrupted batch; returns how many were completed."""
        since = 0 if lookback_ns is None else max(0, time.time_ns() - lookback_ns)
        with self._lock:
            return rollups.repair(self.client, since)

    def write_rejections(self, by_source: Mapping[tuple[str, int, int], list[Rejection]]) -> None:
        """The refusals of each source message (topic, partition, offset), in one insert. The
        topic is the live one, or for a replay's copy of refused records the one it was read
        from (pipeline.copies).

        A message read again (replay, redelivery after a crash between this insert and the
        commit) must not count its refusals twice. One check per topic finds the records
        already in, by (partition, offset, index): every refusal of one record comes in one
        insert, but the refused records of one original may come in several copies, each in
        its own batch (found in review: a check by message dropped all but the first)."""
        by_source = {source: found for source, found in by_source.items() if found}
        if not by_source:
            return
        known: set[tuple[str, int, int, int]] = set()
        for topic in sorted({t for t, _, _ in by_source}):
            offsets = sorted({offset for t, _, offset in by_source if t == topic})
            known.update((topic, int(p), int(o), int(i)) for p, o, i in self.client.query(
                "SELECT DISTINCT source_partition, source_offset, record_index FROM usage_rejects "
                "WHERE source_topic = {t:String} AND source_offset IN {o:Array(Int64)}",
                parameters={"t": topic, "o": offsets},
            ).result_rows)  # fmt: skip
        now = datetime.now(UTC)
        rows = [
            [now, topic, partition, offset, r.record_index, r.gateway_id, r.field, r.reason,
             r.payload]
            for (topic, partition, offset), found in by_source.items()
            for r in found
            if (topic, partition, offset, r.record_index) not in known
        ]  # fmt: skip
        if not rows:
            return
        self.client.insert(
            "usage_rejects",
            rows,
            column_names=[
                "rejected_at", "source_topic", "source_partition", "source_offset",
                "record_index", "gateway_id", "field", "reason", "payload",
            ],
        )  # fmt: skip


def _key_lines(keys: list[tuple[str, str]]) -> str:
    """The keys as TSV lines `gateway record`, checked as a whole.

    Keys reach here only through the contract, whose identifier pattern admits no quote,
    backslash, space, tab or newline; refusing anything else keeps the key check's literal
    safe by construction, not by escaping. The joined text is checked in two C-level scans
    instead of a regex per identifier (which cost ~0.4 us per record): only identifier
    characters, spaces and newlines, and exactly one space per key and one newline between
    keys, so no key can end the literal, split another or merge with it."""
    text = "\n".join(map(" ".join, keys))
    if (
        not _KEY_TEXT.fullmatch(text)
        or text.count(" ") != len(keys)
        or text.count("\n") != len(keys) - 1
    ):
        bad = next((k for k in keys for v in k if not _KEY_RE.fullmatch(v)), ("", ""))
        raise ValueError(f"not a contract identifier: {' '.join(bad)[:40]!r}")
    return text
