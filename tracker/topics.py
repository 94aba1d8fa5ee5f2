"""Kafka topics the tracker owns, created with the settings its guarantees depend on."""

from __future__ import annotations

import logging
import time
from typing import Any

from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import InvalidPartitionsError, KafkaTimeoutError, TopicAlreadyExistsError
from kafka.partitioner import DefaultPartitioner

from tracker.contract import SHARD_KEY_PREFIX
from tracker.settings import KafkaSettings

log = logging.getLogger(__name__)

# Retention is measured from when the broker appended a message, never from the event time the
# gateway wrote: a backfill of year-old records must not be deleted on arrival before the
# pipeline reads it. Seven days of slack covers a long pipeline outage.
TOPIC_CONFIG = {
    "message.timestamp.type": "LogAppendTime",
    "retention.ms": str(7 * 24 * 3600 * 1000),
    "cleanup.policy": "delete",
}
# Dead letters wait for an auditor or a fix and a `tracker dlq replay`: keep them for a year.
DLQ_CONFIG = {**TOPIC_CONFIG, "retention.ms": str(365 * 24 * 3600 * 1000)}


def ensure_topics(
    bootstrap: str,
    topic: str,
    dlq_topic: str,
    *,
    partitions: int = 4,
    replication: int = 1,
    connect_seconds: float = 30.0,
) -> None:
    """Create the topics if missing, then wait until the broker serves their partitions.
    `connect_seconds`: how long to try to reach the broker at all (KafkaTimeoutError after)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","), client_id="tracker-admin",
                             bootstrap_timeout_ms=int(connect_seconds * 1000))  # fmt: skip
    try:
        existing = set(admin.list_topics())
        wanted = [
            NewTopic(topic, partitions, replication, topic_configs=TOPIC_CONFIG),
            NewTopic(dlq_topic, 1, replication, topic_configs=DLQ_CONFIG),
        ]
        missing = [t for t in wanted if t.name not in existing]
        if missing:
            try:
                admin.create_topics(missing)
                log.info("created topics %s", [t.name for t in missing])
            except TopicAlreadyExistsError:
                pass  # another process created it first
        # Return only once the broker serves the topic's partitions: a consumer that joins its
        # group before then can be assigned nothing and stay idle.
        count = _served_partitions(admin, topic, 1)
        if count < partitions:
            # Records are cut into `partitions` shards (TRACKER_KAFKA_PARTITIONS), one per
            # partition: fewer partitions would put several shards on one member.
            try:
                admin.create_partitions({topic: partitions})
                log.info("topic %s: %d partitions added (now %d)", topic, partitions - count,
                         partitions)  # fmt: skip
            except InvalidPartitionsError:
                pass  # another process added them first
            _served_partitions(admin, topic, partitions)
        elif count > partitions:
            log.warning(
                "topic %s has %d partitions but records are cut into %d shards "
                "(TRACKER_KAFKA_PARTITIONS): %d partitions get no new records",
                topic, count, partitions, count - partitions,
            )  # fmt: skip
    finally:
        admin.close()


def ensure_configured(settings: KafkaSettings, *, connect_seconds: float = 30.0) -> None:
    """`ensure_topics` for a process's settings: its live and dead-letter topics, with as many
    partitions as it cuts shards (TRACKER_KAFKA_PARTITIONS)."""
    ensure_topics(settings.kafka_bootstrap, settings.kafka_topic, settings.kafka_dlq_topic,
                  partitions=settings.kafka_partitions,
                  connect_seconds=connect_seconds)  # fmt: skip


def _served_partitions(admin: KafkaAdminClient, topic: str, at_least: int) -> int:
    """How many partitions the topic has, once at least `at_least` have a leader (30 s)."""
    deadline = time.monotonic() + 30
    while True:
        for described in admin.describe_topics([topic]):
            found = described.get("partitions") or []
            if (
                described.get("name") == topic
                and len(found) >= at_least
                and not described.get("error_code")
                and all(p.get("leader_id", -1) >= 0 for p in found)
            ):
                return len(found)
        if time.monotonic() > deadline:
            raise KafkaTimeoutError(f"topic {topic!r} has no {at_least} partitions after 30 s")
        time.sleep(0.2)


class ShardPartitioner(DefaultPartitioner):  # type: ignore[misc]  # kafka-python is untyped
    """A message keyed `shard:N` (tracker.contract.shard_key) goes to partition N modulo the
    topic's partitions, so each identity has one partition however many shards a writer cut
    (and one shard per partition when they match: an even spread, which murmur2 of four small
    keys is not). Any other key, e.g. an agency as releases before shards keyed messages and
    the fault tests' producers still do, is hashed as Kafka's default does."""

    def partition(
        self, topic: str, key: Any, serialized_key: bytes | None, value: Any,
        serialized_value: bytes | None, cluster: Any,
    ) -> int:  # fmt: skip
        if serialized_key is not None and serialized_key.startswith(SHARD_KEY_PREFIX):
            # The producer has checked the topic is known; its partitions are 0..n-1.
            shard = serialized_key[len(SHARD_KEY_PREFIX) :]
            partitions = cluster.partitions_for_topic(topic)
            if shard.isdigit() and partitions:
                return int(shard) % len(partitions)
        return int(super().partition(topic, key, serialized_key, value, serialized_value, cluster))


def producer(
    bootstrap: str, *, client_id: str, timeout_seconds: float, compression: str = "lz4"
) -> KafkaProducer:
    """An idempotent producer with acks=all, as every writer to the tracker's topics uses: a
    send is confirmed only once every in-sync replica has the message, and retries cannot
    duplicate or reorder within a partition."""
    return KafkaProducer(
        bootstrap_servers=bootstrap.split(","),
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        # Room for several 500-record messages of a partition in one record batch (the
        # default, 16 KiB, is less than one): fewer produce requests, checksums and
        # compression calls. Collector bench: +6% records per CPU-second (bench/RESULTS.md).
        batch_size=1024 * 1024,
        # lz4: a 500-record message shrinks ~4x, which the broker then writes, keeps and
        # serves (bench/RESULTS.md); kafka-python compresses in C (the lz4 package).
        compression_type=None if compression == "none" else compression,
        max_request_size=16 * 1024 * 1024,
        request_timeout_ms=int(timeout_seconds * 1000),
        # Bounded wait for metadata/buffer space, so a dead broker is noticed in seconds.
        max_block_ms=int(timeout_seconds * 1000),
        # Named, so the producer need not probe the broker at start (the collector starts, and
        # spools, while Kafka is down). Kafka 2.x and later speak this protocol.
        api_version=(2, 8, 0),
        client_id=client_id,
        partitioner=ShardPartitioner(),
    )
