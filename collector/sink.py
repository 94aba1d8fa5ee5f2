"""Where accepted records go: a Sink returns only once they are durable downstream.

The HTTP layer acknowledges a batch only after `deliver` returned, so a 2xx always means
"stored" (Kafka acknowledged with acks=all, or, embedded, written to ClickHouse).
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

import orjson
from kafka import KafkaProducer
from kafka.errors import (
    InvalidRecordError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
)

from collector.spool import Spool, SpoolFull
from tracker.contract import UsageRecord, by_shard, encode_batch, shard_key
from tracker.topics import producer

log = logging.getLogger(__name__)

# Below the broker's default limit on a message (message.max.bytes, 1 MiB), compressed or not:
# a message over it is refused, and kafka-python's idempotent producer then fails every later
# send (found in review: 500 records with long non-ASCII names, ~1.9 MB, silenced a collector).
# A record is at most a few KB (the contract bounds every field), so any batch can be cut so.
MAX_MESSAGE_BYTES = 768 * 1024

# Errors by which Kafka refuses one message for what it is, so that no retry can succeed: over
# the topic's max.message.bytes (e.g. lowered after the message was spooled), or failing the
# broker's validation. Any other error, retriable or not (broker down, timeouts, NotLeader, an
# authorization lost), says nothing against the message and is retried.
REFUSED_FOR_GOOD: tuple[type[KafkaError], ...] = (
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    InvalidRecordError,
)
# Of those, the refusals for size: the same records cut into smaller messages can pass.
TOO_LARGE: tuple[type[KafkaError], ...] = (MessageSizeTooLargeError, RecordListTooLargeError)


class DeliveryFailed(RuntimeError):
    """Downstream did not confirm; the caller must not acknowledge the batch. `refused` names
    the error (its name and text) when Kafka refused a message for good (REFUSED_FOR_GOOD),
    else it is None; `too_large` says the refusal was for the message's size (TOO_LARGE)."""

    def __init__(
        self, message: str, *, refused: str | None = None, too_large: bool = False
    ) -> None:
        super().__init__(message)
        self.refused = refused
        self.too_large = too_large


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
        self._bootstrap, self._compression = bootstrap, compression
        self._producer = self._new_producer()
        self._renewing = threading.Lock()

    def _new_producer(self) -> KafkaProducer:
        return producer(
            self._bootstrap, client_id="tracker-collector", timeout_seconds=self.timeout_seconds,
            compression=self._compression,
        )  # fmt: skip

    def messages(self, records: list[UsageRecord]) -> list[tuple[bytes, bytes]]:
        """(key, value) pairs, keyed by the shard of their records' identity: the partitioner
        places them then, so a spooled message goes where it would have gone. Each value is
        at most MAX_MESSAGE_BYTES (unless one record alone is more)."""
        return [
            (shard_key(shard), value)
            for shard, chunk in by_shard(records, self.shards, self.records_per_message)
            for value in _encoded_within(chunk, MAX_MESSAGE_BYTES)
        ]

    def send(self, messages: list[tuple[bytes, bytes]]) -> None:
        """Send and wait for every acknowledgement; DeliveryFailed if any is missing."""
        sender = self._producer
        try:
            futures = [sender.send(self.topic, key=k, value=v) for k, v in messages]
            for future in futures:
                future.get(timeout=self.timeout_seconds)
        except KafkaError as exc:
            if not exc.retriable:
                # The idempotent producer stays failed after an error it cannot retry: every
                # later send would fail too, with the broker up. A new one starts clean.
                self._renew(sender, exc)
            refused = _describe(exc) if isinstance(exc, REFUSED_FOR_GOOD) else None
            raise DeliveryFailed(
                f"Kafka did not acknowledge: {type(exc).__name__}",
                refused=refused, too_large=isinstance(exc, TOO_LARGE),
            ) from exc  # fmt: skip

    def _renew(self, failed: KafkaProducer, exc: KafkaError) -> None:
        with self._renewing:
            if self._producer is not failed:  # another thread renewed it already
                return
            log.error("Kafka producer failed (%s: %s); starting a new one", type(exc).__name__, exc)
            self._producer = self._new_producer()
        try:
            failed.close(timeout=0)
        except KafkaError:
            # kafka-python 3 flushes before it closes: with sends of the failed producer still
            # pending (e.g. in flight beside a refused message), that raises KafkaTimeoutError
            # and leaves its I/O thread running. Stopped so, its pending sends fail.
            sender = getattr(failed, "_sender", None)
            if sender is not None:
                sender.force_close()

    def deliver(self, records: list[UsageRecord]) -> None:
        self.send(self.messages(records))

    def close(self) -> None:
        self._producer.close(timeout=10)


