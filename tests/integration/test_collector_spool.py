"""Nothing accepted is lost: with the real broker stopped during ingest, the collector spools
to disk, answers 2xx, and drains when the broker is back; a full spool answers 503; a spooled
message the broker refuses for good is quarantined, not retried in front of the others."""

from __future__ import annotations

import logging
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType

from collector.sink import DeliveryFailed, KafkaSink, SpoolingSink
from collector.spool import Spool
from tests.integration.faults import read_topic, wait_caught_up
from tracker.cli.wiring import Core, collector_app, open_core, run_pipeline
from tracker.clickhouse import ClientPool
from tracker.contract import UsageRecord, parse_record
from tracker.gateways import add
from tracker.settings import CollectorSettings, CommonSettings, PipelineSettings
from tracker.topics import ensure_topics

AGENCIES = ["in-sbi", "in-cbse"]


def batch(start: int, n: int) -> list[dict[str, Any]]:
    return [{"record_id": f"sp{i}", "agency_id": AGENCIES[i % 2], "provider": "sarvam", "model": "m",
             "occurred_at": "2026-07-01T10:00:00Z", "request_count": 1 + i % 3}
            for i in range(start, start + n)]  # fmt: skip


@pytest.fixture(scope="module")
def core(settings: CommonSettings, pool: ClientPool) -> Core:
    return open_core(settings)


@pytest.fixture(scope="module")
def key(core: Core) -> str:
    return add(core.pool.get(), core.registry, "gw-spool", AGENCIES)[1]


def common(settings: CommonSettings, bootstrap: str, topic: str, data_dir: Path) -> dict[str, Any]:
    return {"data_dir": data_dir, "clickhouse_database": settings.clickhouse_database,
            "kafka_bootstrap": bootstrap, "kafka_topic": topic, "kafka_dlq_topic": topic + ".dlq"}  # fmt: skip


