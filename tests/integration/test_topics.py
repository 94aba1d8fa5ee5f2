"""The topics' settings that the delivery guarantees depend on, checked on the real broker:
retention is counted from when the broker took a record, never from the event time a gateway
wrote, so a backfill of year-old records is not deleted on arrival before the pipeline reads it.
"""

from __future__ import annotations

import logging
import time
import uuid

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.structs import TopicPartition

from tracker.topics import TOPIC_CONFIG, ensure_topics

TWO_YEARS_MS = 2 * 365 * 24 * 3600 * 1000


def test_topics_are_created_with_arrival_time_retention(kafka_bootstrap: str) -> None:
    topic = f"usage-{uuid.uuid4().hex[:6]}"
    ensure_topics(kafka_bootstrap, topic, topic + ".dlq")
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        described = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, t) for t in (topic, topic + ".dlq")]
        )
    finally:
        admin.close()
    topics = described["topic"]

    def value(name: str, key: str) -> str:
        entry = topics[name][key]
        return str(entry["value"] if isinstance(entry, dict) else entry)

    for name in (topic, topic + ".dlq"):
        assert value(name, "message.timestamp.type") == "LogAppendTime"
        assert value(name, "cleanup.policy") == "delete"
    assert int(value(topic, "retention.ms")) == 7 * 24 * 3600 * 1000
    assert int(value(topic + ".dlq", "retention.ms")) == 365 * 24 * 3600 * 1000


def test_a_backfilled_record_outlives_retention_measured_from_its_event_time(
    kafka_bootstrap: str,
) -> None:
    """Two topics with 90 s retention: one with the tracker's settings, and a control that keeps
    the producer's timestamp (CreateTime, Kafka's default). A record stamped with an event time
    two years old goes to both. The broker deletes the control's copy at its next retention
    check (every second in tests, the first one 30 s after the broker starts); the tracker's
    topic keeps it, stamped with its arrival."""
    suffix = uuid.uuid4().hex[:6]
    ours, control = f"retention-ours-{suffix}", f"retention-control-{suffix}"
    short = {"retention.ms": "90000", "segment.ms": "1000"}
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        admin.create_topics([
            NewTopic(ours, 1, 1, topic_configs={**TOPIC_CONFIG, **short}),
            NewTopic(control, 1, 1, topic_configs={
                **TOPIC_CONFIG, **short, "message.timestamp.type": "CreateTime",
            }),
        ])  # fmt: skip
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    event_time = int(time.time() * 1000) - TWO_YEARS_MS
    sent_at = time.time() * 1000
    for topic in (ours, control):
        producer.send(topic, value=b'[{"record_id": "late"}]', timestamp_ms=event_time).get(30)
    producer.close()

    probe = KafkaConsumer(bootstrap_servers=kafka_bootstrap)
    try:
        deadline = time.monotonic() + 60
        while (
            probe.beginning_offsets([TopicPartition(control, 0)])[TopicPartition(control, 0)] == 0
        ):
            assert time.monotonic() < deadline, "the control record was never deleted"
            time.sleep(0.5)
        time.sleep(3)  # several more retention checks
        assert probe.beginning_offsets([TopicPartition(ours, 0)])[TopicPartition(ours, 0)] == 0
    finally:
        probe.close()
    reader = KafkaConsumer(ours, bootstrap_servers=kafka_bootstrap,
                           auto_offset_reset="earliest", consumer_timeout_ms=5000)  # fmt: skip
    messages = list(reader)
    reader.close()
    assert [m.value for m in messages] == [b'[{"record_id": "late"}]']
    assert abs(messages[0].timestamp - sent_at) < 60_000  # the broker's clock, not the event's


def test_partitions_are_added_up_to_the_shards_and_more_are_named(
    kafka_bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Records are cut into TRACKER_KAFKA_PARTITIONS shards, one per partition: a topic with
    fewer partitions (made by hand, or by an earlier setting) gets the missing ones; one with
    more is named in a warning, as those partitions get no new records."""
    topic = f"usage-{uuid.uuid4().hex[:6]}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        admin.create_topics([NewTopic(topic, 2, 1, topic_configs=TOPIC_CONFIG)])

        def count() -> int:
            (described,) = admin.describe_topics([topic])
            return len(described["partitions"])

        ensure_topics(kafka_bootstrap, topic, topic + ".dlq", partitions=6)
        assert count() == 6
        ensure_topics(kafka_bootstrap, topic, topic + ".dlq", partitions=6)  # safe to repeat
        assert count() == 6
        with caplog.at_level(logging.WARNING, logger="tracker.topics"):
            ensure_topics(kafka_bootstrap, topic, topic + ".dlq", partitions=4)
        assert count() == 6
        assert "has 6 partitions but records are cut into 4 shards" in caplog.text
        assert "2 partitions get no new records" in caplog.text
    finally:
        admin.close()
