"""Where accepted records go: a Sink returns only once they are durable downstream.

The HTTP layer acknowledges a batch only after `deliver` returned, so a 2xx always means
"stored" (Kafka acknowledged with acks=all, or, embedded, written to ClickHouse).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Protocol

from kafka import KafkaProducer
from kafka.errors import KafkaError

from tracker.contract import UsageRecord, encode_batch

log = logging.getLogger(__name__)


class DeliveryFailed(RuntimeError):
    """Downstream did not confirm; the caller must not acknowledge the batch."""


class Sink(Protocol):
    def deliver(self, records: list[UsageRecord]) -> None: ...

    def close(self) -> None: ...


def by_agency(records: list[UsageRecord], per_message: int) -> list[tuple[str, list[UsageRecord]]]:
    """Group records by agency (the topic's key) and cut each group into messages of at most
    `per_message` records: one agency's records stay ordered within its partition."""
    groups: dict[str, list[UsageRecord]] = defaultdict(list)
    for record in records:
        groups[record.agency_id].append(record)
    out: list[tuple[str, list[UsageRecord]]] = []
    for agency, group in groups.items():
        for start in range(0, len(group), per_message):
            out.append((agency, group[start : start + per_message]))
    return out


class KafkaSink:
    """Idempotent producer with acks=all: a send is confirmed only once every in-sync replica
    has the message, and retries cannot duplicate or reorder within a partition."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        records_per_message: int = 500,
        timeout_seconds: float = 30.0,
    ) -> None:
        self.topic = topic
        self.records_per_message = records_per_message
        self.timeout_seconds = timeout_seconds
        self._producer = KafkaProducer(
            bootstrap_servers=bootstrap.split(","),
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            compression_type=None,
            max_request_size=16 * 1024 * 1024,
            request_timeout_ms=int(timeout_seconds * 1000),
            client_id="tracker-collector",
        )

    def deliver(self, records: list[UsageRecord]) -> None:
        futures = [
            self._producer.send(self.topic, key=agency.encode(), value=encode_batch(chunk))
            for agency, chunk in by_agency(records, self.records_per_message)
        ]
        try:
            for future in futures:
                future.get(timeout=self.timeout_seconds)
        except KafkaError as exc:
            raise DeliveryFailed(f"Kafka did not acknowledge: {type(exc).__name__}") from exc

    def close(self) -> None:
        self._producer.close(timeout=10)
