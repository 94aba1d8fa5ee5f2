"""Where accepted records go: a Sink returns only once they are durable downstream.

The HTTP layer acknowledges a batch only after `deliver` returned, so a 2xx always means
"stored" (Kafka acknowledged with acks=all, or, embedded, written to ClickHouse).
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

from kafka.errors import KafkaError

from collector.spool import Spool, SpoolFull
from tracker.contract import UsageRecord, by_shard, encode_batch, shard_key
from tracker.topics import producer

log = logging.getLogger(__name__)


class DeliveryFailed(RuntimeError):
    """Downstream did not confirm; the caller must not acknowledge the batch."""


class Sink(Protocol):
    def deliver(self, records: list[UsageRecord]) -> None: ...

    def close(self) -> None: ...


class KafkaSink:
    """Idempotent producer with acks=all: a send is confirmed only once every in-sync replica
    has the message, and retries cannot duplicate or reorder within a partition."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        records_per_message: int = 500,
        shards: int = 4,
        timeout_seconds: float = 10.0,
        compression: str = "lz4",
    ) -> None:
        self.topic = topic
        self.records_per_message = records_per_message
        self.shards = shards
        self.timeout_seconds = timeout_seconds
        self._producer = producer(
            bootstrap, client_id="tracker-collector", timeout_seconds=timeout_seconds,
            compression=compression,
        )  # fmt: skip

    def messages(self, records: list[UsageRecord]) -> list[tuple[bytes, bytes]]:
        """(key, value) pairs, keyed by the shard of their records' identity: the partitioner
        places them then, so a spooled message goes where it would have gone."""
        return [
            (shard_key(shard), encode_batch(chunk))
            for shard, chunk in by_shard(records, self.shards, self.records_per_message)
        ]

    def send(self, messages: list[tuple[bytes, bytes]]) -> None:
        """Send and wait for every acknowledgement; DeliveryFailed if any is missing."""
        try:
            futures = [self._producer.send(self.topic, key=k, value=v) for k, v in messages]
            for future in futures:
                future.get(timeout=self.timeout_seconds)
        except KafkaError as exc:
            raise DeliveryFailed(f"Kafka did not acknowledge: {type(exc).__name__}") from exc

    def deliver(self, records: list[UsageRecord]) -> None:
        self.send(self.messages(records))

    def close(self) -> None:
        self._producer.close(timeout=10)


class SpoolingSink:
    """Kafka first; when Kafka does not acknowledge, the bounded on-disk spool (fsync'ed), so a
    2xx still means stored. A drainer thread re-sends the spool, in order, once Kafka is back."""

    def __init__(self, kafka: KafkaSink, spool: Spool, *, retry_seconds: float = 2.0) -> None:
        self.kafka = kafka
        self.spool = spool
        self.retry_seconds = retry_seconds
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._drainer = threading.Thread(target=self._drain_loop, name="spool-drain", daemon=True)
        self._drainer.start()

    def deliver(self, records: list[UsageRecord]) -> None:
        messages = self.kafka.messages(records)
        try:
            self.kafka.send(messages)
        except DeliveryFailed as exc:
            try:
                self.spool.append(messages)
            except SpoolFull as full:
                raise DeliveryFailed(f"{exc}; {full}") from full
            except OSError as disk:  # e.g. the disk is full: stored nowhere, so refused (503)
                raise DeliveryFailed(f"{exc}; spool write failed: {disk}") from disk
            log.warning("Kafka unavailable (%s): %d message(s) spooled", exc, len(messages))
            self._wake.set()

    def drain_once(self, chunk: int = 200) -> int:
        """Send spooled messages in order; returns how many reached Kafka."""
        sent = 0
        batch: list[tuple[bytes, bytes]] = []
        mark: tuple[int, int] | None = None
        for segment, offset, key, value in self.spool.entries():
            batch.append((key, value))
            mark = (segment, offset)
            if len(batch) >= chunk:
                self.kafka.send(batch)
                self.spool.acknowledge(*mark)
                sent += len(batch)
                batch = []
        if batch and mark is not None:
            self.kafka.send(batch)
            self.spool.acknowledge(*mark)
            sent += len(batch)
        return sent

    def _drain_loop(self) -> None:
        while not self._stop.is_set():
            if not self.spool.empty():
                try:
                    sent = self.drain_once()
                    if sent:
                        log.info("spool drained %d message(s) to Kafka", sent)
                except DeliveryFailed:
                    pass  # still down: try again after the pause
            self._wake.wait(self.retry_seconds)
            self._wake.clear()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._drainer.join(timeout=30)
        self.kafka.close()
        self.spool.close()
