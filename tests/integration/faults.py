"""Shared pieces of the pipeline fault tests: a stream with duplicates and malformed messages,
its ground truth computed independently of the pipeline, and waiting on the consumer group."""

from __future__ import annotations

import random
import subprocess
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.errors import (
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    KafkaConnectionError,
    NotCoordinatorError,
)
from kafka.structs import TopicPartition

from tracker.contract import shard_key, shard_of
from tracker.topics import ensure_topics

# provider, region, host -> tier, as written in the registry (independent of the classifier)
ROUTES = [
    ("sarvam", None, None, "sovereign"),
    ("azure_openai", "centralindia", None, "onshore"),
    ("openai", None, "api.openai.com", "offshore"),
    ("self_hosted", None, None, "unknown"),
]
AGENCIES = ["in-sbi", "in-pnb", "in-iitb", "in-aiims-delhi", "in-cbse", "in-uidai"]


@dataclass
class Stream:
    messages: list[tuple[bytes, bytes]] = field(default_factory=list)
    records: int = 0
    requests: int = 0
    tokens: int = 0
    requests_by_tier: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    malformed_records: int = 0


def make_stream(n_records: int, *, seed: int, per_message: int = 100) -> Stream:
    """n unique valid records in messages keyed by agency, then the same 10% of records resent
    in other messages, and 5% extra malformed messages (unreadable, or with invalid records)."""
    rng = random.Random(seed)
    out = Stream()
    by_agency: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for i in range(n_records):
        provider, region, host, tier = ROUTES[i % len(ROUTES)]
        agency = AGENCIES[i % len(AGENCIES)]
        rec: dict[str, Any] = {
            "record_id": f"s{seed}-{i}", "gateway_id": "gw-faults", "agency_id": agency,
            "occurred_at": f"2026-0{1 + i % 9}-{1 + i % 28:02d}T{i % 24:02d}:00:00Z",
            "provider": provider, "model": "m", "request_count": rng.randint(1, 20),
            "input_tokens": rng.randint(0, 3000), "output_tokens": rng.randint(0, 900),
        }  # fmt: skip
        if region:
            rec["region"] = region
        if host:
            rec["endpoint_host"] = host
        by_agency[agency].append(rec)
        out.records += 1
        out.requests += rec["request_count"]
        out.tokens += rec["input_tokens"] + rec["output_tokens"]
        out.requests_by_tier[tier] += rec["request_count"]
    for agency, recs in by_agency.items():
        for start in range(0, len(recs), per_message):
            out.messages.append((agency.encode(), orjson.dumps(recs[start : start + per_message])))
        resent = [r for r in recs if rng.random() < 0.10]
        rng.shuffle(resent)  # resent in different batches than the originals
        for start in range(0, len(resent), per_message // 2):
            chunk = resent[start : start + per_message // 2]
            out.messages.append((agency.encode(), orjson.dumps(chunk)))
    for _ in range(max(1, len(out.messages) // 20)):
        agency = rng.choice(AGENCIES)
        if rng.random() < 0.5:
            out.messages.append((agency.encode(), b"\xff{not json"))
            out.malformed_records += 1
        else:
            bad = {"record_id": f"bad-{rng.random()}", "agency_id": agency, "gateway_id": "gw-faults",
                   "occurred_at": "2026-01-01T00:00:00Z", "provider": "p", "model": "m",
                   "input_tokens": -1}  # fmt: skip
            out.messages.append((agency.encode(), orjson.dumps([bad])))
            out.malformed_records += 1
    rng.shuffle(out.messages)
    return out


def produce(
    bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]], *, partitions: int = 4
) -> None:
    ensure_topics(bootstrap, topic, topic + ".dlq", partitions=partitions)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                             linger_ms=5)  # fmt: skip
    for key, value in messages:
        producer.send(topic, key=key, value=value)
    producer.flush(timeout=60)
    producer.close()


@dataclass(frozen=True)
class Read:
    partition: int
    key: bytes | None
    records: list[dict[str, Any]]


def read_topic(bootstrap: str, topic: str) -> list[Read]:
    """Every message of the topic now, each with its partition, key and records."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False)  # fmt: skip
    out: list[Read] = []
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(parts)
        ends = consumer.end_offsets(parts)
        while any(consumer.position(tp) < end for tp, end in ends.items()):
            for tp, messages in consumer.poll(timeout_ms=1000).items():
                out.extend(Read(tp.partition, m.key, orjson.loads(m.value))
                           for m in messages)  # fmt: skip
    finally:
        consumer.close()
    return out


def assert_sharded(messages: list[Read], shards: int, partitions: int) -> None:
    """Every message is keyed by one shard of its records' identities and sits in that shard's
    partition: every copy of a record, under any agency, has one partition and one lander."""
    assert messages
    for read in messages:
        shards_of = {shard_of(r["gateway_id"], r["record_id"], shards) for r in read.records}
        assert len(shards_of) == 1, read
        shard = shards_of.pop()
        assert read.key == shard_key(shard), read
        assert read.partition == shard % partitions, read


def group_lag(bootstrap: str, topic: str, group: str) -> int:
    """Messages of `topic` not yet committed by `group` (retried while the broker's group
    coordinator is still loading, as it is for a few seconds after a (re)start)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return _bounded(lambda: _group_lag(bootstrap, topic, group), seconds=30)
        # (Loading: seen once after the broker restart of a fault test, error 14.)
        except (CoordinatorNotAvailableError, CoordinatorLoadInProgressError, NotCoordinatorError,
                KafkaConnectionError, TimeoutError):  # fmt: skip
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _bounded(call: Callable[[], int], *, seconds: float) -> int:
    """`call()` in a thread of its own, given up after `seconds`: kafka-python 3.0's blocking
    metadata fetch waits without a timeout, and once hung for good in a full-suite run (a fresh
    client's partitions_for_topic). A hung attempt is left behind and the caller retries."""
    result: list[int] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.append(call())
        except BaseException as exc:  # handed to the caller's thread
            error.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if error:
        raise error[0]
    if not result:
        raise TimeoutError(f"no answer from Kafka within {seconds} s")
    return result[0]


class LagProbe:
    """Reads a group's lag repeatedly over one pair of connections (cheap enough to poll)."""

    def __init__(self, bootstrap: str, topic: str, group: str) -> None:
        self.topic, self.group = topic, group
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap)
        self.admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        self.parts = [
            TopicPartition(topic, p) for p in self.consumer.partitions_for_topic(topic) or []
        ]

    def lag(self) -> int:
        ends = self.consumer.end_offsets(self.parts)
        committed = self.admin.list_group_offsets({self.group: self.parts}).get(self.group, {})
        done = {tp: m.offset for tp, m in committed.items() if m is not None and m.offset >= 0}
        return sum(ends[tp] - done.get(tp, 0) for tp in self.parts)

    def close(self) -> None:
        self.consumer.close()
        self.admin.close()


