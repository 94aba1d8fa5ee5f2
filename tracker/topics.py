"""Kafka topics the tracker owns, created with the settings its guarantees depend on."""

from __future__ import annotations

import logging
import time

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaTimeoutError, TopicAlreadyExistsError

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
    bootstrap: str, topic: str, dlq_topic: str, *, partitions: int = 4, replication: int = 1
) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","), client_id="tracker-admin")
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
        deadline = time.monotonic() + 30
        while not _has_partitions(admin, topic):
            if time.monotonic() > deadline:
                raise KafkaTimeoutError(f"topic {topic!r} has no partitions after 30 s")
            time.sleep(0.2)
    finally:
        admin.close()


def _has_partitions(admin: KafkaAdminClient, topic: str) -> bool:
    for described in admin.describe_topics([topic]):
        partitions = described.get("partitions") or []
        if described.get("name") == topic and partitions and not described.get("error_code"):
            return all(p.get("leader_id", -1) >= 0 for p in partitions)
    return False
