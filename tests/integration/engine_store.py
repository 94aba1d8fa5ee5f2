"""The embedded store in a process of its own, for test_engine_crash.py: each phase opens the
store (chdb allows one store per process, and only a new process sees what the engine finds on
disk at start-up), does its part and prints what it saw as one JSON line.

    python -m tests.integration.engine_store land DIR
        batch A landed; batch B's steps run, then cut short before the ledger; batch C (another
        member's, in flight) with its raw rows and hourly rollup only
    python -m tests.integration.engine_store repair DIR B
        B's hourly token re-run, then the writer's repair
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from pipeline.processor import Processor
from pipeline.writer import RAW_COLUMNS, Writer, new_batch_id
from tracker import rollups
from tracker.classify import Classifier
from tracker.clickhouse import ClientPool
from tracker.contract import UsageRecord, parse_record
from tracker.migrate import migrate
from tracker.registry import load
from tracker.settings import CommonSettings

START = datetime(2025, 1, 1, tzinfo=UTC)
# (table, partition) of the parts of batch B that the crash takes away.
LOST = (("usage_hourly", "202503"), ("usage_daily", "2025"))


def spread(first: int, n: int, gateway: str) -> list[UsageRecord]:
    """One record every 12 hours from START + 12h * first."""
    return [
        parse_record(
            {"record_id": f"r{i}", "agency_id": "in-cbse", "provider": "sarvam", "model": "m",
             "occurred_at": (START + timedelta(hours=12 * i)).isoformat(),
             "request_count": 1 + i % 3, "input_tokens": i},
            gateway_id=gateway,
        )
        for i in range(first, first + n)
    ]  # fmt: skip


def batch_a() -> list[UsageRecord]:
    return spread(0, 150, "gw-a")  # January to March


def batch_b() -> list[UsageRecord]:
    return spread(60, 150, "gw-b")  # end of January to April


def batch_c() -> list[UsageRecord]:
    return spread(118, 10, "gw-c")  # 1-5 March


def by_month(pool: ClientPool) -> dict[str, list[list[int]]]:
    """[month, records, requests] per month of usage_raw and of each rollup."""
    sources = {
        "raw": ("usage_raw", "occurred_at", "count(), sum(request_count)"),
        "hourly": ("usage_hourly", "hour", "sum(records), sum(requests)"),
        "daily": ("usage_daily", "day", "sum(records), sum(requests)"),
    }
    out = {}
    for name, (table, time, measures) in sources.items():
        rows = pool.query_rows(
            f"SELECT toYYYYMM({time}) AS m, {measures} FROM {table} GROUP BY m ORDER BY m"
        )
        out[name] = [[int(m), int(n), int(r)] for m, n, r in rows]
    return out


def land(pool: ClientPool, processor: Processor) -> dict[str, Any]:
    client = pool.get()
    writer = Writer(client)
    writer.write(processor.process_records(batch_a()).rows)
    for table, _ in LOST:  # B's parts stay apart from A's, so they alone can be taken away
        client.command(f"SYSTEM STOP MERGES {table}")
    batch = new_batch_id()
    rows = processor.process_records(batch_b()).rows
    client.insert("usage_raw", [(*r, batch) for r in rows], column_names=RAW_COLUMNS)
    rollups.run_steps(client, batch)  # the real steps under the real tokens; no ledger
    lost = []
    for table, partition in LOST:
        path = pool.query_rows(
            "SELECT data_paths[1] FROM system.tables WHERE database = currentDatabase() "
            "AND name = {t:String}",
            {"t": table},
        )[0][0]
        parts = pool.query_rows(
            "SELECT name FROM system.parts WHERE database = currentDatabase() AND active "
            "AND table = {t:String} AND partition_id = {p:String} ORDER BY max_block_number",
            {"t": table, "p": partition},
        )
        lost.append({"table": table, "path": path, "parts": [p[0] for p in parts]})
    # Another member's batch in flight: raw rows and hourly rollup in, daily and ledger not.
    other = new_batch_id()
    rows = processor.process_records(batch_c()).rows
    client.insert("usage_raw", [(*r, other) for r in rows], column_names=RAW_COLUMNS)
    client.command(rollups.HOURLY_FROM_BATCH, parameters={"b": other},
                   settings={"insert_deduplication_token": f"hourly-{other}"})  # fmt: skip
    return {"batch": batch, "lost": lost, "by_month": by_month(pool)}


def repair(pool: ClientPool, processor: Processor, batch: int) -> dict[str, Any]:
    client = pool.get()
    # What the engine does with the token of a part it lost: drops the re-run as a duplicate.
    client.command(rollups.HOURLY_FROM_BATCH, parameters={"b": batch},
                   settings={"insert_deduplication_token": f"hourly-{batch}"})  # fmt: skip
    after_rerun = by_month(pool)
    writer = Writer(client)
    repaired = writer.repair()
    healed = by_month(pool)
    again = writer.repair()
    redelivered = writer.write(processor.process_records(batch_b()).rows)
    return {
        "after_rerun": after_rerun,
        "repaired": repaired,
        "healed": healed,
        "again": again,
        "redelivered": [redelivered.inserted, redelivered.duplicates],
        "final": by_month(pool),
    }


def main(argv: list[str]) -> None:
    phase, data_dir = argv[0], Path(argv[1])
    pool = ClientPool(CommonSettings(data_dir=data_dir, clickhouse_database="tracker"))
    migrate(pool.get())
    processor = Processor(Classifier(load()[0]))
    result = land(pool, processor) if phase == "land" else repair(pool, processor, int(argv[2]))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    sys.stdout.flush()
    os._exit(0)  # no orderly shutdown of the engine: what is on disk now is what a crash leaves


if __name__ == "__main__":
    main(sys.argv[1:])
