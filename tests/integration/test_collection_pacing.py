"""The consumer loop's paced collections come right after a landing, before more rows are
built: a young collection scans every row alive, and one at the top of the next turn, after a
flush in the middle of a poll, scanned the rest of that poll's rows too."""

from __future__ import annotations

import gc
import threading
import time
import uuid

import orjson
import pytest

from pipeline.consumer import PipelineConsumer
from pipeline.gc_pacing import CollectionPacer
from pipeline.processor import COLUMNS
from pipeline.writer import Writer
from tests.integration.faults import produce
from tracker.cli.wiring import Core


def test_collections_after_a_landing_find_no_rows_of_the_next_batch(
    kafka_bootstrap: str, core: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = f"pace-{uuid.uuid4().hex[:6]}"
    messages = [
        (b"shard:0", orjson.dumps([
            {"record_id": f"m{m}-{i}", "gateway_id": "gw-pace", "agency_id": "in-cbse",
             "occurred_at": "2026-05-01T10:00:00Z", "provider": "sarvam", "model": "m"}
            for i in range(10)
        ]))
        for m in range(13)
    ]  # fmt: skip
    produce(kafka_bootstrap, topic, messages, partitions=1)
    consumer = PipelineConsumer(
        bootstrap=kafka_bootstrap, topic=topic, dlq_topic=topic + ".dlq",
        group_id=f"g-{topic}", processor=core.processor, writer=Writer(core.pool.get()),
        batch_max_rows=25, batch_max_seconds=60,
    )  # fmt: skip
    alive_at_collection: list[int] = []
    real = CollectionPacer.collect

    def watched(self: CollectionPacer, *, landed: bool, now: float | None = None) -> None:
        if landed:
            # Rows alive anywhere, not only in the batch in hand: a landed batch's rows were
            # held by the landing's retry (tenacity, in a reference cycle) until collected.
            young = gc.get_objects(0) + gc.get_objects(1)
            alive_at_collection.append(
                sum(1 for o in young if type(o) is tuple and len(o) == len(COLUMNS))
            )
        real(self, landed=landed, now=now)

    monkeypatch.setattr(CollectionPacer, "collect", watched)
    loop = threading.Thread(target=consumer.run)
    loop.start()
    try:
        deadline = time.monotonic() + 60
        while consumer.stats.rows_written < 120 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # a few more turns of the loop, the last message's rows in hand
    finally:
        consumer.stop()
        loop.join(timeout=30)
    # 130 records in one poll, batches of 30 rows (3 messages): 4 landings mid-poll, and the
    # last message's 10 rows left in hand (its batch is due in 60 s). Each collection after a
    # landing came before those rows were built, and after the landed rows were freed.
    assert consumer.stats.rows_written == 130  # the last 10 landed at the stop
    # (A batch is 30 rows; a few tuples of a row's length are made once, at the first landing.)
    assert len(alive_at_collection) == 4, alive_at_collection
    assert all(alive < 10 for alive in alive_at_collection), alive_at_collection