def _encoded_within(chunk: list[UsageRecord], limit: int) -> list[bytes]:
    """`chunk` encoded as one message, or cut in halves until each message is within `limit`
    (a single record goes alone whatever its size)."""
    value = encode_batch(chunk)
    if len(value) <= limit or len(chunk) == 1:
        return [value]
    half = len(chunk) // 2
    return _encoded_within(chunk[:half], limit) + _encoded_within(chunk[half:], limit)


class SpoolingSink:
    """Kafka first; when Kafka does not acknowledge, the bounded on-disk spool (fsync'ed), so a
    2xx still means stored. A drainer thread re-sends the spool, in order, once Kafka is back;
    until the spool is drained, requests are spooled at once (`deliver`).

    A spooled message Kafka refuses for its size (TOO_LARGE, e.g. over a topic limit lowered
    since it was spooled) is cut in halves, and each half sent, in order, cut again while it
    is refused so: the broker's limit is not known here, and halving finds it in a few sends.
    Parts already acknowledged when a later one meets a passing failure are sent again with
    the whole message later, which the pipeline lands once (record ids), as after any retry.
    A message that still cannot go (one record over the limit, or refused as invalid) would
    hold up every message behind it for ever: the drain moves it, byte for byte with its
    reason, to the spool's quarantine (Spool.quarantine), logs an ERROR and goes on."""

    def __init__(self, kafka: KafkaSink, spool: Spool, *, retry_seconds: float = 2.0) -> None:
        self.kafka = kafka
        self.spool = spool
        self.retry_seconds = retry_seconds
        # While the spool holds messages, requests go straight to it (`deliver`). Found: each
        # request of an outage first waited the Kafka timeout (10 s by default) before it was
        # spooled, longer than many gateways wait for an answer. A spool left by an earlier
        # run starts this way too: what comes now must not overtake it.
        self._spooling = not spool.empty()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._drainer = threading.Thread(target=self._drain_loop, name="spool-drain", daemon=True)
        self._drainer.start()

    @property
    def spooling(self) -> bool:
        """Whether requests go to the spool (Kafka failed, and the spool is not drained yet)."""
        return self._spooling

    def deliver(self, records: list[UsageRecord]) -> None:
        messages = self.kafka.messages(records)
        if self._spooling:
            # Kafka failed and its messages still wait: it is likely away still, and the
            # drainer finds out for all (it sends these after them, in order, when it is back).
            self._append(messages, "Kafka unavailable, earlier messages still spooled")
            return
        try:
            self.kafka.send(messages)
        except DeliveryFailed as exc:
            self._append(messages, str(exc))
            if not self._spooling:
                self._spooling = True
                log.warning("Kafka unavailable (%s): accepting into the spool until it is back "
                            "and the spool is drained", exc)  # fmt: skip
                self._wake.set()

    def _append(self, messages: list[tuple[bytes, bytes]], why: str) -> None:
        try:
            self.spool.append(messages)
        except SpoolFull as full:
            raise DeliveryFailed(f"{why}; {full}") from full
        except OSError as disk:  # e.g. the disk is full: stored nowhere, so refused (503)
            raise DeliveryFailed(f"{why}; spool write failed: {disk}") from disk

    def drain_once(self, chunk: int = 200) -> int:
        """Send spooled messages in order; returns how many reached Kafka. Raises
        DeliveryFailed, the read position at the first message not yet sent, while Kafka does
        not take it for a reason other than refusing it for good."""
        sent = 0
        batch: list[tuple[int, int, bytes, bytes]] = []
        for entry in self.spool.entries():
            batch.append(entry)
            if len(batch) >= chunk:
                sent += self._send_spooled(batch)
                batch = []
        if batch:
            sent += self._send_spooled(batch)
        return sent

    def _send_spooled(self, batch: list[tuple[int, int, bytes, bytes]]) -> int:
        try:
            self.kafka.send([(key, value) for _, _, key, value in batch])
        except DeliveryFailed:
            if len(batch) == 1:
                return self._send_alone(batch[0])
            # Which message failed, and why, is known only of a message sent alone: a refusal
            # of one can fail the others in flight with it. One by one, then, from the first;
            # those of the batch that Kafka took already are sent again (the pipeline lands a
            # record once however often it is read, as after any retried batch).
            return sum(self._send_alone(entry) for entry in batch)
        self.spool.acknowledge(*batch[-1][:2])
        return len(batch)

    def _send_alone(self, entry: tuple[int, int, bytes, bytes]) -> int:
        """1 once Kafka took the message (whole or in parts), 0 once it is quarantined;
        DeliveryFailed otherwise."""
        segment, offset, key, value = entry
        parts, refused = send_in_parts(self.kafka, key, value)
        if refused is None:
            if parts > 1:
                log.warning(
                    "spooled message of %s records, %d bytes, over the topic's size limit: "
                    "delivered in %d parts", _record_count(value), len(value), parts,
                )  # fmt: skip
        else:
            records = _record_count(value)
            kept = self.spool.quarantine(
                segment, offset, key, value,
                {"reason": refused, "records": records, "topic": self.kafka.topic},
            )  # fmt: skip
            log.error(
                "spooled message refused by Kafka for good (%s): %s records, %d bytes, moved to "
                "%s with its reason; the drain goes on",
                refused, "?" if records is None else records, len(value), kept,
            )  # fmt: skip
            return 0
        self.spool.acknowledge(segment, offset)
        return 1

    def _drain_loop(self) -> None:
        while not self._stop.is_set():
            if not self.spool.empty():
                try:
                    sent = self.drain_once()
                    if sent:
                        log.info("spool drained %d message(s) to Kafka", sent)
                except DeliveryFailed:
                    pass  # still down: try again after the pause
                except Exception:  # e.g. no room for a quarantine: the spool keeps the message
                    log.exception("spool drain failed; trying again after the pause")
            if self._spooling and self.spool.empty():
                # Requests go to Kafka again. One spooled between the check and this line is
                # sent by the next round, after messages sent directly: order across requests
                # does not matter (the pipeline lands each record once, by its id).
                self._spooling = False
                log.info("spool empty: sending to Kafka directly again")
                continue  # no pause: a message spooled meanwhile goes at once
            self._wake.wait(self.retry_seconds)
            self._wake.clear()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._drainer.join(timeout=30)
        self.kafka.close()
        self.spool.close()