def _no_broker() -> str:
    """A loopback address with no broker behind it: Kafka is down."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture()
def spool_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path


def test_broker_down_during_ingest_loses_nothing(
    core: Core, key: str, settings: CommonSettings, kafka_bootstrap: str,
    broker_module: ModuleType, kafka_dir: Path, spool_dir: Path,
) -> None:  # fmt: skip
    topic = f"spool-{uuid.uuid4().hex[:6]}"
    cfg = common(settings, kafka_bootstrap, topic, settings.data_dir)
    app, sink = collector_app(
        CollectorSettings(**{**cfg, "data_dir": spool_dir}, kafka_timeout_seconds=2.0),
        core.pool.get(),
    )
    consumer = run_pipeline(PipelineSettings(**cfg, consumer_group=f"g-{topic}",
                                             batch_max_seconds=0.3), core)  # fmt: skip
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    auth = {"Authorization": f"Bearer {key}"}
    sent = 0
    try:
        with TestClient(app) as client:

            def post(n: int) -> None:
                nonlocal sent
                r = client.post("/v1/records", content=orjson.dumps(batch(sent, n)), headers=auth)
                assert r.status_code == 200, r.text
                assert r.json()["accepted"] == n
                sent += n

            for _ in range(5):
                post(200)
            broker_module.stop(kafka_dir)
            for _ in range(5):  # accepted while the broker is down: spooled, fsync'ed
                post(200)
            assert not sink.spool.empty()
            assert broker_module.start(kafka_dir) == kafka_bootstrap
            for _ in range(5):
                post(200)
            deadline = time.monotonic() + 120
            while not sink.spool.empty() and time.monotonic() < deadline:
                time.sleep(0.5)
            assert sink.spool.empty(), "spool never drained"
            wait_caught_up(kafka_bootstrap, topic, f"g-{topic}")
    finally:
        consumer.stop()
        thread.join(timeout=60)
        sink.close()
    landed = core.pool.query_rows(
        "SELECT count(), sum(request_count) FROM usage_raw WHERE gateway_id = 'gw-spool'"
    )[0]
    assert (int(landed[0]), int(landed[1])) == (sent, sum(1 + i % 3 for i in range(sent)))


def test_full_spool_answers_503_with_retry_after(
    core: Core, key: str, settings: CommonSettings, spool_dir: Path
) -> None:
    cfg = common(settings, _no_broker(), "spool-full", spool_dir)
    app, sink = collector_app(
        CollectorSettings(**cfg, kafka_timeout_seconds=1.0, spool_max_bytes=4096), core.pool.get()
    )
    auth = {"Authorization": f"Bearer {key}"}
    try:
        with TestClient(app) as client:
            first = client.post("/v1/records", content=orjson.dumps(batch(10_000, 5)), headers=auth)
            assert first.status_code == 200  # spooled
            codes = []
            for i in range(5):
                r = client.post("/v1/records", content=orjson.dumps(batch(20_000 + i * 20, 20)),
                                headers=auth)  # fmt: skip
                codes.append(r.status_code)
                if r.status_code == 503:
                    assert r.headers["Retry-After"]
                    assert "spool" in r.json()["detail"]
            assert 503 in codes
            assert sink.spool.pending_bytes() <= 4096
    finally:
        sink.close()


def test_a_collector_started_with_kafka_down_answers_within_its_kafka_timeout(
    core: Core, key: str, settings: CommonSettings, spool_dir: Path
) -> None:
    """Kafka down at start: the collector tries to reach it for TRACKER_KAFKA_TIMEOUT_SECONDS
    (as long as one send may wait), then starts and spools. Found: it waited kafka-python's
    30 s first, whatever the setting, before it could accept anything."""
    cfg = common(settings, _no_broker(), "spool-start", spool_dir)
    started = time.monotonic()
    app, sink = collector_app(CollectorSettings(**cfg, kafka_timeout_seconds=1.0), core.pool.get())
    try:
        with TestClient(app) as client:
            r = client.post("/v1/records", content=orjson.dumps(batch(40_000, 3)),
                            headers={"Authorization": f"Bearer {key}"})  # fmt: skip
            took = time.monotonic() - started
            assert r.status_code == 200 and r.json()["accepted"] == 3, r.text
            assert not sink.spool.empty()
        # One second to connect and one for the send, with room for a slow machine; 30 s before.
        assert took < 15, took
    finally:
        sink.close()


def test_a_spool_that_cannot_write_answers_503(
    core: Core, key: str, settings: CommonSettings, spool_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Kafka down and the spool's disk failing: nothing is stored, so the gateway is told to
    # retry (503), not handed a 500.
    cfg = common(settings, _no_broker(), "spool-disk", spool_dir)
    app, sink = collector_app(CollectorSettings(**cfg, kafka_timeout_seconds=1.0), core.pool.get())

    def disk_full(messages: list[tuple[bytes, bytes]]) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sink.spool, "append", disk_full)
    try:
        with TestClient(app) as client:
            r = client.post("/v1/records", content=orjson.dumps(batch(30_000, 3)),
                            headers={"Authorization": f"Bearer {key}"})  # fmt: skip
            assert r.status_code == 503, r.text
            assert r.headers["Retry-After"] and "spool write failed" in r.json()["detail"]
    finally:
        sink.close()


def _wide_names(rng: random.Random) -> Callable[[], str]:
    """Names of 256 characters of 4 bytes each, that compression cannot shrink."""
    return lambda: "".join(chr(rng.randrange(0x1F300, 0x1FAFF)) for _ in range(256))


def _records(gateway: str, prefix: str, n: int, name: Callable[[], str]) -> list[UsageRecord]:
    return [
        parse_record({"record_id": f"{prefix}{i}", "agency_id": "in-sbi", "provider": name(),
                      "model": name(), "occurred_at": "2026-07-01T10:00:00Z"},
                     gateway_id=gateway)
        for i in range(n)
    ]  # fmt: skip


def test_a_large_request_is_cut_into_messages_the_broker_takes(kafka_bootstrap: str) -> None:
    """Found in review: 500 valid records with long non-ASCII names made one ~1.9 MB message,
    over the broker's 1 MB limit; its refusal left kafka-python's idempotent producer failed,
    so every later request was spooled (answered 200) and never reached Kafka."""
    topic = f"large-{uuid.uuid4().hex[:6]}"
    ensure_topics(kafka_bootstrap, topic, topic + ".dlq", partitions=1)
    rng = random.Random(7)
    wide = _wide_names(rng)

    def records(prefix: str, n: int, name: Callable[[], str]) -> list[UsageRecord]:
        return _records("gw-large", prefix, n, name)

    def plain() -> str:
        return "sarvam"

    sink = KafkaSink(kafka_bootstrap, topic, shards=1, timeout_seconds=10)
    try:
        sink.deliver(records("wide", 500, wide))
        sink.deliver(records("after", 10, plain))
        # A message the broker refuses for good (over its limit, sent as it is) fails that
        # send alone: the producer is renewed, and the next delivery goes through.
        with pytest.raises(DeliveryFailed, match="MessageSizeTooLarge"):
            sink.send([(b"shard:0", rng.randbytes(2_000_000))])
        sink.deliver(records("renewed", 10, plain))
    finally:
        sink.close()
    messages = read_topic(kafka_bootstrap, topic)
    ids = [r["record_id"] for m in messages for r in m.records]
    assert len(ids) == len(set(ids)) == 520
    assert len(messages) > 3  # the 500 wide records went as several messages


def _lower_message_limit(bootstrap: str, topic: str, limit: int) -> None:
    """Set the topic's max.message.bytes and wait until the broker applies it."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        resource = ConfigResource(ConfigResourceType.TOPIC, topic, {"max.message.bytes": limit})
        admin.alter_configs([resource])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the broker answers with the config it applies
            described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
            entry = described["topic"][topic].get("max.message.bytes")
            if str(entry["value"] if isinstance(entry, dict) else entry) == str(limit):
                return
            time.sleep(0.2)
        raise AssertionError("max.message.bytes not lowered")
    finally:
        admin.close()


