"""The collector's on-disk spool: torn entries never hide acknowledged ones behind them, and a
message Kafka refuses for good is quarantined, not retried in front of the others for ever."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

import orjson
import pytest
from kafka.errors import KafkaError, KafkaTimeoutError, MessageSizeTooLargeError

from collector.sink import DeliveryFailed, KafkaSink, SpoolingSink
from collector.spool import Spool
from tracker.contract import UsageRecord, parse_record


def drain(spool: Spool) -> list[bytes]:
    seen = [(s, pos, value) for s, pos, _, value in spool.entries()]
    if seen:
        spool.acknowledge(seen[-1][0], seen[-1][1])
    return [value for _, _, value in seen]


def test_a_torn_tail_is_cut_on_reopen_so_later_appends_are_read(tmp_path: Path) -> None:
    # Found in review: after a crash mid-append the collector appended behind the torn bytes;
    # the drainer stopped at them, so batches acknowledged to gateways never reached Kafka.
    spool = Spool(tmp_path, max_bytes=1 << 20)
    spool.append([(b"k", b"batch-1")])
    segment = next(tmp_path.glob("seg-*.log"))
    with segment.open("ab") as f:
        f.write(b"\x00\x00\x00\x40\x00\x00")  # half a header: the crash
    spool.close()
    reopened = Spool(tmp_path, max_bytes=1 << 20)
    reopened.append([(b"k", b"batch-2")])
    assert drain(reopened) == [b"batch-1", b"batch-2"]
    assert reopened.empty()


def test_a_failed_append_leaves_no_partial_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    spool.append([(b"k", b"batch-1")])
    real_fsync = os.fsync

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("collector.spool.os.fsync", disk_full)
    with pytest.raises(OSError):
        spool.append([(b"k", b"batch-lost")])
    monkeypatch.setattr("collector.spool.os.fsync", real_fsync)
    spool.append([(b"k", b"batch-2")])
    assert drain(spool) == [b"batch-1", b"batch-2"]
    assert spool.empty()


class FakeKafka(KafkaSink):
    """A KafkaSink whose producers are fakes: while `down`, every send times out (transient);
    else a message whose value is in `refuse` is refused for good (over the topic's limit) and
    the others are taken."""

    def __init__(self, refuse: set[bytes]) -> None:
        self.refuse = refuse
        self.down = False
        self.close_fails = False  # as kafka-python 3's close does with sends still pending
        self.taken: list[bytes] = []
        self.tried_by: list[str] = []  # the thread of each send tried, taken or not
        super().__init__("fake:9092", "usage.v1", timeout_seconds=1)

    def _new_producer(self) -> FakeProducer:
        return FakeProducer(self)


class FakeFuture:
    def __init__(self, error: KafkaError | None) -> None:
        self.error = error

    def get(self, timeout: float) -> None:
        if self.error is not None:
            raise self.error


class FakeSender:
    def __init__(self) -> None:
        self.forced = False

    def force_close(self) -> None:
        self.forced = True


class FakeProducer:
    def __init__(self, kafka: FakeKafka) -> None:
        self.kafka = kafka
        self._sender = FakeSender()

    def send(self, topic: str, *, key: bytes, value: bytes) -> FakeFuture:
        self.kafka.tried_by.append(threading.current_thread().name)
        if self.kafka.down:
            return FakeFuture(KafkaTimeoutError("no broker"))
        if value in self.kafka.refuse:
            return FakeFuture(MessageSizeTooLargeError("over max.message.bytes"))
        self.kafka.taken.append(value)
        return FakeFuture(None)

    def close(self, timeout: float) -> None:
        if self.kafka.close_fails:
            raise KafkaTimeoutError("Timeout waiting for future")


def wait_drained(spool: Spool) -> None:
    deadline = time.monotonic() + 10
    while not spool.empty() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert spool.empty(), "spool never drained"


def drained_around(
    tmp_path: Path, middle: bytes, refuse: set[bytes], caplog: pytest.LogCaptureFixture
) -> tuple[Spool, FakeKafka]:
    """Spool `a`, `middle` (one batch), then `b`; drain them into a FakeKafka that refuses
    `refuse` for its size, logging from WARNING up into `caplog`."""
    spool = Spool(tmp_path, max_bytes=1 << 20)
    spool.append([(b"shard:0", b'[{"record_id":"a"}]'), (b"shard:1", middle)])
    spool.append([(b"shard:0", b'[{"record_id":"b"}]')])
    kafka = FakeKafka(refuse=refuse)
    with caplog.at_level(logging.WARNING, logger="collector.sink"):
        sink = SpoolingSink(kafka, spool, retry_seconds=0.05)
        try:
            wait_drained(spool)
        finally:
            sink.close()
    return spool, kafka


def test_a_message_kafka_refuses_for_good_is_quarantined_and_the_drain_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # One record over the limit: no cut of it can pass.
    poison = orjson.dumps([{"record_id": "big0", "model": "m" * 300}])
    spool, kafka = drained_around(tmp_path, poison, {poison}, caplog)
    # The messages before and behind the refused one reached Kafka, in order (the ones of its
    # batch twice: the batch failed, and was then sent again one by one).
    a, b = b'[{"record_id":"a"}]', b'[{"record_id":"b"}]'
    assert kafka.taken == [a, b, a, b]
    assert poison not in kafka.taken
    kept = sorted(spool.quarantine_dir.iterdir())
    assert [p.suffix for p in kept] == [".json", ".value"]
    value, about = kept[1].read_bytes(), json.loads(kept[0].read_text())
    assert value == poison
    assert about["reason"] == "[Error 10] MessageSizeTooLargeError: over max.message.bytes"
    assert about["records"] == 1 and about["key"] == "shard:1" and about["bytes"] == len(poison)
    assert about["value_file"] == kept[1].name
    [line] = [r for r in caplog.records if "refused by Kafka for good" in r.getMessage()]
    assert line.levelno == logging.ERROR
    assert kept[1].name in line.getMessage() and "MessageSizeTooLarge" in line.getMessage()
    assert "1 records" in line.getMessage()


def test_a_message_refused_for_its_size_is_delivered_in_parts_in_order(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Refused for its size, a message of 5 records is cut in halves (2 and 3 records), the
    half of 3 refused too and cut again (1 and 2): the parts go in order, between the
    messages around it, and nothing is quarantined."""
    records = [{"record_id": f"big{i}"} for i in range(5)]
    whole, second_half = orjson.dumps(records), orjson.dumps(records[2:])
    spool, kafka = drained_around(tmp_path, whole, {whole, second_half}, caplog)
    a, b = b'[{"record_id":"a"}]', b'[{"record_id":"b"}]'
    parts = [orjson.dumps(records[:2]), orjson.dumps(records[2:3]), orjson.dumps(records[3:])]
    # The batch's others twice (the batch failed, then each went alone), the parts once.
    assert kafka.taken == [a, b, a, *parts, b]
    assert not spool.quarantine_dir.exists()
    [line] = [r for r in caplog.records if "delivered in 3 parts" in r.getMessage()]
    assert "5 records" in line.getMessage() and line.levelno == logging.WARNING


def test_a_transient_failure_quarantines_nothing_and_keeps_the_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    spool.append([(b"shard:0", b"m1"), (b"shard:0", b"m2")])
    kafka = FakeKafka(refuse=set())
    kafka.down = True
    sink = SpoolingSink(kafka, spool, retry_seconds=0.05)
    try:
        with pytest.raises(DeliveryFailed):
            sink.drain_once()
        time.sleep(0.2)  # a few rounds of the drainer against the broker that is down
        assert not spool.empty() and kafka.taken == []
        assert not spool.quarantine_dir.exists()
        kafka.down = False
        wait_drained(spool)
    finally:
        sink.close()
    assert kafka.taken == [b"m1", b"m2"]
    assert not spool.quarantine_dir.exists()


def test_a_refused_send_whose_producer_cannot_close_at_once_still_fails_cleanly() -> None:
    # Found in this change's review: kafka-python 3 flushes before closing, and with sends of
    # the failed producer still pending it raised KafkaTimeoutError out of `send`; the drain
    # thread died with it, and the spool was never drained again.
    kafka = FakeKafka(refuse={b"big"})
    kafka.close_fails = True
    failed = kafka._producer
    with pytest.raises(DeliveryFailed) as refused:
        kafka.send([(b"shard:0", b"big")])
    assert refused.value.refused == "[Error 10] MessageSizeTooLargeError: over max.message.bytes"
    assert failed._sender.forced and kafka._producer is not failed
    kafka.send([(b"shard:0", b"ok")])
    assert kafka.taken == [b"ok"]


def _records(*ids: str) -> list[UsageRecord]:
    return [parse_record({"record_id": i, "gateway_id": "gw", "agency_id": "in-sbi",
                          "occurred_at": "2026-02-01T00:00:00Z", "provider": "sarvam",
                          "model": "m"}) for i in ids]  # fmt: skip


def test_through_an_outage_requests_go_to_the_spool_without_waiting_for_kafka(
    tmp_path: Path,
) -> None:
    """Found: every request of a Kafka outage waited the Kafka timeout (10 s by default) before
    it was spooled. Once a send failed, requests are spooled at once while the spool holds
    messages; the drainer alone tries Kafka, sends them in order when it is back, and then
    requests go to Kafka directly again."""
    spool = Spool(tmp_path, max_bytes=1 << 20)
    kafka = FakeKafka(refuse=set())
    kafka.down = True
    sink = SpoolingSink(kafka, spool, retry_seconds=0.05)
    try:
        assert not sink.spooling
        sink.deliver(_records("r0"))  # tried, failed: spooled
        assert sink.spooling and kafka.tried_by.count("MainThread") == 1
        for i in range(1, 5):
            sink.deliver(_records(f"r{i}"))
        assert kafka.tried_by.count("MainThread") == 1  # not tried again by a request
        assert "spool-drain" in kafka.tried_by and kafka.taken == []
        kafka.down = False
        wait_drained(spool)
        deadline = time.monotonic() + 10
        while sink.spooling and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not sink.spooling
        sink.deliver(_records("r5"))  # directly again
        assert kafka.tried_by[-1] == "MainThread"
    finally:
        sink.close()
    ids = [orjson.loads(v)[0]["record_id"] for v in kafka.taken]
    assert ids == [f"r{i}" for i in range(6)]


def test_a_spool_left_by_an_earlier_run_is_sent_before_new_requests(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    spool.append([(b"shard:0", b'[{"record_id":"old"}]')])
    kafka = FakeKafka(refuse=set())
    kafka.down = True
    sink = SpoolingSink(kafka, spool, retry_seconds=0.05)
    try:
        assert sink.spooling
        sink.deliver(_records("new"))
        assert "MainThread" not in kafka.tried_by
        kafka.down = False
        wait_drained(spool)
    finally:
        sink.close()
    assert [orjson.loads(v)[0]["record_id"] for v in kafka.taken] == ["old", "new"]