def send_in_parts(kafka: KafkaSink, key: bytes, value: bytes) -> tuple[int, str | None]:
    """Send `value`, cut in halves (recursively, in order) while Kafka refuses it for its size;
    returns how many parts Kafka took, and None once all were, else why a part was refused for
    good. DeliveryFailed when a part was not taken for another reason: the caller keeps the
    message, whole (parts taken before are sent again with it later, and land once)."""
    try:
        kafka.send([(key, value)])
    except DeliveryFailed as exc:
        if exc.refused is None:
            raise  # not the message's fault: it and all behind it wait, in order
        halves = _halves(value) if exc.too_large else None
        if halves is None:
            return 0, exc.refused
        taken = 0
        for half in halves:
            parts, refused = send_in_parts(kafka, key, half)
            taken += parts
            if refused is not None:
                return taken, refused
        return taken, None
    return 1, None


def _describe(exc: KafkaError) -> str:
    """The error's name and text (a broker's error reads "[Error 10] Name: description")."""
    text, name = str(exc), type(exc).__name__
    return text if name in text else f"{name}: {text}"


def _halves(value: bytes) -> list[bytes] | None:
    """A message's records (a JSON array) as two messages, None if it holds fewer than two."""
    try:
        decoded = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(decoded, list) or len(decoded) < 2:
        return None
    half = len(decoded) // 2
    return [orjson.dumps(decoded[:half]), orjson.dumps(decoded[half:])]


def _record_count(value: bytes) -> int | None:
    """How many records a message holds (a JSON array of them), None if it holds no array."""
    try:
        decoded = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    return len(decoded) if isinstance(decoded, list) else None