def _group_lag(bootstrap: str, topic: str, group: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        ends = consumer.end_offsets(parts)
        committed = admin.list_group_offsets({group: parts}).get(group, {})

        def done(tp: TopicPartition) -> int:
            meta = committed.get(tp)
            return meta.offset if meta is not None and meta.offset >= 0 else 0

        return sum(ends[tp] - done(tp) for tp in parts)
    finally:
        consumer.close()
        admin.close()


def kill_left(procs: list[subprocess.Popen[bytes]]) -> None:
    """Kill whichever of a test's processes are still running (the test failed half-way)."""
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def wait_caught_up(bootstrap: str, topic: str, group: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    lag = -1
    while time.monotonic() < deadline:
        lag = group_lag(bootstrap, topic, group)
        if lag == 0:
            return
        time.sleep(0.5)
    raise AssertionError(f"group {group} still {lag} messages behind after {timeout}s")


def truth_rows(stream: Stream) -> dict[str, int]:
    return {
        "raw_records": stream.records,
        "raw_requests": stream.requests,
        "raw_tokens": stream.tokens,
        "rollup_records": stream.records,
        "rollup_requests": stream.requests,
        "rollup_tokens": stream.tokens,
        **{f"tier_{t}": v for t, v in stream.requests_by_tier.items()},
        "rejected_records": stream.malformed_records,
    }


COUNT_SQL = """
SELECT
    (SELECT count() FROM usage_raw) AS raw_records,
    (SELECT sum(request_count) FROM usage_raw) AS raw_requests,
    (SELECT sum(input_tokens + output_tokens) FROM usage_raw) AS raw_tokens,
    (SELECT sum(records) FROM usage_hourly) AS rollup_records,
    (SELECT sum(requests) FROM usage_hourly) AS rollup_requests,
    (SELECT sum(input_tokens + output_tokens) FROM usage_hourly) AS rollup_tokens,
    (SELECT sumIf(requests, tier = 'sovereign') FROM usage_hourly) AS tier_sovereign,
    (SELECT sumIf(requests, tier = 'onshore') FROM usage_hourly) AS tier_onshore,
    (SELECT sumIf(requests, tier = 'offshore') FROM usage_hourly) AS tier_offshore,
    (SELECT sumIf(requests, tier = 'unknown') FROM usage_hourly) AS tier_unknown,
    (SELECT uniqExact(source_partition, source_offset, record_index) FROM usage_rejects)
        AS rejected_records
"""

# Records per month in raw and in both rollups: on a mismatch, which month of which is off.
MONTHS_SQL = """
SELECT m, r, h, d FROM
    (SELECT toYYYYMM(occurred_at) AS m, count() AS r FROM usage_raw GROUP BY m) AS raw
    FULL OUTER JOIN (SELECT toYYYYMM(hour) AS m, sum(records) AS h FROM usage_hourly GROUP BY m)
        AS hourly USING m
    FULL OUTER JOIN (SELECT toYYYYMM(day) AS m, sum(records) AS d FROM usage_daily GROUP BY m)
        AS daily USING m
ORDER BY m
"""