def _spooled_around(
    bootstrap: str, spool_dir: Path, kind: str, wide: int, limit: int
) -> tuple[str, KafkaSink, Spool, list[tuple[bytes, bytes]]]:
    """A one-partition topic and a spool holding, in order, 5 plain records, `wide` records
    with incompressible names in one message (returned), and 5 plain records; the topic's
    max.message.bytes is then lowered to `limit`."""
    topic = f"{kind}-{uuid.uuid4().hex[:6]}"
    ensure_topics(bootstrap, topic, topic + ".dlq", partitions=1)
    sink = KafkaSink(bootstrap, topic, shards=1, timeout_seconds=5)
    gateway, name = f"gw-{kind}", _wide_names(random.Random(wide))
    before, big, after = (sink.messages(_records(gateway, "before", 5, lambda: "sarvam")),
                          sink.messages(_records(gateway, "big", wide, name)),
                          sink.messages(_records(gateway, "after", 5, lambda: "sarvam")))  # fmt: skip
    spool = Spool(spool_dir / "spool", max_bytes=1 << 30)
    spool.append(before + big)
    spool.append(after)
    _lower_message_limit(bootstrap, topic, limit)
    return topic, sink, spool, big


def _last_copies(ids: list[str]) -> list[str]:
    """Each id once, where its last copy stands."""
    return list(reversed(dict.fromkeys(reversed(ids))))


def _drain(spool: Spool, sink: KafkaSink) -> None:
    spooling = SpoolingSink(sink, spool, retry_seconds=0.2)
    try:
        deadline = time.monotonic() + 60
        while not spool.empty() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert spool.empty(), "spool never drained"
    finally:
        spooling.close()


def test_a_spooled_message_over_a_lowered_limit_is_delivered_in_parts(
    kafka_bootstrap: str, spool_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A topic's max.message.bytes lowered while a message over it waited in the spool: the
    broker refuses that message for its size. It was quarantined for a person to re-send; now
    the drain cuts it in halves until each part passes, and every record reaches Kafka, in
    order with the messages around it, and nothing is quarantined."""
    topic, sink, spool, big = _spooled_around(kafka_bootstrap, spool_dir, "cut", 150, 100_000)
    assert len(big) == 1 and len(big[0][1]) > 300_000  # one message, ~340 KB
    with caplog.at_level(logging.WARNING, logger="collector.sink"):
        _drain(spool, sink)

    messages = read_topic(kafka_bootstrap, topic)
    ids = [r["record_id"] for m in messages for r in m.records]
    wanted = [f"before{i}" for i in range(5)] + [f"big{i}" for i in range(150)]
    # A message the broker took beside the refused one is there twice (sent again alone, in
    # order, which the pipeline lands once): the last copies are in order.
    assert _last_copies(ids) == wanted + [f"after{i}" for i in range(5)]
    assert len([i for i in ids if i.startswith("big")]) == 150  # the parts: each record once
    assert len(messages) >= 2 + 4  # ~340 KB cut below 100 KB: at least 4 parts
    assert not (spool_dir / "spool" / "quarantine").exists()
    [line] = [r for r in caplog.records if "delivered in" in r.getMessage()]
    assert "150 records" in line.getMessage() and line.levelno == logging.WARNING


def test_a_spooled_message_the_broker_refuses_for_good_is_quarantined(
    kafka_bootstrap: str, spool_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A message that cannot pass however it is cut (here one record over a topic's lowered
    max.message.bytes) used to be retried for ever, and every spooled message behind it
    waited; now it goes to the spool's quarantine with its reason and the drain delivers the
    others, in order."""
    topic, sink, spool, poison = _spooled_around(kafka_bootstrap, spool_dir, "poison", 1, 1_800)
    assert len(poison) == 1 and len(poison[0][1]) > 2_000  # one record of ~2.3 KB
    with caplog.at_level(logging.ERROR, logger="collector.sink"):
        _drain(spool, sink)

    ids = [r["record_id"] for m in read_topic(kafka_bootstrap, topic) for r in m.records]
    assert _last_copies(ids) == [f"before{i}" for i in range(5)] + [f"after{i}" for i in range(5)]
    kept = sorted((spool_dir / "spool" / "quarantine").iterdir())
    assert [p.suffix for p in kept] == [".json", ".value"]
    assert kept[1].read_bytes() == poison[0][1]  # the exact bytes
    about = orjson.loads(kept[0].read_bytes())
    assert "MessageSizeTooLarge" in about["reason"] and about["records"] == 1
    assert about["key"] == "shard:0" and about["topic"] == topic
    [line] = [r for r in caplog.records if "refused by Kafka for good" in r.getMessage()]
    assert line.levelno == logging.ERROR and kept[1].name in line.getMessage()
    assert "1 records" in line.getMessage()
